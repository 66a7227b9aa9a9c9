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

// The command line of `tillstream-projector`: its settings and the logging and tracing flags every binary
// takes. The doc comment below is its `--help` text.
#[derive(Debug, clap::Parser)]
#[command(
    name = "tillstream-projector",
    version,
    about = "Builds the read models from the EVENTS stream"
)]
/// The projector: a durable JetStream consumer on EVENTS that applies each event exactly
/// once to the Postgres read models (users, orders, order items) the gateway serves, with
/// per-aggregate checkpoints in the same transactions. Events it cannot apply are retried
/// and then dead-lettered (`tillstream projections dead-letters`). Serves /healthz, /readyz
/// and /metrics on --ops-addr.
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
