//! Query root: each field asks [`Operations`], which holds the visibility rules.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, ID, Object, Result};

use super::types::{AuditTrail, LoadForecast, Order, OrderStatus, User};
use super::{caller, loaders, operations};
use crate::auth::{Forward, MinVersions};
use crate::autoscale::Autoscale;
use crate::error::ApiError;
use crate::operations::{Page, PageRequest, parse_id};

pub struct QueryRoot;

/// A page costs its size times what one item asks for, so a query's complexity bounds the
/// rows it can make the gateway load.
pub(super) fn page_complexity(first: i32, child_complexity: usize) -> usize {
    usize::try_from(first.max(1))
        .unwrap_or(1)
        .saturating_mul(child_complexity)
}

fn connection<R, T: async_graphql::OutputType>(
    page: Page<R>,
    node: impl Fn(R) -> T,
) -> Connection<String, T> {
    let mut connection = Connection::new(page.has_previous, page.has_next);
    connection.edges.extend(
        page.items
            .into_iter()
            .map(|(cursor, row)| Edge::new(cursor, node(row))),
    );
    connection
}

#[Object]
impl QueryRoot {
    /// Admins: an aggregate's (`order` or `user`) history from the event store, each event
    /// with its actor and correlation id and the state after it; with `asOfVersion` or
    /// `asOf`, only up to that point (time travel).
    async fn audit_trail(
        &self,
        ctx: &Context<'_>,
        aggregate_type: String,
        id: ID,
        as_of_version: Option<i64>,
        as_of: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<AuditTrail> {
        caller(ctx).await?;
        let trail = operations(ctx)?
            .audit_trail(
                ctx.data::<Forward>()?,
                &aggregate_type,
                id.0,
                as_of_version,
                as_of,
            )
            .await
            .map_err(ApiError::graphql)?;
        Ok(trail.into())
    }

    /// Admins: the predictor's latest forecast of every service and its `decisions` most
    /// recent scaling decisions (0 to 100, newest first); null before its first forecast.
    async fn load_forecast(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] decisions: i32,
    ) -> Result<Option<LoadForecast>> {
        let caller = caller(ctx).await?;
        if caller.role != tillstream_events::Role::Admin {
            return Err(
                ApiError::Forbidden("only admins may read the load forecast".to_owned()).graphql(),
            );
        }
        let keep = usize::try_from(decisions)
            .ok()
            .filter(|n| *n <= 100)
            .ok_or_else(|| ApiError::field("decisions", "must be 0 to 100").graphql())?;
        let view = ctx
            .data::<Autoscale>()?
            .latest(keep)
            .await
            .map_err(ApiError::graphql)?;
        Ok(view.map(LoadForecast::from))
    }

    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        let caller = caller(ctx).await?;
        let user = operations(ctx)?
            .me(&caller)
            .await
            .map_err(ApiError::graphql)?;
        Ok(user.map(User::from))
    }

    /// A user by id, or null when there is none. Customers may read only themselves.
    /// With `minVersion` (a command's answer) or an `x-min-version: user:<id>:<version>`
    /// header, waits up to 2 s for the read model to have it.
    async fn user(
        &self,
        ctx: &Context<'_>,
        id: ID,
        min_version: Option<i64>,
    ) -> Result<Option<User>> {
        let caller = caller(ctx).await?;
        let id = parse_id(&id, "id").map_err(ApiError::graphql)?;
        let min_version = ctx
            .data::<MinVersions>()
            .map_or(min_version, |hints| hints.for_read("user", id, min_version));
        let user = operations(ctx)?
            .user(&caller, id, min_version)
            .await
            .map_err(ApiError::graphql)?;
        Ok(user.map(User::from))
    }

    /// An order by id, with its items, or null when there is none (or it is another
    /// customer's). With `minVersion` (a command's answer) or an
    /// `x-min-version: order:<id>:<version>` header, waits up to 2 s for the read model to
    /// have it.
    async fn order(
        &self,
        ctx: &Context<'_>,
        id: ID,
        min_version: Option<i64>,
    ) -> Result<Option<Order>> {
        let caller = caller(ctx).await?;
        let id = parse_id(&id, "id").map_err(ApiError::graphql)?;
        let min_version = ctx.data::<MinVersions>().map_or(min_version, |hints| {
            hints.for_read("order", id, min_version)
        });
        let order = operations(ctx)?
            .order(&caller, id, min_version)
            .await
            .map_err(ApiError::graphql)?;
        Ok(order.map(Order::from))
    }

    /// Every user, newest first, as a Relay connection (admins only).
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn users(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<Connection<String, User>> {
        let caller = caller(ctx).await?;
        let page = operations(ctx)?
            .users(
                &caller,
                PageRequest {
                    first: Some(first),
                    after,
                },
            )
            .await
            .map_err(ApiError::graphql)?;
        let connection = connection(page, User::from);
        let users: Vec<User> = connection.edges.iter().map(|e| e.node.clone()).collect();
        loaders::prime_user_page(ctx, ctx.look_ahead().field("edges").field("node"), &users)
            .await?;
        Ok(connection)
    }

    /// Orders newest first, optionally of one user and in one state, as a Relay
    /// connection. Customers see only their own.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        user_id: Option<ID>,
        status: Option<OrderStatus>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<Connection<String, Order>> {
        let caller = caller(ctx).await?;
        let user_id = user_id
            .as_ref()
            .map(|id| parse_id(id, "userId"))
            .transpose()
            .map_err(ApiError::graphql)?;
        let page = operations(ctx)?
            .orders(
                &caller,
                user_id,
                status.map(OrderStatus::state),
                PageRequest {
                    first: Some(first),
                    after,
                },
            )
            .await
            .map_err(ApiError::graphql)?;
        let connection = connection(page, Order::from);
        let orders: Vec<Order> = connection.edges.iter().map(|e| e.node.clone()).collect();
        loaders::prime_order_page(ctx, ctx.look_ahead().field("edges").field("node"), &orders)
            .await?;
        Ok(connection)
    }
}
