//! Building and running the gateway.

use std::net::SocketAddr;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::Router;
use axum::extract::State;
use axum::extract::WebSocketUpgrade;
use axum::http::header;
use axum::middleware::from_fn_with_state;
use axum::response::Html;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tillstream_projections::ReadModelWatch;
use tillstream_projections::queries::Reads;
use tillstream_runtime::grpc_host::{self, HostError};
use tillstream_runtime::http_server;
use tillstream_runtime::keepalive::Http2Keepalive;
use tillstream_runtime::ops::{self, Readiness};
use tillstream_runtime::tokens::{KeyPaths, TokenVerifier};
use tillstream_runtime::{Shutdown, StartError};
use tokio::net::TcpListener;

use crate::Config;
use crate::auth::{self, Forward, MinVersions, Viewer};
use crate::backends::Backends;
use crate::body_limit::{self, MaxBody};
use crate::config::Limits;
use crate::graphql::{self, GatewaySchema};
use crate::graphql::{OperationSlot, Streams};
use crate::operations::Operations;
use crate::rate_limit::{self, RateLimit};
use crate::request_metrics::{self, OperationName, Publisher, RequestMetrics};
use crate::rest;
use tillstream_events::Namespace;

pub struct App {
    reads: Reads,
    watch: ReadModelWatch,
    nats: async_nats::Client,
    namespace: Namespace,
    listener: TcpListener,
    router: Router,
    publisher: Publisher,
    rate_limit: RateLimit,
    idle_timeout: Option<std::time::Duration>,
}

/// The gateway's HTTP routes: GraphQL, GraphiQL, the REST mirror with its OpenAPI
/// document, and the ops endpoints.
///
/// Every API request passes, outermost first: request metrics (so refused requests are
/// measured too), token check ([`auth::identify`]), rate limit, body size limit. The ops
/// endpoints (`/healthz`, `/readyz`, `/metrics`) are not limited.
pub fn router(
    operations: Operations,
    streams: Streams,
    verifier: TokenVerifier,
    readiness: Readiness,
    metrics: RequestMetrics,
    rate_limit: RateLimit,
    limits: &Limits,
) -> Router {
    let schema = graphql::schema(operations.clone(), streams, limits);
    let graphql = if limits.graphiql {
        get(|| async { Html(GraphiQLSource::build().endpoint("/graphql").finish()) }).post(execute)
    } else {
        post(execute)
    };
    let mut router = Router::new();
    if limits.graphql_introspection {
        // The schema as SDL, for tools that cannot send the deep standard introspection
        // query past the depth limit (schemathesis, code generators).
        let sdl = schema.sdl();
        router = router.route(
            "/graphql/schema.graphql",
            get(
                move || async move { ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], sdl) },
            ),
        );
    }
    router
        .route("/graphql", graphql)
        .with_state(schema.clone())
        .route(
            "/graphql/ws",
            get(subscribe).with_state(Subscriptions {
                schema,
                verifier: verifier.clone(),
            }),
        )
        .merge(rest::router(operations))
        .layer(from_fn_with_state(
            MaxBody(limits.max_body_bytes),
            body_limit::limit_body,
        ))
        .layer(from_fn_with_state(rate_limit, rate_limit::limit))
        .layer(from_fn_with_state(verifier, auth::identify))
        .layer(from_fn_with_state(metrics, request_metrics::measure))
        .merge(ops::router(readiness))
        .layer(axum::middleware::from_fn(ops::track_requests))
        .layer(axum::middleware::from_fn(
            crate::request_trace::trace_requests,
        ))
}

/// Runs one GraphQL request as the viewer its bearer token names, and labels the
/// response with the operation for the request metrics.
async fn execute(
    State(schema): State<GatewaySchema>,
    viewer: Viewer,
    forward: Forward,
    min_versions: MinVersions,
    request: GraphQLRequest,
) -> axum::response::Response {
    let mut request = request.into_inner();
    if let Some(parsed) = schema.data::<graphql::ParsedQueries>() {
        parsed.prepare(&mut request);
    }
    let slot = OperationSlot::new(request.operation_name.clone());
    let request = request
        .data(viewer)
        .data(forward)
        .data(min_versions)
        .data(slot.clone());
    let answer = schema
        .execute(graphql::with_loaders(&schema, request))
        .await;
    let mut response = GraphQLResponse::from(answer).into_response();
    response
        .extensions_mut()
        .insert(OperationName(slot.label()));
    response
}

#[derive(Clone)]
struct Subscriptions {
    schema: GatewaySchema,
    verifier: TokenVerifier,
}

/// GraphQL over WebSocket (`graphql-transport-ws`, or the older `graphql-ws`). The
/// caller is named by `{"authorization": "Bearer <jwt>"}` in the `connection_init`
/// payload (browsers cannot set headers on a WebSocket), else by the upgrade request's
/// `authorization` header.
async fn subscribe(
    State(subscriptions): State<Subscriptions>,
    viewer: Viewer,
    forward: Forward,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> axum::response::Response {
    let Subscriptions { schema, verifier } = subscriptions;
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            GraphQLWebSocket::new(socket, schema, protocol)
                .on_connection_init(move |payload| async move {
                    let authorization = payload
                        .get("authorization")
                        .or_else(|| payload.get("Authorization"))
                        .and_then(|v| v.as_str());
                    let viewer = match authorization {
                        Some(value) => Viewer::from_authorization(&verifier, value),
                        None => viewer,
                    };
                    let mut data = async_graphql::Data::default();
                    data.insert(viewer);
                    data.insert(forward);
                    Ok(data)
                })
                .serve()
        })
}

impl App {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        // The gateway may start before the projector: `connect` applies the schema it reads.
        let reads = Reads::connect(&config.database_url, config.db_pool_size).await?;
        let readiness = Readiness::default().with(reads.readiness());
        // Metrics go to NATS when it is there; the gateway serves without it.
        let client = config.nats.connect("tillstream-gateway", false).await?;
        let namespace = Namespace::new(config.nats.namespace)?;
        let subject = namespace.request_metrics_subject("gateway");
        let streams = Streams::new(client.clone(), namespace.clone());
        let (metrics, publisher) =
            request_metrics::channel(client.clone(), subject, config.metrics_buffer);
        let backends = Backends::connect(
            &config.user_grpc_url,
            &config.order_grpc_url,
            config.grpc_ca.as_ref(),
            &config.grpc_tls_domain,
        )
        .map_err(|e| StartError::Bootstrap(e.to_string()))?;
        let rate_limit = RateLimit::new(
            config.limits.rate_limit_per_second,
            config.limits.rate_limit_burst,
        );
        let watch = ReadModelWatch::default();
        Ok(App {
            reads: reads.clone(),
            watch: watch.clone(),
            nats: client,
            namespace,
            publisher,
            listener: grpc_host::bind(config.http_addr).await?,
            router: router(
                Operations::new(reads, backends).with_watch(watch),
                streams,
                TokenVerifier::load(&KeyPaths::in_dir(&config.data_dir))?,
                readiness,
                metrics,
                rate_limit.clone(),
                &config.limits,
            ),
            rate_limit,
            idle_timeout: config.limits.idle_timeout(),
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown`; then the request metrics still queued are published.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), HostError> {
        let publisher = tokio::spawn(self.publisher.run());
        tillstream_runtime::resources::report(
            self.nats,
            &self.namespace,
            "gateway",
            shutdown.clone(),
        );
        tokio::spawn(self.rate_limit.housekeeping(shutdown.clone()));
        self.watch.spawn_listener(&self.reads, shutdown.clone());
        // Requests carry the peer address, for the rate limit of anonymous callers.
        let served = http_server::serve(
            self.listener,
            self.router,
            shutdown,
            self.idle_timeout,
            Http2Keepalive::SERVER,
        )
        .await;
        // The router (and with it every metrics sender) is gone: the publisher drains.
        let _ = publisher.await;
        served.map_err(HostError::Ops)
    }
}
