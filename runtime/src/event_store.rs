//! The Postgres event store of a command service: postgres-es's `events` table with the
//! columns the relay reads by, and the command loop that writes to it.
//!
//! Commands run as: load the aggregate from its events, let it decide, commit the new
//! events with the next sequences and the idempotency record in one statement, or in one
//! transaction with the command's enlisted writes ([`CommandBus`]). A command creating an
//! aggregate under an id just made skips the load ([`CommandBus::execute_new`]), so it
//! costs one round trip.

use std::sync::{Arc, OnceLock};

use cqrs_es::persist::{PersistedEventStore, SerializedEvent};
use cqrs_es::{Aggregate, AggregateError, DomainEvent, EventStore};
use futures::future::BoxFuture;
use postgres_es::PostgresEventRepository;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use tillstream_events::{EventMetadata, upcast};
use tokio::sync::mpsc;

/// The Postgres channel on which commits of new events are announced (the relay listens).
pub const EVENTS_CHANNEL: &str = "tillstream_events";

/// Applies the event-store schema. Event-store migrations are numbered 1xxxx and a
/// service's own migrations 2xxxx; each migrator ignores the other's rows in the shared
/// `_sqlx_migrations` table.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    migrator().run(pool).await
}

/// The event-store migrations (for `migrate`, and for `tillstream doctor` to compare).
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("migrations/event_store");
    migrator.set_ignore_missing(true);
    migrator
}

/// Which of `migrator`'s migrations the database of `pool` has not applied (versions).
pub async fn missing_migrations(
    pool: &PgPool,
    migrator: &sqlx::migrate::Migrator,
) -> Result<Vec<i64>, sqlx::Error> {
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    Ok(migrator
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect())
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
    /// The idempotency key was used before by the same caller for a different request.
    #[error("idempotency key `{key}` was already used for a different request")]
    IdempotencyMismatch { key: String },
    /// An enlisted write hit a unique constraint (e.g. an email already registered).
    #[error("unique constraint `{constraint}` violated")]
    Unique { constraint: String },
    /// The store could not be reached; retrying with the same idempotency key is safe.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or corrupted data. Logged in full, shown to clients as internal.
    #[error("event store error: {0}")]
    Internal(String),
}

/// A write that commits or rolls back together with a command's events (an email
/// reservation, say). postgres-es commits in a transaction of its own, so the command bus
/// writes the events itself to be able to enlist such writes.
pub trait Enlisted: Send + Sync {
    fn write<'a>(&'a self, conn: &'a mut PgConnection) -> BoxFuture<'a, Result<(), sqlx::Error>>;
}

/// A command's idempotency key, scoped to its caller, with a digest of the request it
/// came with (so reusing a key for another request is detected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub caller: String,
    pub key: String,
    pub request_hash: String,
}

/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 200;

impl Idempotency {
    /// None when `key` is empty (the command is not idempotent). `request` is the request
    /// as it will be compared: encode it without its idempotency key.
    pub fn new(caller: &str, key: &str, request: &[u8]) -> Option<Self> {
        if key.is_empty() {
            return None;
        }
        let digest = Sha256::digest(request);
        Some(Idempotency {
            caller: caller.to_owned(),
            key: key.to_owned(),
            request_hash: digest.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }
}

/// The answer to a command: the aggregate, its version after the command, and whether
/// this is the recorded answer of an earlier identical command (nothing new was written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub id: String,
    pub version: u64,
    pub replayed: bool,
}

/// Reads outdated events through [`tillstream_events::upcast`] when cqrs-es loads an
/// aggregate.
struct StoreUpcaster;

impl cqrs_es::persist::EventUpcaster for StoreUpcaster {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        upcast::is_outdated(event_type, event_version)
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        event.event_version =
            upcast::upcast_stored(&event.event_type, &event.event_version, &mut event.payload);
        event
    }
}

/// Executes commands of aggregate `A` against the Postgres event store.
///
/// Loading goes through postgres-es (and so through cqrs-es's upcasters); committing is
/// done here, in one statement holding the events (with the next sequences) and the
/// idempotency record, inside one transaction with any [`Enlisted`] writes. Two commands racing on one aggregate
/// both insert the same `(aggregate_type, aggregate_id, sequence)`; the primary key lets
/// one win and the other gets [`CommandError::Conflict`]. Nothing is half-written: either
/// all of a command's rows commit or none do.
pub struct CommandBus<A: Aggregate> {
    pool: PgPool,
    store: PersistedEventStore<PostgresEventRepository, A>,
    services: A::Services,
    /// Wakes the task announcing commits on [`EVENTS_CHANNEL`]; started by the first commit.
    announcer: OnceLock<mpsc::Sender<()>>,
}

impl<A: Aggregate> CommandBus<A> {
    pub fn new(pool: PgPool, services: A::Services) -> Arc<Self> {
        let repo = PostgresEventRepository::new(pool.clone());
        Arc::new(CommandBus {
            pool,
            store: PersistedEventStore::new_event_store(repo)
                .with_upcasters(vec![Box::new(StoreUpcaster)]),
            services,
            announcer: OnceLock::new(),
        })
    }

    /// Has the relay told that events were committed, after the commit and outside its
    /// transaction (see [`announce_commits`]).
    fn announce_commit(&self) {
        let wake = self.announcer.get_or_init(|| {
            let (wake, woken) = mpsc::channel(1);
            tokio::spawn(announce_commits(self.pool.clone(), woken));
            wake
        });
        // A full channel means an announcement is already due, and it will come after
        // this commit too.
        let _ = wake.try_send(());
    }

    /// The event store's pool (for reads that bypass the aggregate, such as the audit trail).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Loads the current state of aggregate `id` (its default state when it has no events)
    /// and its version (the sequence of its last event, 0 for none).
    pub async fn load(&self, id: &str) -> Result<(A, u64), CommandError<A::Error>> {
        let context = self.store.load_aggregate(id).await.map_err(convert::<A>)?;
        Ok((context.aggregate, context.current_sequence as u64))
    }

    /// Runs `command` on aggregate `id` and commits its events with `metadata`, the
    /// idempotency record and `enlisted`, all in one transaction.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
        idempotency: Option<&Idempotency>,
        enlisted: Option<&dyn Enlisted>,
    ) -> Result<Committed, CommandError<A::Error>> {
        timed::<A>(self.execute_untimed(id, command, metadata, idempotency, enlisted)).await
    }

    /// Runs `command` on an aggregate whose id the caller has just made (a v7 UUID): it has
    /// no events, so none are loaded, and the events and idempotency record are committed
    /// in one statement. A retry under the same idempotency key (with a new id) finds the
    /// first answer when its record collides, and returns that instead.
    pub async fn execute_new(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
        idempotency: Option<&Idempotency>,
    ) -> Result<Committed, CommandError<A::Error>> {
        timed::<A>(self.execute_new_untimed(id, command, metadata, idempotency)).await
    }

    async fn execute_new_untimed(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
        idempotency: Option<&Idempotency>,
    ) -> Result<Committed, CommandError<A::Error>> {
        let sink = cqrs_es::event_sink::EventSink::default();
        A::default()
            .handle(command, &self.services, &sink)
            .await
            .map_err(CommandError::Rejected)?;
        let events = sink.collect().await;
        self.commit(id, 0, &events, metadata, idempotency, None)
            .await
    }

    /// Commits `events` after sequence `current` with the idempotency record: in one
    /// statement, or with `enlisted`'s writes in one transaction. When the idempotency
    /// record collides with an earlier one (a concurrent or retried command under the same
    /// key), nothing is written and the earlier answer is the answer.
    async fn commit(
        &self,
        id: &str,
        current: u64,
        events: &[A::Event],
        metadata: &EventMetadata,
        idempotency: Option<&Idempotency>,
        enlisted: Option<&dyn Enlisted>,
    ) -> Result<Committed, CommandError<A::Error>> {
        let appended = match enlisted {
            None => append::<A>(&self.pool, id, current, events, metadata, idempotency).await,
            Some(write) => {
                async {
                    let mut tx = self.pool.begin().await?;
                    append::<A>(&mut *tx, id, current, events, metadata, idempotency).await?;
                    write.write(&mut tx).await?;
                    tx.commit().await
                }
                .await
            }
        };
        match appended {
            Ok(()) => {
                self.announce_commit();
                Ok(Committed {
                    id: id.to_owned(),
                    version: current + events.len() as u64,
                    replayed: false,
                })
            }
            Err(error) if is_idempotency_collision(&error) => match idempotency {
                Some(idem) => self.recorded(idem).await?.ok_or_else(|| {
                    CommandError::Internal("idempotency record vanished".to_owned())
                }),
                None => Err(classify::<A>(error)),
            },
            Err(error) => Err(classify::<A>(error)),
        }
    }

    async fn execute_untimed(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
        idempotency: Option<&Idempotency>,
        enlisted: Option<&dyn Enlisted>,
    ) -> Result<Committed, CommandError<A::Error>> {
        if let Some(idem) = idempotency
            && let Some(earlier) = self.recorded(idem).await?
        {
            return Ok(earlier);
        }
        let mut context = self.store.load_aggregate(id).await.map_err(convert::<A>)?;
        let current = context.current_sequence as u64;
        let sink = cqrs_es::event_sink::EventSink::default();
        context
            .aggregate
            .handle(command, &self.services, &sink)
            .await
            .map_err(CommandError::Rejected)?;
        let events = sink.collect().await;

        self.commit(id, current, &events, metadata, idempotency, enlisted)
            .await
    }

    /// The recorded answer for `idem`, or None; a different request under the same key is
    /// [`CommandError::IdempotencyMismatch`].
    async fn recorded(
        &self,
        idem: &Idempotency,
    ) -> Result<Option<Committed>, CommandError<A::Error>> {
        let row: Option<(String, String, i64)> = sqlx::query_as(
            "SELECT request_hash, aggregate_id, version FROM idempotency_keys WHERE caller = $1 AND key = $2",
        )
        .bind(&idem.caller)
        .bind(&idem.key)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify::<A>)?;
        match row {
            None => Ok(None),
            Some((hash, _, _)) if hash != idem.request_hash => {
                Err(CommandError::IdempotencyMismatch {
                    key: idem.key.clone(),
                })
            }
            Some((_, id, version)) => Ok(Some(Committed {
                id,
                version: version as u64,
                replayed: true,
            })),
        }
    }
}

/// Sends one `NOTIFY` on [`EVENTS_CHANNEL`] per wake-up, until the bus is dropped. Wakes
/// that arrive while one is being sent are coalesced into the next, so every commit is
/// followed by a notification sent after it, and a busy service sends far fewer than one
/// per command.
///
/// The notification is its own statement because a transaction that notifies holds
/// PostgreSQL's cluster-wide notification lock across its commit's WAL flush: had each
/// command notified, durable commands could not share a flush (group commit), and
/// throughput would stop at one flush per command. A notification that fails to go out
/// costs latency only: the relay also looks every half second.
async fn announce_commits(pool: PgPool, mut woken: mpsc::Receiver<()>) {
    while woken.recv().await.is_some() {
        if let Err(error) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(EVENTS_CHANNEL)
            .execute(&pool)
            .await
        {
            tracing::debug!(%error, "commit not announced; the relay will find it when it next looks");
        }
    }
}

/// Appends `events` after sequence `current` with the idempotency record, in one
/// statement (one round trip, and one implicit transaction when `executor` is the pool).
/// The events take their `global_position`s in sequence order.
async fn append<'e, A: Aggregate>(
    executor: impl sqlx::PgExecutor<'e>,
    id: &str,
    current: u64,
    events: &[A::Event],
    metadata: &EventMetadata,
    idempotency: Option<&Idempotency>,
) -> Result<(), sqlx::Error> {
    let meta =
        serde_json::to_value(metadata.to_map()).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let mut sequences = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut versions = Vec::with_capacity(events.len());
    let mut payloads = Vec::with_capacity(events.len());
    for (offset, event) in events.iter().enumerate() {
        sequences.push((current + 1 + offset as u64) as i64);
        types.push(event.event_type());
        versions.push(event.event_version());
        payloads.push(serde_json::to_value(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?);
    }
    sqlx::query(
        "WITH appended AS ( \
           INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
           SELECT $1, $2, e.sequence, e.event_type, e.event_version, e.payload, $7 \
           FROM unnest($3::bigint[], $4::text[], $5::text[], $6::jsonb[]) \
             AS e(sequence, event_type, event_version, payload) \
           ORDER BY e.sequence \
         ) \
         INSERT INTO idempotency_keys (caller, key, request_hash, aggregate_id, version) \
         SELECT $8, $9, $10, $2, $11 WHERE $8::text IS NOT NULL",
    )
    .bind(A::TYPE)
    .bind(id)
    .bind(&sequences)
    .bind(&types)
    .bind(&versions)
    .bind(&payloads)
    .bind(&meta)
    .bind(idempotency.map(|i| i.caller.as_str()))
    .bind(idempotency.map(|i| i.key.as_str()))
    .bind(idempotency.map(|i| i.request_hash.as_str()))
    .bind((current + events.len() as u64) as i64)
    .execute(executor)
    .await?;
    Ok(())
}

/// Runs a command, counting its outcome and timing it.
async fn timed<A: Aggregate>(
    command: impl std::future::Future<Output = Result<Committed, CommandError<A::Error>>>,
) -> Result<Committed, CommandError<A::Error>> {
    let started = std::time::Instant::now();
    let result = command.await;
    let outcome = match &result {
        Ok(c) if c.replayed => "replayed",
        Ok(_) => "ok",
        Err(CommandError::Rejected(_)) => "rejected",
        Err(CommandError::Conflict { .. }) => "conflict",
        Err(CommandError::IdempotencyMismatch { .. } | CommandError::Unique { .. }) => "invalid",
        Err(CommandError::Unavailable(_)) => "unavailable",
        Err(CommandError::Internal(_)) => "internal",
    };
    let labels = [("aggregate", A::TYPE), ("outcome", outcome)];
    metrics::counter!("tillstream_commands_total", &labels).increment(1);
    metrics::histogram!("tillstream_command_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    result
}

/// Whether `error` is an idempotency record colliding with an earlier one (the same
/// caller and key).
fn is_idempotency_collision(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if db.code().as_deref() == Some("23505") && db.constraint() == Some("idempotency_keys_pkey"))
}

/// Sorts a database error into what a client can do about it.
fn classify<A: Aggregate>(error: sqlx::Error) -> CommandError<A::Error> {
    match &error {
        sqlx::Error::Database(db) => match (db.code().as_deref(), db.constraint()) {
            (Some("23505"), Some("events_pkey")) | (Some("40001" | "40P01"), _) => {
                CommandError::Conflict { aggregate: A::TYPE }
            }
            (Some("23505"), Some(constraint)) => CommandError::Unique {
                constraint: constraint.to_owned(),
            },
            // Connection-level failures reported by the server (admin shutdown, too many
            // connections, cannot connect now).
            (Some(code), _)
                if code.starts_with("08") || code.starts_with("57") || code == "53300" =>
            {
                CommandError::Unavailable(error.to_string())
            }
            _ => CommandError::Internal(error.to_string()),
        },
        // A connection that cannot be made or broke mid-conversation (a proxy that accepts
        // and closes answers the TLS request with garbage: a protocol error).
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed => CommandError::Unavailable(error.to_string()),
        _ => CommandError::Internal(error.to_string()),
    }
}

fn convert<A: Aggregate>(error: AggregateError<A::Error>) -> CommandError<A::Error> {
    match error {
        AggregateError::UserError(e) => CommandError::Rejected(e),
        AggregateError::AggregateConflict => CommandError::Conflict { aggregate: A::TYPE },
        AggregateError::DatabaseConnectionError(e) => CommandError::Unavailable(e.to_string()),
        AggregateError::UnexpectedError(e) => match e.downcast::<sqlx::Error>() {
            Ok(sqlx_error) => classify::<A>(*sqlx_error),
            Err(other) => CommandError::Internal(other.to_string()),
        },
        other => CommandError::Internal(other.to_string()),
    }
}
