//! `tillstream`: the platform's one binary. See `tillstream --help`.

mod up;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tillstream",
    version,
    about = "Event-sourced commerce backend: users and orders over gRPC, GraphQL reads"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every service in one process (with demo data unless --no-demo).
    Up(up::UpArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tillstream_runtime::telemetry::init();
    match Cli::parse().command {
        Command::Up(args) => up::run(args).await,
    }
}
