//! `tillstream token`.

use std::time::Duration;

use tillstream_events::Role;
use tillstream_runtime::tokens::{KeyPaths, TokenIssuer};

use super::DataDirArgs;

#[derive(clap::Args)]
pub struct TokenArgs {
    /// Subject: a user id, or a service's name.
    #[arg(long)]
    sub: String,
    /// customer, admin or service.
    #[arg(long, default_value = "service")]
    role: Role,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    lifetime_secs: u64,
    #[command(flatten)]
    data: DataDirArgs,
}

pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let keys = KeyPaths::in_dir(&args.data.data_dir);
    let issuer = TokenIssuer::load(&keys, Duration::from_secs(args.lifetime_secs))?;
    println!("{}", issuer.issue(&args.sub, args.role)?);
    Ok(())
}
