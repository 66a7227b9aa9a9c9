//! Building and running the gateway.

use std::net::SocketAddr;

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::extract::State;
use axum::http::HeaderMap;
use tillstream_runtime::tokens::{KeyPaths, TokenVerifier};

use crate::auth::{Forward, Viewer};
use crate::backends::Backends;
use crate::graphql::GatewaySchema;
use axum::Router;
use axum::response::Html;
use axum::routing::get;
use tillstream_runtime::grpc_host::{self, HostError};
use tillstream_runtime::ops::{self, Readiness};

use tillstream_runtime::{Shutdown, StartError};
use tokio::net::TcpListener;

use crate::Config;
use crate::graphql;
use tillstream_projections::queries::Reads;

pub struct App {
    listener: TcpListener,
    router: Router,
}

#[derive(Clone)]
struct GatewayState {
    schema: GatewaySchema,
    verifier: TokenVerifier,
}

/// The gateway's HTTP routes: GraphQL, GraphiQL and the ops endpoints.
pub fn router(
    reads: Reads,
    backends: Backends,
    verifier: TokenVerifier,
    readiness: Readiness,
) -> Router {
    let state = GatewayState {
        schema: graphql::schema(reads, backends),
        verifier,
    };
    Router::new()
        .route(
            "/graphql",
            get(|| async { Html(GraphiQLSource::build().endpoint("/graphql").finish()) })
                .post(execute),
        )
        .with_state(state)
        .merge(ops::router(readiness))
        .layer(axum::middleware::from_fn(ops::track_requests))
        .layer(axum::middleware::from_fn(
            crate::request_trace::trace_requests,
        ))
}

/// Runs one GraphQL request as the viewer its bearer token names.
async fn execute(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    request: GraphQLRequest,
) -> GraphQLResponse {
    let viewer = Viewer::from_headers(&state.verifier, &headers);
    let forward = Forward::from_headers(&headers);
    state
        .schema
        .execute(request.into_inner().data(viewer).data(forward))
        .await
        .into()
}

impl App {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        // The gateway may start before the projector: `connect` applies the schema it reads.
        let reads = Reads::connect(&config.database_url, config.db_pool_size).await?;
        let readiness = Readiness::default().with(reads.readiness());
        Ok(App {
            listener: grpc_host::bind(config.http_addr).await?,
            router: router(
                reads,
                Backends::connect(
                    &config.user_grpc_url,
                    &config.order_grpc_url,
                    config.grpc_ca.as_ref(),
                    &config.grpc_tls_domain,
                )
                .map_err(|e| StartError::Bootstrap(e.to_string()))?,
                TokenVerifier::load(&KeyPaths::in_dir(&config.data_dir))?,
                readiness,
            ),
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub async fn run(self, shutdown: Shutdown) -> Result<(), HostError> {
        ops::serve(self.listener, self.router, shutdown)
            .await
            .map_err(HostError::Ops)
    }
}
