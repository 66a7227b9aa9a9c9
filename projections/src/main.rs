use clap::Parser;
use tillstream_runtime::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = tillstream_projections::Cli::parse();
    let _telemetry = telemetry::init(
        &cli.telemetry,
        "tillstream-projector",
        telemetry::SERVER_FILTER,
    )?;
    let app = tillstream_projections::App::build(cli.config).await?;
    tracing::info!(ops = %app.ops_addr(), "projector running");
    app.run(tillstream_runtime::shutdown::on_signal()).await?;
    Ok(())
}
