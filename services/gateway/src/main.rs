use clap::Parser;
use tillstream_runtime::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = tillstream_gateway::Cli::parse();
    let _telemetry = telemetry::init(
        &cli.telemetry,
        "tillstream-gateway",
        telemetry::SERVER_FILTER,
    )?;
    let app = tillstream_gateway::App::build(cli.config).await?;
    tracing::info!(http = %app.http_addr(), "gateway listening; GraphiQL at /graphql");
    app.run(tillstream_runtime::shutdown::on_signal()).await?;
    Ok(())
}
