//! `tillstream`: the platform's one binary. See `tillstream --help`.

use clap::Parser;
use tillstream::cli::Cli;
use tillstream_runtime::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Servers log at info; one-off commands only warn.
    let filter = if cli.is_server() {
        telemetry::SERVER_FILTER
    } else {
        "warn"
    };
    let _telemetry = telemetry::init(cli.telemetry(), "tillstream", filter)?;
    cli.run().await
}
