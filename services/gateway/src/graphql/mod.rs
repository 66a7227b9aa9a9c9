//! The GraphQL schema of `shared/API.md` (the read part so far): `user`, `order`, `orders`.
//!
//! Errors carry `extensions.code`: `BAD_USER_INPUT` for malformed arguments,
//! `UNAVAILABLE` when the read models cannot be reached (details are logged, not returned).

mod query;
mod types;

use async_graphql::{EmptyMutation, EmptySubscription, ErrorExtensions, Schema};

pub use query::QueryRoot;
pub use types::{Order, OrderItem, OrderStatus, Role, User, UserStatus};

use tillstream_projections::queries::Reads;

pub type GatewaySchema = Schema<QueryRoot, EmptyMutation, EmptySubscription>;

/// Deepest query accepted; deeper ones are refused before they run.
const MAX_DEPTH: usize = 12;
/// Most complex query accepted (fields weighted by async-graphql's defaults).
const MAX_COMPLEXITY: usize = 2000;

pub fn schema(reads: Reads) -> GatewaySchema {
    Schema::build(QueryRoot, EmptyMutation, EmptySubscription)
        .data(reads)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

/// An error with `extensions.code`.
pub fn coded(message: impl Into<String>, code: &'static str) -> async_graphql::Error {
    async_graphql::Error::new(message.into()).extend_with(|_, ext| ext.set("code", code))
}

/// A read-model failure: logged in full, returned as UNAVAILABLE without internals.
pub fn unavailable(error: sqlx::Error) -> async_graphql::Error {
    tracing::warn!(%error, "read model query failed");
    coded("the read models are unavailable; retry", "UNAVAILABLE")
}
