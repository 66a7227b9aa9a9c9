use clap::Parser;
use tillstream_runtime::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = tillstream_relay::Cli::parse();
    let _telemetry = telemetry::init(&cli.telemetry, "tillstream-relay", telemetry::SERVER_FILTER)?;
    let app = tillstream_relay::App::build(cli.config).await?;
    tracing::info!(ops = %app.ops_addr(), "relay running");
    app.run(tillstream_runtime::shutdown::on_signal()).await?;
    Ok(())
}
