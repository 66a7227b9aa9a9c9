//! Settings of the order service: command-line flags, each with an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Postgres database holding this service's event store (created if missing).
    #[arg(
        long = "database-url",
        env = "TILLSTREAM_ORDER_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/tillstream_orders",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Database of the read models: active-user checks and order history.
    #[arg(
        long = "reads-database-url",
        env = "TILLSTREAM_READS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/tillstream_reads",
        hide_env_values = true
    )]
    pub reads_database_url: String,
    /// Maximum Postgres connections.
    #[arg(
        long = "db-pool-size",
        env = "TILLSTREAM_DB_POOL_SIZE",
        default_value_t = 10
    )]
    pub db_pool_size: u32,
    /// gRPC listen address (port 0 picks a free port).
    #[arg(
        long = "grpc-addr",
        env = "TILLSTREAM_ORDER_GRPC_ADDR",
        default_value = "127.0.0.1:50052"
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
        env = "TILLSTREAM_ORDER_OPS_ADDR",
        default_value = "127.0.0.1:9102"
    )]
    pub ops_addr: SocketAddr,
    /// Folder holding the token verification key (`keys/`), shared with the user service.
    #[arg(
        long = "data-dir",
        env = "TILLSTREAM_DATA_DIR",
        default_value = ".data"
    )]
    pub data_dir: PathBuf,
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
