//! Batched loading of nested fields (`Order.user`, `User.orders`, `Order.history`), so a
//! page of orders costs a constant number of SQL statements instead of one per order.
//!
//! A DataLoader batches what its callers ask for within a short delay; how many callers
//! make it into one batch depends on timing. So the resolvers of a page also *prime* the
//! loaders ([`prime_order_page`], [`prime_user_page`]): looking ahead at the selection,
//! they load what the page's nested fields will ask for in one batch each, and the nested
//! resolvers then find it in the loaders' cache. Deeper nesting (the orders of the user of
//! an order of a user...) is batched by the loaders' delay alone.
//!
//! The loaders are made per request ([`Loaders::attach`]): nothing is cached across
//! requests, so a batch never serves one caller what was loaded for another, and every
//! answer is as fresh as the request. Visibility needs no check here: a nested user is the
//! owner of an order the caller could already see, and a user's orders are visible to
//! whoever may see that user.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use async_graphql::{Context, Lookahead};
use tillstream_projections::queries::Reads;
use uuid::Uuid;

use super::types::{Order, OrderEvent, User};
use crate::error::ApiError;

/// A failed batch, shared by every field that waited on it.
pub type LoadError = Arc<ApiError>;

fn failed(error: sqlx::Error) -> LoadError {
    Arc::new(ApiError::reads(error))
}

pub struct UserLoader(Reads);

impl Loader<Uuid> for UserLoader {
    type Value = User;
    type Error = LoadError;

    async fn load(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, User>, LoadError> {
        let rows = self.0.users_by_ids(ids).await.map_err(failed)?;
        Ok(rows
            .into_iter()
            .map(|row| (row.id, User::from(row)))
            .collect())
    }
}

/// The first `first` orders of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecentOrders {
    pub user_id: Uuid,
    pub first: i64,
}

pub struct RecentOrdersLoader(Reads);

impl Loader<RecentOrders> for RecentOrdersLoader {
    /// Up to `first + 1` orders, newest first (one more than asked, to tell whether there
    /// is a next page).
    type Value = Vec<Order>;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[RecentOrders],
    ) -> Result<HashMap<RecentOrders, Vec<Order>>, LoadError> {
        // One statement pair per distinct page size (one, in practice).
        let mut by_size: HashMap<i64, Vec<Uuid>> = HashMap::new();
        for key in keys {
            by_size.entry(key.first).or_default().push(key.user_id);
        }
        let mut pages = HashMap::new();
        for (first, users) in by_size {
            for key in users.iter().map(|&user_id| RecentOrders { user_id, first }) {
                pages.insert(key, Vec::new());
            }
            let rows = self
                .0
                .recent_orders_of(&users, first + 1)
                .await
                .map_err(failed)?;
            for row in rows {
                let key = RecentOrders {
                    user_id: row.order.user_id,
                    first,
                };
                pages
                    .entry(key)
                    .or_insert_with(Vec::new)
                    .push(Order::from(row));
            }
        }
        Ok(pages)
    }
}

pub struct HistoryLoader(Reads);

impl Loader<Uuid> for HistoryLoader {
    type Value = Vec<OrderEvent>;
    type Error = LoadError;

    async fn load(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Vec<OrderEvent>>, LoadError> {
        let mut histories: HashMap<Uuid, Vec<OrderEvent>> =
            ids.iter().map(|&id| (id, Vec::new())).collect();
        for row in self.0.order_histories(ids).await.map_err(failed)? {
            histories
                .entry(row.order_id)
                .or_default()
                .push(OrderEvent::from(row));
        }
        Ok(histories)
    }
}

type Cached<L> = DataLoader<L, HashMapCache>;
pub type Users = Cached<UserLoader>;
pub type RecentOrdersOf = Cached<RecentOrdersLoader>;
pub type Histories = Cached<HistoryLoader>;

/// The loaders of one request.
pub struct Loaders;

impl Loaders {
    /// `request` with fresh loaders over `reads` in its data.
    pub fn attach(request: async_graphql::Request, reads: &Reads) -> async_graphql::Request {
        let cache = HashMapCache::default;
        request
            .data(DataLoader::with_cache(
                UserLoader(reads.clone()),
                tokio::spawn,
                cache(),
            ))
            .data(DataLoader::with_cache(
                RecentOrdersLoader(reads.clone()),
                tokio::spawn,
                cache(),
            ))
            .data(DataLoader::with_cache(
                HistoryLoader(reads.clone()),
                tokio::spawn,
                cache(),
            ))
    }
}

/// The valid page sizes `orders(first:)` is asked with under `field` (each alias may
/// differ); invalid ones are left for the resolver to refuse.
fn page_sizes(field: &Lookahead<'_>) -> Vec<i64> {
    let mut sizes: Vec<i64> = field
        .selection_fields()
        .iter()
        .filter_map(|selection| {
            let arguments = selection.arguments().ok()?;
            let first = match arguments.iter().find(|(name, _)| name.as_str() == "first") {
                None => None,
                Some((_, async_graphql::Value::Number(n))) => {
                    Some(i32::try_from(n.as_i64()?).ok()?)
                }
                Some(_) => return None,
            };
            crate::operations::page_size(first).ok()
        })
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// Loads the first pages of `users`' orders for every `orders(first:)` under `field`.
async fn prime_recent_orders(
    ctx: &Context<'_>,
    field: &Lookahead<'_>,
    users: &[Uuid],
) -> async_graphql::Result<()> {
    if !field.exists() || users.is_empty() {
        return Ok(());
    }
    let loader = ctx.data::<RecentOrdersOf>()?;
    for first in page_sizes(field) {
        loader
            .load_many(users.iter().map(|&user_id| RecentOrders { user_id, first }))
            .await
            .map_err(load_error)?;
    }
    Ok(())
}

/// Primes the loaders for a page of orders whose nodes are selected as `node`.
pub async fn prime_order_page(
    ctx: &Context<'_>,
    node: Lookahead<'_>,
    orders: &[Order],
) -> async_graphql::Result<()> {
    if orders.is_empty() {
        return Ok(());
    }
    let user = node.field("user");
    if user.exists() {
        let mut owners: Vec<Uuid> = orders.iter().map(|o| o.user_key).collect();
        owners.sort_unstable();
        owners.dedup();
        ctx.data::<Users>()?
            .load_many(owners.iter().copied())
            .await
            .map_err(load_error)?;
        prime_recent_orders(ctx, &user.field("orders"), &owners).await?;
    }
    if node.field("history").exists() {
        ctx.data::<Histories>()?
            .load_many(orders.iter().map(|o| o.key))
            .await
            .map_err(load_error)?;
    }
    Ok(())
}

/// Primes the loaders for a page of users whose nodes are selected as `node`.
pub async fn prime_user_page(
    ctx: &Context<'_>,
    node: Lookahead<'_>,
    users: &[User],
) -> async_graphql::Result<()> {
    let keys: Vec<Uuid> = users.iter().map(|u| u.key).collect();
    prime_recent_orders(ctx, &node.field("orders"), &keys).await
}

/// A loader failure as a GraphQL error with its code.
pub fn load_error(error: LoadError) -> async_graphql::Error {
    async_graphql::ErrorExtensions::extend(error.as_ref())
}
