use clap::Parser;

#[derive(Parser)]
#[command(
    name = "tillstream-relay",
    version,
    about = "Publishes an event store's committed events to JetStream"
)]
struct Cli {
    #[command(flatten)]
    config: tillstream_relay::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tillstream_runtime::telemetry::init();
    let cli = Cli::parse();
    let app = tillstream_relay::App::build(cli.config).await?;
    tracing::info!(ops = %app.ops_addr(), "relay running");
    app.run(tillstream_runtime::shutdown::on_signal()).await?;
    Ok(())
}
