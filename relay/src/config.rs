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

// The command line of `tillstream-relay`: its settings and the logging and tracing flags every binary
// takes. The doc comment below is its `--help` text.
#[derive(Debug, clap::Parser)]
#[command(
    name = "tillstream-relay",
    version,
    about = "Publishes an event store's committed events to JetStream"
)]
/// The relay: follows one command service's event store in commit order and publishes
/// every committed event to the JetStream stream EVENTS (subject
/// `events.<aggregate>.<id>`, deduplicated by `Nats-Msg-Id`), exactly once after dedupe and
/// in per-aggregate order; its checkpoint lives in the same database. Run one per event
/// store (users, orders); a second one on the same store stands by. Creates the streams of
/// nats/streams.json. Serves /healthz, /readyz and /metrics on --ops-addr.
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
