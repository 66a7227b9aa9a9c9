//! Settings of the gateway: command-line flags, each with an environment variable.

use std::net::SocketAddr;

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
    /// Maximum Postgres connections.
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
    /// HTTP listen address: /graphql, /healthz, /readyz, /metrics.
    #[arg(
        long = "http-addr",
        env = "TILLSTREAM_GATEWAY_HTTP_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub http_addr: SocketAddr,
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
