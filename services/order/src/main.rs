use clap::Parser;

#[derive(Parser)]
#[command(
    name = "tillstream-order",
    version,
    about = "tillstream order command service (gRPC)"
)]
struct Cli {
    #[command(flatten)]
    config: tillstream_order::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tillstream_runtime::telemetry::init();
    let cli = Cli::parse();
    let app = tillstream_order::App::build(cli.config).await?;
    tracing::info!(grpc = %app.grpc_addr(), ops = %app.ops_addr(), "order service listening");
    app.run(tillstream_runtime::shutdown::on_signal()).await?;
    Ok(())
}
