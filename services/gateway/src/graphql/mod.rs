//! The GraphQL schema of `shared/API.md`: queries from the read models (`me`, `user`,
//! `order`, `orders`), mutations forwarded to the command services.
//!
//! Errors carry `extensions.code`: `BAD_USER_INPUT` for malformed arguments,
//! `UNAVAILABLE` when the read models cannot be reached (details are logged, not returned).

mod mutation;
mod query;
mod types;

use async_graphql::{EmptySubscription, ErrorExtensions, Schema};

pub use mutation::MutationRoot;
pub use query::QueryRoot;
pub use types::{Order, OrderItem, OrderStatus, Role, User, UserStatus};

use tillstream_projections::queries::Reads;

use crate::backends::Backends;

pub type GatewaySchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// Deepest query accepted; deeper ones are refused before they run.
const MAX_DEPTH: usize = 12;
/// Most complex query accepted (fields weighted by async-graphql's defaults).
const MAX_COMPLEXITY: usize = 2000;

pub fn schema(reads: Reads, backends: Backends) -> GatewaySchema {
    Schema::build(QueryRoot, MutationRoot, EmptySubscription)
        .data(reads)
        .data(backends)
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
