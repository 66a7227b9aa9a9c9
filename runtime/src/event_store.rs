//! The Postgres event store of a command service: postgres-es's `events` table with the
//! columns the relay reads by, and the command loop that writes to it.
//!
//! Commands run as: load the aggregate from its events, let it decide, commit the new
//! events with the next sequences and the idempotency record in one statement, or in one
//! transaction with the command's enlisted writes ([`CommandBus`]). A command creating an
//! aggregate under an id just made skips the load ([`CommandBus::execute_new`]), so it
//! costs one round trip. Commits without enlisted writes that are ready at the same time
//! share one statement ([`group_commits`]).

use std::sync::{Arc, OnceLock};

use cqrs_es::persist::{PersistedEventStore, SerializedEvent};
use cqrs_es::{Aggregate, AggregateError, DomainEvent, EventStore};
use futures::future::BoxFuture;
use postgres_es::PostgresEventRepository;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use tillstream_events::{EventMetadata, upcast};
use tokio::sync::{Semaphore, mpsc, oneshot};

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
    /// The queue of commits waiting to share a statement ([`group_commits`]); started by
    /// the first commit without enlisted writes.
    committer: OnceLock<mpsc::Sender<Pending>>,
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
            committer: OnceLock::new(),
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
    /// statement shared with other commands ready at the same time, or with `enlisted`'s
    /// writes in one transaction. When the idempotency record collides with an earlier one
    /// (a concurrent or retried command under the same key), nothing is written and the
    /// earlier answer is the answer.
    async fn commit(
        &self,
        id: &str,
        current: u64,
        events: &[A::Event],
        metadata: &EventMetadata,
        idempotency: Option<&Idempotency>,
        enlisted: Option<&dyn Enlisted>,
    ) -> Result<Committed, CommandError<A::Error>> {
        let rows = Rows::new(id, current, events, metadata, idempotency).map_err(classify::<A>)?;
        let appended = match enlisted {
            None => self.commit_grouped(rows).await?,
            Some(write) => {
                async {
                    let mut tx = self.pool.begin().await?;
                    append(&mut *tx, A::TYPE, &[&rows]).await?;
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

    /// Appends `rows` in a statement shared with the commits queued meanwhile; when that
    /// statement fails on something in the database, in one of its own. The outer error is
    /// a failure of the whole group that is not about any one command's rows.
    async fn commit_grouped(
        &self,
        rows: Rows,
    ) -> Result<Result<(), sqlx::Error>, CommandError<A::Error>> {
        let queue = self.committer.get_or_init(|| {
            let (queue, queued) = mpsc::channel(QUEUED_COMMITS);
            tokio::spawn(group_commits(self.pool.clone(), A::TYPE, queued));
            queue
        });
        let (reply, replied) = oneshot::channel();
        let stopped =
            || CommandError::Unavailable("the event store's committer stopped".to_owned());
        let _pending = PendingGauge::new(A::TYPE);
        queue
            .send(Pending { rows, reply })
            .await
            .map_err(|_| stopped())?;
        match replied.await.map_err(|_| stopped())? {
            Grouped::Written => Ok(Ok(())),
            Grouped::Failed(error) => Ok(Err(error)),
            Grouped::WriteAlone(rows) => Ok(append(&self.pool, A::TYPE, &[&rows]).await),
            Grouped::GroupFailed {
                unavailable: true,
                message,
            } => Err(CommandError::Unavailable(message)),
            Grouped::GroupFailed { message, .. } => Err(CommandError::Internal(message)),
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

/// Most commits one statement carries.
const MAX_GROUP: usize = 64;
/// Grouped statements in flight at once (of one command bus). Commits that arrive while
/// all are running wait, and go together in the next.
const GROUP_STATEMENTS: usize = 2;
/// Commits queued for a statement before callers wait to queue.
const QUEUED_COMMITS: usize = 1024;

/// One command's rows: its events after sequence `current`, and its idempotency record.
struct Rows {
    id: String,
    current: u64,
    types: Vec<String>,
    versions: Vec<String>,
    payloads: Vec<serde_json::Value>,
    metadata: serde_json::Value,
    idempotency: Option<Idempotency>,
}

impl Rows {
    fn new<E: DomainEvent>(
        id: &str,
        current: u64,
        events: &[E],
        metadata: &EventMetadata,
        idempotency: Option<&Idempotency>,
    ) -> Result<Self, sqlx::Error> {
        let encode = |e: serde_json::Error| sqlx::Error::Encode(Box::new(e));
        Ok(Rows {
            id: id.to_owned(),
            current,
            types: events.iter().map(DomainEvent::event_type).collect(),
            versions: events.iter().map(DomainEvent::event_version).collect(),
            payloads: events
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()
                .map_err(encode)?,
            metadata: serde_json::to_value(metadata.to_map()).map_err(encode)?,
            idempotency: idempotency.cloned(),
        })
    }

    /// The aggregate's version once these events are written.
    fn version(&self) -> i64 {
        (self.current + self.types.len() as u64) as i64
    }
}

/// Counts a commit in `tillstream_commits_pending` (handed to [`group_commits`], not yet
/// answered) for as long as it lives.
struct PendingGauge(metrics::Gauge);

impl PendingGauge {
    fn new(aggregate_type: &'static str) -> Self {
        let gauge = metrics::gauge!("tillstream_commits_pending", "aggregate" => aggregate_type);
        gauge.increment(1.0);
        PendingGauge(gauge)
    }
}

impl Drop for PendingGauge {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// A commit waiting in [`group_commits`]'s queue, and where its outcome goes.
struct Pending {
    rows: Rows,
    reply: oneshot::Sender<Grouped>,
}

/// What became of a queued commit.
enum Grouped {
    Written,
    /// Its statement (of this commit alone) failed.
    Failed(sqlx::Error),
    /// The group's statement was refused by the database for its rows (one commit's
    /// conflict rolls back all of them): nothing was written, and the commit is to be tried
    /// alone, where its own outcome shows.
    WriteAlone(Rows),
    /// The group's statement failed for a reason that is not any one commit's: the store
    /// could not be reached or used (the connection, the pool, a server shutting down), or
    /// something outside the database. The same failure for every commit of the group:
    /// whether the store is unavailable, and the error.
    GroupFailed {
        unavailable: bool,
        message: String,
    },
}

/// Writes queued commits, several to a statement: the first waits for one of
/// [`GROUP_STATEMENTS`] statements to be free and takes every commit queued by then along
/// (up to [`MAX_GROUP`]). A lone commit goes at once; under load, commits that arrive
/// while statements run share the next one, and so its round trip, its transaction and
/// its WAL flush. A group is one transaction: all of its commits are written or none.
async fn group_commits(
    pool: PgPool,
    aggregate_type: &'static str,
    mut queued: mpsc::Receiver<Pending>,
) {
    let statements = Arc::new(Semaphore::new(GROUP_STATEMENTS));
    while let Some(first) = queued.recv().await {
        let Ok(statement) = statements.clone().acquire_owned().await else {
            return;
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP
            && let Ok(next) = queued.try_recv()
        {
            group.push(next);
        }
        // A caller that gave up (timed out, disconnected) has had its answer: its commit is
        // not written behind its back.
        group.retain(|pending| !pending.reply.is_closed());
        if group.is_empty() {
            continue;
        }
        metrics::histogram!("tillstream_commit_group_size", "aggregate" => aggregate_type)
            .record(group.len() as f64);
        let pool = pool.clone();
        tokio::spawn(async move {
            let rows: Vec<&Rows> = group.iter().map(|p| &p.rows).collect();
            let written = append(&pool, aggregate_type, &rows).await;
            drop(statement);
            match written {
                Ok(()) => {
                    for pending in group {
                        let _ = pending.reply.send(Grouped::Written);
                    }
                }
                Err(error) if group.len() == 1 => {
                    if let Some(pending) = group.pop() {
                        let _ = pending.reply.send(Grouped::Failed(error));
                    }
                }
                Err(error @ sqlx::Error::Database(_)) if !is_unavailable(&error) => {
                    tracing::debug!(%error, commits = group.len(), "a grouped commit failed; each is tried alone");
                    for pending in group {
                        let _ = pending.reply.send(Grouped::WriteAlone(pending.rows));
                    }
                }
                Err(error) => {
                    let (unavailable, message) = (is_unavailable(&error), error.to_string());
                    for pending in group {
                        let _ = pending.reply.send(Grouped::GroupFailed {
                            unavailable,
                            message: message.clone(),
                        });
                    }
                }
            }
        });
    }
}

/// Appends the events and idempotency records of `commits` in one statement (one round
/// trip, and one implicit transaction when `executor` is the pool). The events take their
/// `global_position`s in order: commit by commit, each in sequence order.
async fn append<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    aggregate_type: &str,
    commits: &[&Rows],
) -> Result<(), sqlx::Error> {
    let events: usize = commits.iter().map(|c| c.types.len()).sum();
    let mut ids = Vec::with_capacity(events);
    let mut sequences = Vec::with_capacity(events);
    let mut types = Vec::with_capacity(events);
    let mut versions = Vec::with_capacity(events);
    let mut payloads = Vec::with_capacity(events);
    let mut metadata = Vec::with_capacity(events);
    let mut keys = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for commit in commits {
        for (offset, ((event_type, version), payload)) in commit
            .types
            .iter()
            .zip(&commit.versions)
            .zip(&commit.payloads)
            .enumerate()
        {
            ids.push(commit.id.as_str());
            sequences.push((commit.current + 1 + offset as u64) as i64);
            types.push(event_type.as_str());
            versions.push(version.as_str());
            payloads.push(payload);
            metadata.push(&commit.metadata);
        }
        if let Some(idem) = &commit.idempotency {
            keys.0.push(idem.caller.as_str());
            keys.1.push(idem.key.as_str());
            keys.2.push(idem.request_hash.as_str());
            keys.3.push(commit.id.as_str());
            keys.4.push(commit.version());
        }
    }
    sqlx::query(
        "WITH appended AS ( \
           INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
           SELECT $1, e.aggregate_id, e.sequence, e.event_type, e.event_version, e.payload, e.metadata \
           FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[]) \
             WITH ORDINALITY AS e(aggregate_id, sequence, event_type, event_version, payload, metadata, position) \
           ORDER BY e.position \
         ) \
         INSERT INTO idempotency_keys (caller, key, request_hash, aggregate_id, version) \
         SELECT * FROM unnest($8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[])",
    )
    .bind(aggregate_type)
    .bind(&ids)
    .bind(&sequences)
    .bind(&types)
    .bind(&versions)
    .bind(&payloads)
    .bind(&metadata)
    .bind(&keys.0)
    .bind(&keys.1)
    .bind(&keys.2)
    .bind(&keys.3)
    .bind(&keys.4)
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
    if is_unavailable(&error) {
        return CommandError::Unavailable(error.to_string());
    }
    match &error {
        sqlx::Error::Database(db) => match (db.code().as_deref(), db.constraint()) {
            (Some("23505"), Some("events_pkey")) | (Some("40001" | "40P01"), _) => {
                CommandError::Conflict { aggregate: A::TYPE }
            }
            (Some("23505"), Some(constraint)) => CommandError::Unique {
                constraint: constraint.to_owned(),
            },
            _ => CommandError::Internal(error.to_string()),
        },
        _ => CommandError::Internal(error.to_string()),
    }
}

/// Whether `error` says the database could not be reached or used, rather than anything
/// about the command.
fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        // Connection-level failures reported by the server (admin shutdown, too many
        // connections, cannot connect now).
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || code.starts_with("57") || code == "53300"
        }),
        // A connection that cannot be made or broke mid-conversation (a proxy that accepts
        // and closes answers the TLS request with garbage: a protocol error).
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed => true,
        _ => false,
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
