//! Settings of the gateway: command-line flags, each with an environment variable.

use std::net::SocketAddr;

use tillstream_runtime::http_server::DEFAULT_IDLE_TIMEOUT;
use tillstream_runtime::nats::NatsConfig;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Database of the read models.
    #[arg(
        long = "database-url",
        env = "TILLSTREAM_READS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/tillstream_reads",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Maximum Postgres connections of the service's pool; the user and order services keep up to 3 more each, of their own: the event store's committer (2) and its commit announcer (docs/log.md).
    #[arg(
        long = "db-pool-size",
        env = "TILLSTREAM_DB_POOL_SIZE",
        default_value_t = 10
    )]
    pub db_pool_size: u32,
    /// Folder holding the token verification key (`keys/jwt-ed25519.pub.pem`), shared with
    /// the user service.
    #[arg(
        long = "data-dir",
        env = "TILLSTREAM_DATA_DIR",
        default_value = ".data"
    )]
    pub data_dir: std::path::PathBuf,
    /// The user service, where mutations on users go.
    #[arg(
        long = "user-grpc-url",
        env = "TILLSTREAM_USER_GRPC_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub user_grpc_url: String,
    /// The order service, where mutations on orders go.
    #[arg(
        long = "order-grpc-url",
        env = "TILLSTREAM_ORDER_GRPC_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub order_grpc_url: String,
    /// CA certificate (PEM) to reach the command services over TLS (`https://` URLs).
    #[arg(long = "grpc-ca", env = "TILLSTREAM_GRPC_CA")]
    pub grpc_ca: Option<std::path::PathBuf>,
    /// Name the command services' certificates are issued for.
    #[arg(
        long = "grpc-tls-domain",
        env = "TILLSTREAM_GRPC_TLS_DOMAIN",
        default_value = "localhost"
    )]
    pub grpc_tls_domain: String,
    /// HTTP listen address: /graphql, /graphql/ws, /api/v1, /healthz, /readyz, /metrics.
    #[arg(
        long = "http-addr",
        env = "TILLSTREAM_GATEWAY_HTTP_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub http_addr: SocketAddr,
    /// NATS: where request metrics go (`metrics.requests.gateway`).
    #[command(flatten)]
    pub nats: NatsConfig,
    /// Request metrics queued for NATS at most; beyond it they are dropped and counted
    /// (`tillstream_gateway_request_metrics_dropped_total`), never making a request wait.
    #[arg(
        long = "metrics-buffer",
        env = "TILLSTREAM_GATEWAY_METRICS_BUFFER",
        default_value_t = 4096
    )]
    pub metrics_buffer: usize,
    /// Request limits and rate limits of the HTTP API.
    #[command(flatten)]
    pub limits: Limits,
}

/// What the gateway accepts: rate limits per client, body size, GraphQL depth and
/// complexity, and whether the schema can be explored (introspection, GraphiQL).
#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// Requests per second per client (token subject, else remote IP); 0 turns rate
    /// limiting off.
    #[arg(
        long = "rate-limit-per-second",
        env = "TILLSTREAM_GATEWAY_RATE_LIMIT_PER_SECOND",
        default_value_t = 50
    )]
    pub rate_limit_per_second: u32,
    /// Requests a client may send at once above the steady rate.
    #[arg(
        long = "rate-limit-burst",
        env = "TILLSTREAM_GATEWAY_RATE_LIMIT_BURST",
        default_value_t = 100
    )]
    pub rate_limit_burst: u32,
    /// Largest request body accepted (413 beyond).
    #[arg(
        long = "max-body-bytes",
        env = "TILLSTREAM_GATEWAY_MAX_BODY_BYTES",
        default_value_t = 256 * 1024
    )]
    pub max_body_bytes: usize,
    /// Seconds a connection may go without sending a complete request head, after it
    /// opens and after each response, before it is closed (idle keep-alive connections,
    /// silent clients, request heads sent slowly; requests in flight are not cut); 0 keeps
    /// them open, at most 86400. An HTTP/2 connection that starts no request for as long
    /// is sent a GOAWAY (what it has in flight is answered, then it closes).
    #[arg(
        long = "idle-timeout-secs",
        env = "TILLSTREAM_GATEWAY_IDLE_TIMEOUT_SECS",
        default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(0..=86_400)
    )]
    pub idle_timeout_secs: u64,
    /// Deepest GraphQL query accepted.
    #[arg(
        long = "graphql-max-depth",
        env = "TILLSTREAM_GRAPHQL_MAX_DEPTH",
        default_value_t = 12
    )]
    pub graphql_max_depth: usize,
    /// Most complex GraphQL query accepted (one point per field; a page costs `first` times
    /// the fields asked of each item).
    #[arg(
        long = "graphql-max-complexity",
        env = "TILLSTREAM_GRAPHQL_MAX_COMPLEXITY",
        default_value_t = 2000
    )]
    pub graphql_max_complexity: usize,
    /// Answer GraphQL introspection queries (turn off in production if the schema is not
    /// to be explored).
    #[arg(
        long = "graphql-introspection",
        env = "TILLSTREAM_GRAPHQL_INTROSPECTION",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub graphql_introspection: bool,
    /// Serve GraphiQL on `GET /graphql`.
    #[arg(
        long = "graphiql",
        env = "TILLSTREAM_GRAPHIQL",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub graphiql: bool,
}

impl Limits {
    /// The idle timeout of HTTP connections; `None` when turned off (0).
    pub fn idle_timeout(&self) -> Option<std::time::Duration> {
        (self.idle_timeout_secs > 0).then(|| std::time::Duration::from_secs(self.idle_timeout_secs))
    }
}

impl Default for Limits {
    /// The same values as the command-line defaults.
    fn default() -> Self {
        Limits {
            rate_limit_per_second: 50,
            rate_limit_burst: 100,
            max_body_bytes: 256 * 1024,
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT.as_secs(),
            graphql_max_depth: 12,
            graphql_max_complexity: 2000,
            graphql_introspection: true,
            graphiql: true,
        }
    }
}

// The command line of `tillstream-gateway`: its settings and the logging and tracing flags every binary
// takes. The doc comment below is its `--help` text.
#[derive(Debug, clap::Parser)]
#[command(
    name = "tillstream-gateway",
    version,
    about = "tillstream GraphQL gateway over the read models"
)]
/// The gateway: GraphQL on /graphql (GraphiQL in a browser) over the read models, with
/// bearer tokens and per-role access; mutations are forwarded to the user and order
/// services over gRPC with the caller's token, correlation id and trace context. Also
/// /healthz, /readyz and /metrics on the same address.
///
/// Every flag can also be set by the environment variable shown with it; all settings of
/// every binary are listed in docs/configuration.md.
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(flatten)]
    pub telemetry: tillstream_runtime::telemetry::TelemetryConfig,
    #[command(flatten)]
    pub file: tillstream_runtime::config_file::ConfigFile,
}
