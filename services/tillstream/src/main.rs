//! `tillstream`: the platform's one binary. See `tillstream --help`.

mod up;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tillstream",
    version,
    about = "Event-sourced commerce backend: users and orders over gRPC, GraphQL reads"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every service in one process (with demo data unless --no-demo).
    Up(Box<up::UpArgs>),
    /// Sign an access token with the installation's private key (for service-to-service
    /// calls and operators; the key is in `<data-dir>/keys/`).
    Token(TokenArgs),
}

#[derive(clap::Args)]
struct TokenArgs {
    /// Subject: a user id, or a service's name.
    #[arg(long)]
    sub: String,
    /// customer, admin or service.
    #[arg(long, default_value = "service")]
    role: tillstream_events::Role,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    lifetime_secs: u64,
    #[arg(long, env = "TILLSTREAM_DATA_DIR", default_value = ".data")]
    data_dir: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tillstream_runtime::telemetry::init();
    match Cli::parse().command {
        Command::Up(args) => up::run(*args).await,
        Command::Token(args) => {
            let keys = tillstream_runtime::tokens::KeyPaths::in_dir(&args.data_dir);
            let issuer = tillstream_runtime::tokens::TokenIssuer::load(
                &keys,
                std::time::Duration::from_secs(args.lifetime_secs),
            )?;
            println!("{}", issuer.issue(&args.sub, args.role)?);
            Ok(())
        }
    }
}
