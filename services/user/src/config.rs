//! Settings of the user service: command-line flags, each with an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Postgres database holding this service's event store and credentials (created if missing).
    #[arg(
        long = "database-url",
        env = "TILLSTREAM_USER_DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/tillstream_users"
    )]
    pub database_url: String,
    /// Maximum Postgres connections of the service's pool; the user and order services keep up to 3 more each, of their own: the event store's committer (2) and its commit announcer (docs/log.md).
    #[arg(
        long = "db-pool-size",
        env = "TILLSTREAM_DB_POOL_SIZE",
        default_value_t = 10
    )]
    pub db_pool_size: u32,
    /// gRPC listen address (port 0 picks a free port).
    #[arg(
        long = "grpc-addr",
        env = "TILLSTREAM_USER_GRPC_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    pub grpc_addr: SocketAddr,
    /// PEM certificate chain for gRPC over TLS (with --tls-key); plaintext when unset.
    #[arg(long = "tls-cert", env = "TILLSTREAM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for gRPC over TLS (with --tls-cert).
    #[arg(long = "tls-key", env = "TILLSTREAM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// NATS, for this process's resource samples only (commands never wait for NATS).
    #[command(flatten)]
    pub nats: tillstream_runtime::nats::NatsConfig,
    /// /healthz, /readyz, /metrics listen address.
    #[arg(
        long = "ops-addr",
        env = "TILLSTREAM_USER_OPS_ADDR",
        default_value = "127.0.0.1:9101"
    )]
    pub ops_addr: SocketAddr,
    /// Folder for generated development keys (`keys/`).
    #[arg(
        long = "data-dir",
        env = "TILLSTREAM_DATA_DIR",
        default_value = ".data"
    )]
    pub data_dir: PathBuf,
    /// Database of the read models (ListUsers, and whether an account is still active).
    #[arg(
        long = "reads-database-url",
        env = "TILLSTREAM_READS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/tillstream_reads",
        hide_env_values = true
    )]
    pub reads_database_url: String,
    /// Email of the first admin, created on first start when no account has it.
    #[arg(long = "admin-email", env = "TILLSTREAM_ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// Password of the first admin. When unset, a random one is generated and written to
    /// `<data-dir>/admin-password` (readable by its owner only).
    #[arg(
        long = "admin-password",
        env = "TILLSTREAM_ADMIN_PASSWORD",
        hide_env_values = true
    )]
    pub admin_password: Option<String>,
    /// Lifetime of issued access tokens, in seconds.
    #[arg(
        long = "token-lifetime-secs",
        env = "TILLSTREAM_TOKEN_LIFETIME_SECS",
        default_value_t = 3600
    )]
    pub token_lifetime_secs: u64,
}

impl Config {
    /// The TLS files, when both are configured.
    pub fn tls(&self) -> Option<tillstream_runtime::tls::ServerTls> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(tillstream_runtime::tls::ServerTls {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }
}

// The command line of `tillstream-user`: its settings and the logging and tracing flags every binary
// takes. The doc comment below is its `--help` text.
#[derive(Debug, clap::Parser)]
#[command(
    name = "tillstream-user",
    version,
    about = "tillstream user command service (gRPC)"
)]
/// The user command service: registers users, changes roles and profiles, deactivates
/// accounts and issues access tokens (Login), over gRPC (`tillstream.user.v1`, with
/// `grpc.health.v1` and reflection). Every change is an event in its Postgres event store;
/// run a `tillstream-relay` on the same database to publish them. On first start it
/// generates the token key pair into `<data-dir>/keys/` and, with --admin-email, the first
/// admin. Serves /healthz, /readyz and /metrics on --ops-addr.
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
