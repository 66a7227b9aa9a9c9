//! The subcommands of `tillstream`.

mod doctor;
mod events;
mod predictor;
mod projections;
mod replay;
mod setup;
mod token;
mod up;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tillstream_runtime::telemetry::TelemetryConfig;

/// tillstream runs an event-sourced commerce backend: users and orders changed by gRPC
/// commands, every change an event in Postgres, published to NATS JetStream, projected into
/// read models that a GraphQL gateway serves.
///
/// `tillstream up` runs every part in one process; the separate binaries
/// (tillstream-user, -order, -relay, -projector, -gateway) run the same code one part per
/// process. The other subcommands operate an installation: audit an aggregate's history,
/// follow the event stream, check the installation, re-drive dead letters, sign tokens.
///
/// Every flag can also be set by the environment variable shown with it; all settings of
/// every binary are listed in docs/configuration.md.
#[derive(Parser)]
#[command(
    name = "tillstream",
    version,
    about = "Event-sourced commerce backend: users and orders over gRPC, GraphQL reads"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    telemetry: TelemetryConfig,
    #[command(flatten)]
    file: tillstream_runtime::config_file::ConfigFile,
}

#[derive(Subcommand)]
enum Command {
    /// Run every service in one process (with demo data unless --no-demo).
    Up(Box<up::UpArgs>),
    /// Show an aggregate's history from the event store: each event with who caused it,
    /// and the state after it (an audit answer; needs neither JetStream nor read models).
    Replay(replay::ReplayArgs),
    /// Work with the EVENTS stream.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Check connectivity, versions, schemas, streams and clocks; say what is wrong.
    Doctor(doctor::DoctorArgs),
    /// Create the databases, apply every migration, create the streams and consumers, and
    /// exit: a deployment's one-shot set-up step (idempotent).
    Setup(setup::SetupArgs),
    /// Operate the read-model projections.
    #[command(subcommand)]
    Projections(projections::ProjectionsCommand),
    /// The predictor's offline tools: backtest over load traces, trace generator, recorder
    /// of real traffic, ingest benchmark.
    #[command(subcommand)]
    Predictor(predictor::PredictorCommand),
    /// Sign an access token with the installation's private key (for service-to-service
    /// calls and operators; the key is in `<data-dir>/keys/`).
    Token(token::TokenArgs),
}

impl Cli {
    /// How to log and whether to export traces.
    pub fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }

    /// Whether this runs services (and logs at info) rather than a one-off command.
    pub fn is_server(&self) -> bool {
        matches!(self.command, Command::Up(_))
    }

    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Up(args) => up::run(*args).await,
            Command::Replay(args) => replay::run(args).await,
            Command::Events(command) => events::run(command).await,
            Command::Doctor(args) => doctor::run(args).await,
            Command::Setup(args) => setup::run(args).await,
            Command::Projections(command) => projections::run(command).await,
            Command::Token(args) => token::run(args),
            Command::Predictor(command) => predictor::run(command).await,
        }
    }
}

/// Where the databases are: shared by the subcommands that read them.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// Postgres server; databases `<prefix>_users`, `_orders`, `_reads` live on it.
    #[arg(
        long,
        env = "TILLSTREAM_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    pub postgres_url: String,
    /// Prefix of the databases.
    #[arg(long, env = "TILLSTREAM_DATABASE_PREFIX", default_value = "tillstream")]
    pub database_prefix: String,
}

/// The data folder (keys, certificates, demo credentials).
#[derive(Debug, Clone, clap::Args)]
pub struct DataDirArgs {
    #[arg(long, env = "TILLSTREAM_DATA_DIR", default_value = ".data")]
    pub data_dir: PathBuf,
}
