//! `tillstream`: the platform's one binary. See `tillstream --help`.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use tillstream::cli::Cli;
use tillstream_runtime::telemetry;

fn main() -> anyhow::Result<()> {
    // Still one thread: the settings file may set environment variables.
    tillstream_runtime::config_file::load()?;
    run(Cli::parse())
}

#[tokio::main]
async fn run(cli: Cli) -> anyhow::Result<()> {
    // Servers log at info; one-off commands only warn.
    let filter = if cli.is_server() {
        telemetry::SERVER_FILTER
    } else {
        "warn"
    };
    let _telemetry = telemetry::init(cli.telemetry(), "tillstream", filter)?;
    cli.run().await
}
