use clap::Parser;

#[derive(Parser)]
#[command(
    name = "tillstream-gateway",
    version,
    about = "tillstream GraphQL gateway over the read models"
)]
struct Cli {
    #[command(flatten)]
    config: tillstream_gateway::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tillstream_runtime::telemetry::init();
    let cli = Cli::parse();
    let app = tillstream_gateway::App::build(cli.config).await?;
    tracing::info!(http = %app.http_addr(), "gateway listening; GraphiQL at /graphql");
    app.run(tillstream_runtime::shutdown::on_signal()).await?;
    Ok(())
}
