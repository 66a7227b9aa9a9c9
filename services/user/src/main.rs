use clap::Parser;
use tillstream_runtime::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = tillstream_user::Cli::parse();
    let _telemetry = telemetry::init(&cli.telemetry, "tillstream-user", telemetry::SERVER_FILTER)?;
    let app = tillstream_user::App::build(cli.config).await?;
    tracing::info!(grpc = %app.grpc_addr(), ops = %app.ops_addr(), "user service listening");
    app.run(tillstream_runtime::shutdown::on_signal()).await?;
    Ok(())
}
