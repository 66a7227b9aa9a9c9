use clap::Parser;

#[derive(Parser)]
#[command(
    name = "tillstream-predictor",
    version,
    about = "Forecasts load from the METRICS stream and publishes scaling decisions"
)]
struct Cli {
    #[command(flatten)]
    config: tillstream_predictor::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tillstream_runtime::telemetry::init();
    let cli = Cli::parse();
    let app = tillstream_predictor::App::build(cli.config).await?;
    tracing::info!(ops = %app.ops_addr(), "predictor running");
    app.run(tillstream_runtime::shutdown::on_signal()).await?;
    Ok(())
}
