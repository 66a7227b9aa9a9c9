use clap::Parser;

#[derive(Parser)]
#[command(
    name = "tillstream-user",
    version,
    about = "tillstream user command service (gRPC)"
)]
struct Cli {
    #[command(flatten)]
    config: tillstream_user::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tillstream_runtime::telemetry::init();
    let cli = Cli::parse();
    let app = tillstream_user::App::build(cli.config).await?;
    tracing::info!(grpc = %app.grpc_addr(), ops = %app.ops_addr(), "user service listening");
    app.run(tillstream_runtime::shutdown::on_signal()).await?;
    Ok(())
}
