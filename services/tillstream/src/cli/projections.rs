//! `tillstream projections rebuild [NAME]` and `tillstream projections dead-letters list|redrive`.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use tillstream_events::Namespace;
use tillstream_projections::rebuild::{self, Phase};
use tillstream_projections::{Projector, dead_letters};
use tillstream_runtime::{nats, postgres};

use super::DatabaseArgs;

#[derive(clap::Subcommand)]
pub enum ProjectionsCommand {
    /// Rebuild a projection from the start of the EVENTS stream into a shadow schema while
    /// the live one keeps serving, then swap it in atomically and drop the old tables.
    Rebuild {
        /// The projection (today there is one: `main`, every read-model table).
        #[arg(default_value = "main")]
        name: String,
        /// Leave out messages that cannot be applied (as the live projector dead-letters
        /// them) instead of stopping with the live tables untouched.
        #[arg(long)]
        allow_unapplied: bool,
        #[command(flatten)]
        target: Target,
    },
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
    #[command(flatten)]
    nats: nats::NatsConfig,
}

impl Target {
    /// The read-model database, with its schema up to date.
    async fn pool(&self) -> anyhow::Result<postgres::PgPool> {
        let url = postgres::with_database(
            &self.db.postgres_url,
            &format!("{}_reads", self.db.database_prefix),
        )?;
        let pool = postgres::pool(&url, 4)?;
        tillstream_projections::migrate(&pool).await?;
        Ok(pool)
    }
}

pub async fn run(command: ProjectionsCommand) -> anyhow::Result<()> {
    let command = match command {
        ProjectionsCommand::DeadLetters(command) => command,
        ProjectionsCommand::Rebuild {
            name,
            allow_unapplied,
            target,
        } => return run_rebuild(&name, allow_unapplied, &target).await,
    };
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
            let client = target.nats.connect("tillstream-redrive", false).await?;
            let projector = Projector::new(
                pool.clone(),
                client,
                Namespace::new(target.nats.namespace.clone())?,
                target.nats.stream_replicas,
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

async fn run_rebuild(name: &str, allow_unapplied: bool, target: &Target) -> anyhow::Result<()> {
    let pool = target.pool().await?;
    let client = target.nats.connect("tillstream-rebuild", false).await?;
    let namespace = Namespace::new(target.nats.namespace.clone())?;
    let bar = Bar::new();
    let report = rebuild::rebuild(&pool, client, &namespace, name, allow_unapplied, &bar).await;
    bar.bar.finish_and_clear();
    let report = report?;
    println!(
        "rebuilt `{name}`: {} events applied from {} messages ({} duplicates, {} left out); \
         bulk {:.0} events/s, live tables locked for {} ms, {:.1} s in all",
        report.applied,
        report.messages,
        report.duplicates,
        report.unapplied,
        report.bulk_events_per_second,
        report.swap.as_millis(),
        report.total.as_secs_f64()
    );
    Ok(())
}

/// The rebuild's progress on the terminal: one bar per phase, with rate and ETA.
struct Bar {
    bar: ProgressBar,
    phase: std::sync::Mutex<Option<Phase>>,
}

impl Bar {
    fn new() -> Self {
        let bar = ProgressBar::new(0);
        bar.enable_steady_tick(Duration::from_millis(200));
        Bar {
            bar,
            phase: std::sync::Mutex::new(None),
        }
    }
}

impl rebuild::Progress for Bar {
    fn update(&self, phase: Phase, done: u64, total: u64) {
        let mut current = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        if *current != Some(phase) {
            *current = Some(phase);
            let (label, unit) = match phase {
                Phase::Reading => ("reading the log", "events"),
                Phase::Writing => ("writing tables ", "rows"),
                Phase::Swapping => ("catching up    ", "events"),
            };
            let template =
                format!("{label} [{{bar:40}}] {{pos}}/{{len}} {unit} {{per_sec}} ETA {{eta}}");
            if let Ok(style) = ProgressStyle::with_template(&template) {
                self.bar.set_style(style.progress_chars("=> "));
            }
            self.bar.reset();
        }
        self.bar.set_length(total);
        self.bar.set_position(done);
    }
}
