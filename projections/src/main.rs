use clap::Parser;

#[derive(Parser)]
#[command(
    name = "tillstream-projector",
    version,
    about = "Builds the read models from the EVENTS stream"
)]
struct Cli {
    #[command(flatten)]
    config: tillstream_projections::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tillstream_runtime::telemetry::init();
    let cli = Cli::parse();
    let app = tillstream_projections::App::build(cli.config).await?;
    tracing::info!(ops = %app.ops_addr(), "projector running");
    app.run(tillstream_runtime::shutdown::on_signal()).await?;
    Ok(())
}
