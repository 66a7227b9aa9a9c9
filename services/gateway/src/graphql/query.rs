//! Query root.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, ID, Object, Result};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::time::Duration;

use uuid::Uuid;

use super::types::{Order, User};
use super::{coded, unavailable};
use crate::auth;
use tillstream_events::Role;
use tillstream_projections::queries::Reads;

/// Largest page `orders(first:)` returns.
const MAX_PAGE: i32 = 100;
const ORDER_CURSOR: &str = "order:";
const USER_CURSOR: &str = "user:";

pub struct QueryRoot;

fn parse_id(id: &ID, what: &str) -> Result<Uuid> {
    Uuid::parse_str(id.as_str())
        .map_err(|_| coded(format!("`{what}` must be a UUID"), "BAD_USER_INPUT"))
}

fn encode_cursor(kind: &str, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}{id}"))
}

fn decode_cursor(cursor: &str, kind: &str) -> Result<Uuid> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|s| s.strip_prefix(kind).and_then(|id| Uuid::parse_str(id).ok()))
        .ok_or_else(|| {
            coded(
                "`after` is not a cursor this API returned",
                "BAD_USER_INPUT",
            )
        })
}

/// Longest a query waits for its `minVersion` to reach the read model.
const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(2);

/// Reads with `load` until the row has at least `min_version` (when asked), for at most
/// [`READ_YOUR_WRITES_WAIT`]; then says plainly that the write is not visible yet.
async fn read_your_write<T, F, Fut>(
    min_version: Option<i64>,
    load: F,
    version: impl Fn(&T) -> i64,
) -> Result<Option<T>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, sqlx::Error>>,
{
    let deadline = tokio::time::Instant::now() + READ_YOUR_WRITES_WAIT;
    let mut pause = Duration::from_millis(5);
    loop {
        let row = load().await.map_err(unavailable)?;
        let Some(wanted) = min_version else {
            return Ok(row);
        };
        if row.as_ref().is_some_and(|r| version(r) >= wanted) {
            return Ok(row);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(coded(
                format!("version {wanted} is not in the read model yet; retry shortly"),
                "UNAVAILABLE",
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

#[Object]
impl QueryRoot {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        let caller = auth::require(ctx).await?;
        let Ok(id) = Uuid::parse_str(&caller.user_id) else {
            return Ok(None); // a service token has no user
        };
        let reads = ctx.data::<Reads>()?;
        Ok(reads.user(id).await.map_err(unavailable)?.map(User::from))
    }

    /// A user by id, or null when there is none. Customers may read only themselves.
    /// With `minVersion` (a command's answer), waits up to 2 s for the read model to have it.
    async fn user(
        &self,
        ctx: &Context<'_>,
        id: ID,
        min_version: Option<i64>,
    ) -> Result<Option<User>> {
        let caller = auth::require(ctx).await?;
        let id = parse_id(&id, "id")?;
        if !auth::may_see(&caller, id) {
            return Err(coded("customers may read only themselves", "FORBIDDEN"));
        }
        let reads = ctx.data::<Reads>()?;
        let user = read_your_write(min_version, || reads.user(id), |u| u.version).await?;
        Ok(user.map(User::from))
    }

    /// An order by id, with its items, or null when there is none (or it is another
    /// customer's). With `minVersion` (a command's answer), waits up to 2 s for the read
    /// model to have it.
    async fn order(
        &self,
        ctx: &Context<'_>,
        id: ID,
        min_version: Option<i64>,
    ) -> Result<Option<Order>> {
        let caller = auth::require(ctx).await?;
        let id = parse_id(&id, "id")?;
        let reads = ctx.data::<Reads>()?;
        let order = read_your_write(min_version, || reads.order(id), |o| o.order.version).await?;
        Ok(order
            .filter(|o| auth::may_see(&caller, o.order.user_id))
            .map(Order::from))
    }

    /// Every user, newest first, as a Relay connection (admins only).
    async fn users(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<Connection<String, User>> {
        let caller = auth::require(ctx).await?;
        if caller.role != Role::Admin {
            return Err(coded("only admins may list users", "FORBIDDEN"));
        }
        if !(1..=MAX_PAGE).contains(&first) {
            return Err(coded(
                format!("`first` must be 1 to {MAX_PAGE}"),
                "BAD_USER_INPUT",
            ));
        }
        let before = after
            .as_deref()
            .map(|c| decode_cursor(c, USER_CURSOR))
            .transpose()?;
        let mut rows = ctx
            .data::<Reads>()?
            .users(before, i64::from(first) + 1)
            .await
            .map_err(unavailable)?;
        let has_next = rows.len() > first as usize;
        rows.truncate(first as usize);
        let mut connection = Connection::new(before.is_some(), has_next);
        connection.edges.extend(
            rows.into_iter()
                .map(|row| Edge::new(encode_cursor(USER_CURSOR, row.id), User::from(row))),
        );
        Ok(connection)
    }

    /// Orders newest first, optionally of one user, as a Relay connection.
    async fn orders(
        &self,
        ctx: &Context<'_>,
        user_id: Option<ID>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<Connection<String, Order>> {
        if !(1..=MAX_PAGE).contains(&first) {
            return Err(coded(
                format!("`first` must be 1 to {MAX_PAGE}"),
                "BAD_USER_INPUT",
            ));
        }
        let caller = auth::require(ctx).await?;
        let user_id = user_id
            .as_ref()
            .map(|id| parse_id(id, "userId"))
            .transpose()?;
        // Customers list their own orders; without `userId`, admins list everyone's.
        let user_id = match (caller.role, user_id) {
            (Role::Customer, Some(id)) if !auth::may_see(&caller, id) => {
                return Err(coded(
                    "customers may list only their own orders",
                    "FORBIDDEN",
                ));
            }
            (Role::Customer, None) => Some(parse_id(&ID(caller.user_id.clone()), "userId")?),
            (_, user_id) => user_id,
        };
        let before = after
            .as_deref()
            .map(|c| decode_cursor(c, ORDER_CURSOR))
            .transpose()?;
        let reads = ctx.data::<Reads>()?;
        let mut rows = reads
            .orders(user_id, None, before, i64::from(first) + 1)
            .await
            .map_err(unavailable)?;
        let has_next = rows.len() > first as usize;
        rows.truncate(first as usize);
        let mut connection = Connection::new(before.is_some(), has_next);
        connection.edges.extend(
            rows.into_iter()
                .map(|row| Edge::new(encode_cursor(ORDER_CURSOR, row.order.id), Order::from(row))),
        );
        Ok(connection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let id = Uuid::now_v7();
        assert_eq!(
            decode_cursor(&encode_cursor(ORDER_CURSOR, id), ORDER_CURSOR).unwrap(),
            id
        );
        assert!(decode_cursor("not-a-cursor", ORDER_CURSOR).is_err());
        assert!(
            decode_cursor(&encode_cursor(USER_CURSOR, id), ORDER_CURSOR).is_err(),
            "a user cursor is not an order cursor"
        );
    }
}
