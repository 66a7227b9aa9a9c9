//! `tillstream projections dead-letters list|redrive`.

use tillstream_events::Namespace;
use tillstream_projections::{Projector, dead_letters};
use tillstream_runtime::{nats, postgres};

use super::DatabaseArgs;

#[derive(clap::Subcommand)]
pub enum ProjectionsCommand {
    /// Events the projector could not apply.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
}

#[derive(clap::Subcommand)]
pub enum DeadLettersCommand {
    /// List the dead letters waiting for a re-drive.
    List(Target),
    /// Apply the waiting dead letters again (after fixing what made them fail).
    Redrive {
        /// Only this dead letter.
        #[arg(long)]
        id: Option<i64>,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(clap::Args)]
pub struct Target {
    #[command(flatten)]
    db: DatabaseArgs,
    #[arg(
        long,
        env = "TILLSTREAM_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    nats_url: String,
    #[arg(long, env = "TILLSTREAM_NAMESPACE", default_value = "")]
    namespace: String,
}

impl Target {
    /// The read-model database, with its schema up to date.
    async fn pool(&self) -> anyhow::Result<postgres::PgPool> {
        let url = postgres::with_database(
            &self.db.postgres_url,
            &format!("{}_reads", self.db.database_prefix),
        )?;
        let pool = postgres::pool(&url, 2)?;
        tillstream_projections::migrate(&pool).await?;
        Ok(pool)
    }
}

pub async fn run(command: ProjectionsCommand) -> anyhow::Result<()> {
    let ProjectionsCommand::DeadLetters(command) = command;
    match command {
        DeadLettersCommand::List(target) => {
            let letters = dead_letters::waiting(&target.pool().await?).await?;
            if letters.is_empty() {
                println!("no dead letters");
            }
            for l in letters {
                let event = match (&l.aggregate_type, &l.aggregate_id, l.sequence) {
                    (Some(t), Some(id), Some(seq)) => {
                        format!("{t}:{id} #{seq} {}", l.event_type.as_deref().unwrap_or("?"))
                    }
                    _ => format!("message {} on {}", l.stream_sequence, l.subject),
                };
                println!(
                    "{:>6}  {}  {}  after {} deliveries: {}",
                    l.id,
                    l.dead_at.to_rfc3339(),
                    event,
                    l.deliveries,
                    l.error
                );
            }
        }
        DeadLettersCommand::Redrive { id, target } => {
            let pool = target.pool().await?;
            let client = nats::connect(&target.nats_url, "tillstream-redrive", false).await?;
            let projector = Projector::new(
                pool.clone(),
                client,
                Namespace::new(target.namespace.clone())?,
                1,
            );
            let report = dead_letters::redrive(&projector, &pool, id).await?;
            println!(
                "applied {}, already applied {}, still failing {}",
                report.applied, report.already_applied, report.still_failing
            );
        }
    }
    Ok(())
}
