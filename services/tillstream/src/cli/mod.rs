//! The subcommands of `tillstream`.

mod doctor;
mod events;
mod predictor;
mod projections;
mod replay;
mod token;
mod up;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tillstream",
    version,
    about = "Event-sourced commerce backend: users and orders over gRPC, GraphQL reads"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
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
    /// Operate the read-model projections.
    #[command(subcommand)]
    Projections(projections::ProjectionsCommand),
    /// The predictor's offline tools: backtest over load traces, trace generator, ingest
    /// benchmark.
    #[command(subcommand)]
    Predictor(predictor::PredictorCommand),
    /// Sign an access token with the installation's private key (for service-to-service
    /// calls and operators; the key is in `<data-dir>/keys/`).
    Token(token::TokenArgs),
}

impl Cli {
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
            Command::Projections(command) => projections::run(command).await,
            Command::Token(args) => token::run(args),
            Command::Predictor(command) => predictor::run(command),
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
