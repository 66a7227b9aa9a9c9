//! `tillstream`: the platform's one binary. See `tillstream --help`.

mod cli;

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    if cli.is_server() {
        tillstream_runtime::telemetry::init();
    } else {
        tillstream_runtime::telemetry::init_with("warn");
    }
    cli.run().await
}
