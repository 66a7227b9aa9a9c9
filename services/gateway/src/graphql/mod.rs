//! The GraphQL schema of `shared/API.md`: queries from the read models (`me`, `user`,
//! `users`, `order`, `orders`), the predictor's `loadForecast`, mutations forwarded to the command services. Both go
//! through [`Operations`], as the REST mirror does.
//!
//! Errors carry `extensions.code` ([`crate::error::ApiError`] is the one mapping).

mod extensions;
mod loaders;
mod mutation;
mod parsed;
mod query;
mod subscription;
mod types;

use async_graphql::{Context, Schema};

pub use extensions::OperationSlot;
pub use loaders::Loaders;
pub use mutation::MutationRoot;
pub use parsed::ParsedQueries;
pub use query::QueryRoot;
pub use subscription::{OrderEvents, SubscriptionRoot};
pub use types::{Order, OrderItem, OrderStatus, Role, User, UserStatus};

use tillstream_runtime::grpc::Caller;

use crate::auth::Viewer;
use crate::autoscale::Autoscale;
use crate::config::Limits;
use crate::error::ApiError;
use crate::operations::Operations;

pub type GatewaySchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// What the schema reads from JetStream: order events (subscriptions) and the predictor's
/// output (`loadForecast`).
#[derive(Clone)]
pub struct Streams {
    pub events: OrderEvents,
    pub autoscale: Autoscale,
}

impl Streams {
    pub fn new(client: async_nats::Client, namespace: tillstream_events::Namespace) -> Self {
        Streams {
            events: OrderEvents::new(client.clone(), namespace.clone()),
            autoscale: Autoscale::new(client, namespace),
        }
    }
}

/// The schema. Queries deeper or more complex than `limits` allow are refused before they
/// run, with `extensions.code = BAD_USER_INPUT` and `extensions.limit`.
pub fn schema(operations: Operations, streams: Streams, limits: &Limits) -> GatewaySchema {
    let mut builder = Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .data(operations.reads.clone())
        .data(streams.events)
        .data(streams.autoscale)
        .data(operations)
        .data(ParsedQueries::default())
        .limit_depth(limits.graphql_max_depth)
        .limit_complexity(limits.graphql_max_complexity)
        .extension(extensions::OperationLabel)
        .extension(extensions::CodedRejections);
    if !limits.graphql_introspection {
        builder = builder.disable_introspection();
    }
    builder.finish()
}

/// `request` with fresh DataLoaders over the schema's read models (one set per request).
pub fn with_loaders(
    schema: &GatewaySchema,
    request: async_graphql::Request,
) -> async_graphql::Request {
    match schema.data::<tillstream_projections::queries::Reads>() {
        Some(reads) => Loaders::attach(request, reads),
        None => request,
    }
}

pub(crate) fn operations<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Operations> {
    ctx.data::<Operations>()
}

/// The signed-in, active caller of this request, or UNAUTHENTICATED.
pub(crate) async fn caller(ctx: &Context<'_>) -> async_graphql::Result<Caller> {
    let viewer = ctx.data::<Viewer>()?;
    operations(ctx)?
        .caller(viewer)
        .await
        .map_err(ApiError::graphql)
}
