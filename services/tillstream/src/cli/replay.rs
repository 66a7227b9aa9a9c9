//! `tillstream replay --aggregate order:<id>`.

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use tillstream_runtime::audit::{self, AsOf, AuditStep};
use tillstream_runtime::postgres;

use super::DatabaseArgs;

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// `order:<id>` or `user:<id>`.
    #[arg(long)]
    aggregate: String,
    /// Stop after this version (sequence).
    #[arg(long)]
    as_of_version: Option<u64>,
    /// Stop at this time (RFC 3339, e.g. 2026-11-25T12:00:00Z).
    #[arg(long)]
    as_of: Option<DateTime<Utc>>,
    /// One JSON object per event instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DatabaseArgs,
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let Some((kind, id)) = args.aggregate.split_once(':') else {
        bail!("--aggregate must be `order:<id>` or `user:<id>`");
    };
    let database = match kind {
        "order" => "orders",
        "user" => "users",
        other => bail!("unknown aggregate type `{other}` (expected order or user)"),
    };
    let url = postgres::with_database(
        &args.db.postgres_url,
        &format!("{}_{database}", args.db.database_prefix),
    )?;
    let pool = postgres::pool(&url, 2)?;
    let as_of = AsOf {
        version: args.as_of_version,
        time: args.as_of,
    };
    let steps = match kind {
        "order" => audit::history::<tillstream_order::domain::Order>(&pool, id, as_of).await,
        _ => audit::history::<tillstream_user::domain::User>(&pool, id, as_of).await,
    }
    .with_context(|| format!("reading the history of {}", args.aggregate))?;
    if steps.is_empty() {
        bail!("no events for {} (as asked)", args.aggregate);
    }
    for step in &steps {
        if args.json {
            println!("{}", serde_json::to_string(step)?);
        } else {
            print_step(step)?;
        }
    }
    Ok(())
}

fn print_step(step: &AuditStep) -> anyhow::Result<()> {
    let actor = match (&step.metadata.actor.id, step.metadata.actor.role) {
        (Some(id), Some(role)) => format!("{id} ({role})"),
        (Some(id), None) => id.clone(),
        _ => "anonymous".to_owned(),
    };
    println!(
        "#{} {} {} v{} by {} correlation {}",
        step.sequence,
        step.recorded_at.to_rfc3339(),
        step.event_type,
        step.event_version,
        actor,
        step.metadata.correlation_id
    );
    println!("   event: {}", serde_json::to_string(&step.payload)?);
    println!("   state: {}", serde_json::to_string(&step.state)?);
    Ok(())
}
