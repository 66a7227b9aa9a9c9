//! Settings of the relay: command-line flags, each with an environment variable.

use std::net::SocketAddr;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// The event store to relay (a command service's database).
    #[arg(
        long = "database-url",
        env = "TILLSTREAM_RELAY_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/tillstream_orders",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Name of this relay's checkpoint; one relay per event store.
    #[arg(
        long = "name",
        env = "TILLSTREAM_RELAY_NAME",
        default_value = "jetstream"
    )]
    pub name: String,
    #[command(flatten)]
    pub nats: tillstream_runtime::nats::NatsConfig,
    /// Most events published per batch.
    #[arg(
        long = "batch-size",
        env = "TILLSTREAM_RELAY_BATCH_SIZE",
        default_value_t = 500
    )]
    pub batch_size: i64,
    /// /healthz, /readyz, /metrics listen address.
    #[arg(
        long = "ops-addr",
        env = "TILLSTREAM_RELAY_OPS_ADDR",
        default_value = "127.0.0.1:9103"
    )]
    pub ops_addr: SocketAddr,
}
