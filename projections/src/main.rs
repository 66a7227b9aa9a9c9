#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use tillstream_runtime::telemetry;

fn main() -> anyhow::Result<()> {
    // Still one thread: the settings file may set environment variables.
    tillstream_runtime::config_file::load()?;
    tillstream_runtime::rt::multi_thread()?.block_on(run(tillstream_projections::Cli::parse()))
}

async fn run(cli: tillstream_projections::Cli) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(
        &cli.telemetry,
        "tillstream-projector",
        telemetry::Process::Server,
    )?;
    let app = tillstream_projections::App::build(cli.config).await?;
    tracing::info!(ops = %app.ops_addr(), "projector running");
    app.run(tillstream_runtime::shutdown::on_signal()).await?;
    Ok(())
}
