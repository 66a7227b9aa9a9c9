//! The Postgres event store of a command service: postgres-es's `events` table with the
//! columns the relay reads by, and the command loop that writes to it.
//!
//! Commands run as: load the aggregate from its events, let it decide, commit the new
//! events in one transaction with the next sequences. Two commands racing on one aggregate
//! both try to insert the same `(aggregate_type, aggregate_id, sequence)`; the primary key
//! lets one win and the other gets [`CommandError::Conflict`] (optimistic concurrency).

use std::sync::Arc;

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, EventStore};
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;
use tillstream_events::EventMetadata;

/// Applies the event-store schema. Event-store migrations are numbered 1xxxx and a
/// service's own migrations 2xxxx; each migrator ignores the other's rows in the shared
/// `_sqlx_migrations` table.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator = sqlx::migrate!("migrations/event_store");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}

/// Why a command did not produce events.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused the command (a business rule).
    #[error(transparent)]
    Rejected(E),
    /// Another command changed the aggregate first; retrying is safe.
    #[error("the {aggregate} was changed concurrently; retry the command")]
    Conflict { aggregate: &'static str },
    /// The store could not be reached; retrying with the same idempotency key is safe.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or corrupted data. Logged in full, shown to clients as internal.
    #[error("event store error: {0}")]
    Internal(String),
}

/// Executes commands of aggregate `A` against the Postgres event store.
pub struct CommandBus<A: Aggregate> {
    store: PersistedEventStore<PostgresEventRepository, A>,
    services: A::Services,
}

impl<A: Aggregate> CommandBus<A> {
    pub fn new(pool: PgPool, services: A::Services) -> Arc<Self> {
        let repo = PostgresEventRepository::new(pool);
        Arc::new(CommandBus {
            store: PersistedEventStore::new_event_store(repo),
            services,
        })
    }

    /// Loads the current state of aggregate `id` (its default state when it has no events)
    /// and its version (the sequence of its last event, 0 for none).
    pub async fn load(&self, id: &str) -> Result<(A, u64), CommandError<A::Error>> {
        let context = self.store.load_aggregate(id).await.map_err(convert::<A>)?;
        Ok((context.aggregate, context.current_sequence as u64))
    }

    /// Runs `command` on aggregate `id` and commits its events with `metadata`.
    /// Returns the aggregate's version after the command.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<u64, CommandError<A::Error>> {
        let started = std::time::Instant::now();
        let result = self.execute_untimed(id, command, metadata).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(CommandError::Rejected(_)) => "rejected",
            Err(CommandError::Conflict { .. }) => "conflict",
            Err(CommandError::Unavailable(_)) => "unavailable",
            Err(CommandError::Internal(_)) => "internal",
        };
        let labels = [("aggregate", A::TYPE), ("outcome", outcome)];
        metrics::counter!("tillstream_commands_total", &labels).increment(1);
        metrics::histogram!("tillstream_command_duration_seconds", &labels)
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn execute_untimed(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<u64, CommandError<A::Error>> {
        let mut context = self.store.load_aggregate(id).await.map_err(convert::<A>)?;
        let version = context.current_sequence as u64;
        let sink = cqrs_es::event_sink::EventSink::default();
        context
            .aggregate
            .handle(command, &self.services, &sink)
            .await
            .map_err(CommandError::Rejected)?;
        let events = sink.collect().await;
        if events.is_empty() {
            return Ok(version);
        }
        let committed = self
            .store
            .commit(events, context, metadata.to_map())
            .await
            .map_err(convert::<A>)?;
        Ok(committed.last().map_or(version, |e| e.sequence as u64))
    }
}

fn convert<A: Aggregate>(error: AggregateError<A::Error>) -> CommandError<A::Error> {
    match error {
        AggregateError::UserError(e) => CommandError::Rejected(e),
        AggregateError::AggregateConflict => CommandError::Conflict { aggregate: A::TYPE },
        AggregateError::DatabaseConnectionError(e) => CommandError::Unavailable(e.to_string()),
        other => {
            let message = other.to_string();
            // A pool that cannot hand out a connection is unavailability, not a bug.
            if message.contains("pool timed out") || message.contains("Connection refused") {
                CommandError::Unavailable(message)
            } else {
                CommandError::Internal(message)
            }
        }
    }
}
