//! Settings of the projector: command-line flags, each with an environment variable.

use std::net::SocketAddr;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Database of the read models (created if missing).
    #[arg(
        long = "database-url",
        env = "TILLSTREAM_READS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/tillstream_reads",
        hide_env_values = true
    )]
    pub database_url: String,
    #[command(flatten)]
    pub nats: tillstream_runtime::nats::NatsConfig,
    /// /healthz, /readyz, /metrics listen address.
    #[arg(
        long = "ops-addr",
        env = "TILLSTREAM_PROJECTOR_OPS_ADDR",
        default_value = "127.0.0.1:9104"
    )]
    pub ops_addr: SocketAddr,
}
