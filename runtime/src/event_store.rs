//! The Postgres event store of a command service: postgres-es's `events` table with the
//! columns the relay reads by, and the command loop that writes to it.
//!
//! Commands run as: load the aggregate from its events, let it decide, commit the new
//! events with the next sequences and the idempotency record in one statement, or in one
//! transaction with the command's enlisted writes ([`CommandBus`]). A command creating an
//! aggregate under an id just made skips the load ([`CommandBus::execute_new`]), so it
//! costs one round trip. Commits without enlisted writes that are ready at the same time
//! share one statement ([`group_commits`]).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cqrs_es::persist::{PersistedEventStore, SerializedEvent};
use cqrs_es::{Aggregate, AggregateError, DomainEvent, EventStore};
use futures::future::BoxFuture;
use postgres_es::PostgresEventRepository;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use tillstream_events::{EventMetadata, upcast};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::postgres::{OwnConnection, STATEMENT_DEADLINE, is_fatal, is_unavailable, within};

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
            .send(Pending {
                rows,
                reply,
                queued_at: Instant::now(),
            })
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
///
/// Notifications are at least [`ANNOUNCE_SPACING`] apart: each one costs a backend of
/// this service, wakes the backend of every listening relay and the relay itself, which
/// then reads a batch and checkpoints it. With one per commit group, under PlaceOrder the
/// announcer's and the listener's backends used about 11 % of a core (docs/performance.md,
/// Fix 15).
async fn announce_commits(pool: PgPool, mut woken: mpsc::Receiver<()>) {
    // Its own connection: one round trip per notification instead of three (Fix 14).
    let mut own = OwnConnection::like(&pool, &[]);
    let mut last: Option<tokio::time::Instant> = None;
    while woken.recv().await.is_some() {
        if let Some(last) = last {
            tokio::time::sleep_until(last + ANNOUNCE_SPACING).await;
            // The commits that woke it meanwhile are announced by this notification too.
            while woken.try_recv().is_ok() {}
        }
        last = Some(tokio::time::Instant::now());
        let sent = match own.get().await {
            Ok((connection, _)) => {
                within(
                    STATEMENT_DEADLINE,
                    "the event store did not answer the notification",
                    sqlx::query("SELECT pg_notify($1, '')")
                        .bind(EVENTS_CHANNEL)
                        .execute(connection),
                )
                .await
            }
            Err(error) => Err(error),
        };
        own.check(&sent);
        if let Err(error) = sent {
            tracing::debug!(%error, "commit not announced; the relay will find it when it next looks");
        }
    }
}

/// The shortest time between two notifications of one bus: a commit within it of the last
/// one waits at most this long to be announced, and a busy service sends at most 500 a
/// second.
const ANNOUNCE_SPACING: Duration = Duration::from_millis(2);
/// Most commits one statement carries.
const MAX_GROUP: usize = 64;
/// Grouped statements in flight at once (of one command bus). Commits that arrive while
/// all are running wait, and go together in the next.
const GROUP_STATEMENTS: usize = 2;
/// Commits queued for a statement before callers wait to queue.
const QUEUED_COMMITS: usize = 1024;
/// How long a grouped statement may run on the server before it cancels it.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(25);
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
    queued_at: Instant,
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

/// The committer's own connections to the store ([`OwnConnection`]s, outside the bus's
/// pool), [`GROUP_STATEMENTS`] at most (its semaphore bounds them): no ping around each
/// statement (docs/performance.md, Fix 13). One that fails at the connection level is
/// dropped with every idle one (a restart breaks them all), so the next statement
/// connects afresh.
///
/// A statement runs at most [`STATEMENT_TIMEOUT`] on the server (then it is rolled back
/// there), and is given up at [`STATEMENT_DEADLINE`] here, with its connection, when the
/// server has gone silent.
struct Connections {
    /// Where and how to connect.
    pool: PgPool,
    statement_timeout: String,
    idle: Mutex<Vec<OwnConnection>>,
}

/// What became of a statement on the committer's connections, sorted once.
enum Outcome {
    Written,
    /// The database answered and refused the rows (a conflict, a constraint, a retried
    /// key): one commit's fault, perhaps; the connection is still good.
    Refused(sqlx::Error),
    /// No connection could be made (the store unreachable, or a login refused).
    NoConnection(sqlx::Error),
    /// The statement failed on its connection (broken, silent, or ended by the server):
    /// no commit's fault, and the connection is not kept.
    Broken(sqlx::Error),
}

impl Outcome {
    fn of(statement: Result<(), sqlx::Error>) -> Self {
        match statement {
            Ok(()) => Outcome::Written,
            Err(error @ sqlx::Error::Database(_))
                if !is_unavailable(&error) && !is_fatal(&error) =>
            {
                Outcome::Refused(error)
            }
            Err(error) => Outcome::Broken(error),
        }
    }
}

impl Connections {
    fn of(pool: &PgPool) -> Self {
        Connections {
            pool: pool.clone(),
            statement_timeout: format!("{}ms", STATEMENT_TIMEOUT.as_millis()),
            idle: Mutex::new(Vec::with_capacity(GROUP_STATEMENTS)),
        }
    }

    /// Appends `rows` in one statement on one of these connections.
    async fn append(&self, aggregate_type: &str, rows: &[&Rows]) -> Outcome {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut own = idle.unwrap_or_else(|| {
            OwnConnection::like(
                &self.pool,
                &[("statement_timeout", self.statement_timeout.as_str())],
            )
        });
        let connection = match own.get().await {
            Ok((connection, _)) => connection,
            Err(error) => return Outcome::NoConnection(error),
        };
        let statement = within(
            STATEMENT_DEADLINE,
            "the event store did not answer the statement",
            append(connection, aggregate_type, rows),
        )
        .await;
        let outcome = Outcome::of(statement);
        if let Ok(mut idle) = self.idle.lock() {
            match outcome {
                Outcome::Written | Outcome::Refused(_) => idle.push(own),
                Outcome::NoConnection(_) | Outcome::Broken(_) => idle.clear(),
            }
        }
        outcome
    }
}

/// Whether the store could be reached lately, for [`group_commits`]: the last time a
/// statement was answered, and the last time no connection could be made (with the error)
/// that is not older than an answer.
#[derive(Default)]
struct Reachability {
    answered: Option<Instant>,
    unreachable: Option<(Instant, String)>,
}

impl Reachability {
    fn answered(&mut self) {
        self.answered = Some(Instant::now());
        self.unreachable = None;
    }

    /// No connection could be made by an attempt begun at `began`; unless a statement
    /// was answered since then.
    fn unreachable(&mut self, began: Instant, error: &sqlx::Error) {
        if self.answered.is_none_or(|answered| answered < began) {
            self.unreachable = Some((Instant::now(), error.to_string()));
        }
    }
}

/// Writes queued commits, several to a statement: the first waits for one of
/// [`GROUP_STATEMENTS`] statements to be free and takes every commit queued by then along
/// (up to [`MAX_GROUP`]). A lone commit goes at once; under load, commits that arrive
/// while statements run share the next one, and so its round trip, its transaction and
/// its WAL flush. A group is one transaction: all of its commits are written or none.
///
/// When no connection can be made to the store (Postgres down or silent), the commits
/// that were already waiting get that answer at once instead of each waiting out a
/// connect timeout of its own in turn; commits queued after it try again.
async fn group_commits(
    pool: PgPool,
    aggregate_type: &'static str,
    mut queued: mpsc::Receiver<Pending>,
) {
    let statements = Arc::new(Semaphore::new(GROUP_STATEMENTS));
    let connections = Arc::new(Connections::of(&pool));
    let reachability = Arc::new(Mutex::new(Reachability::default()));
    while let Some(first) = queued.recv().await {
        let Ok(statement) = statements.clone().acquire_owned().await else {
            return;
        };
        let unreachable = reachability
            .lock()
            .ok()
            .and_then(|known| known.unreachable.clone());
        let mut group = Vec::new();
        let mut next = Some(first);
        while let Some(pending) = next.take() {
            match &unreachable {
                // A caller that gave up (timed out, disconnected) has had its answer: its
                // commit is not written behind its back.
                _ if pending.reply.is_closed() => {}
                Some((at, message)) if pending.queued_at < *at => {
                    let _ = pending.reply.send(Grouped::GroupFailed {
                        unavailable: true,
                        message: message.clone(),
                    });
                }
                _ => group.push(pending),
            }
            if group.len() < MAX_GROUP {
                next = queued.try_recv().ok();
            }
        }
        if group.is_empty() {
            continue;
        }
        metrics::histogram!("tillstream_commit_group_size", "aggregate" => aggregate_type)
            .record(group.len() as f64);
        let connections = connections.clone();
        let reachability = reachability.clone();
        tokio::spawn(async move {
            let rows: Vec<&Rows> = group.iter().map(|p| &p.rows).collect();
            let began = Instant::now();
            let outcome = connections.append(aggregate_type, &rows).await;
            if let Ok(mut known) = reachability.lock() {
                match &outcome {
                    Outcome::NoConnection(error) if is_unavailable(error) => {
                        known.unreachable(began, error);
                    }
                    Outcome::Written | Outcome::Refused(_) => known.answered(),
                    Outcome::NoConnection(_) | Outcome::Broken(_) => {}
                }
            }
            drop(statement);
            match outcome {
                Outcome::Written => {
                    for pending in group {
                        let _ = pending.reply.send(Grouped::Written);
                    }
                }
                Outcome::Refused(error) | Outcome::NoConnection(error) | Outcome::Broken(error)
                    if group.len() == 1 =>
                {
                    if let Some(pending) = group.pop() {
                        let _ = pending.reply.send(Grouped::Failed(error));
                    }
                }
                Outcome::Refused(error) => {
                    tracing::debug!(%error, commits = group.len(), "a grouped commit failed; each is tried alone");
                    metrics::counter!("tillstream_commit_groups_split_total", "aggregate" => aggregate_type)
                        .increment(1);
                    for pending in group {
                        let _ = pending.reply.send(Grouped::WriteAlone(pending.rows));
                    }
                }
                Outcome::NoConnection(error) | Outcome::Broken(error) => {
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

/// Appends the events and idempotency records of `commits` in one statement: one round
/// trip, and one transaction unless `executor` is in one already. The commits of a group
/// were ready at the same time, so none comes before another: the idempotency records
/// are inserted first (Postgres runs the unreferenced `WITH` insert after the main one),
/// in the order of their keys, then the events, in the order of their aggregates' ids,
/// each aggregate's in sequence order. Every statement so takes its row locks in one
/// order, and two groups racing on the same rows cannot deadlock.
async fn append<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    aggregate_type: &str,
    commits: &[&Rows],
) -> Result<(), sqlx::Error> {
    let mut commits = commits.to_vec();
    commits.sort_unstable_by(|a, b| (&a.id, a.current).cmp(&(&b.id, b.current)));
    let events: usize = commits.iter().map(|c| c.types.len()).sum();
    let mut ids = Vec::with_capacity(events);
    let mut sequences = Vec::with_capacity(events);
    let mut types = Vec::with_capacity(events);
    let mut versions = Vec::with_capacity(events);
    let mut payloads = Vec::with_capacity(events);
    let mut metadata = Vec::with_capacity(events);
    let mut records = Vec::new();
    for commit in &commits {
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
            records.push((idem, commit));
        }
    }
    records.sort_unstable_by(|(a, _), (b, _)| (&a.caller, &a.key).cmp(&(&b.caller, &b.key)));
    let mut keys = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (idem, commit) in records {
        keys.0.push(idem.caller.as_str());
        keys.1.push(idem.key.as_str());
        keys.2.push(idem.request_hash.as_str());
        keys.3.push(commit.id.as_str());
        keys.4.push(commit.version());
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
         SELECT k.caller, k.key, k.request_hash, k.aggregate_id, k.version \
         FROM unnest($8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[]) \
           WITH ORDINALITY AS k(caller, key, request_hash, aggregate_id, version, position) \
         ORDER BY k.position",
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cqrs_es::event_sink::EventSink;
    use serde::{Deserialize, Serialize};
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use tillstream_events::{Actor, EventMetadata};

    use super::*;

    /// An aggregate whose one command makes one event.
    #[derive(Default, Serialize, Deserialize)]
    struct Tally;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Counted;

    impl DomainEvent for Counted {
        fn event_type(&self) -> String {
            "Counted".to_owned()
        }
        fn event_version(&self) -> String {
            "1".to_owned()
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    struct Never;

    impl Aggregate for Tally {
        const TYPE: &'static str = "tally";
        type Command = ();
        type Event = Counted;
        type Error = Never;
        type Services = ();

        async fn handle(&mut self, _: (), _: &(), sink: &EventSink<Self>) -> Result<(), Never> {
            sink.write(Counted, self).await;
            Ok(())
        }

        fn apply(&mut self, _: Counted) {}
    }

    const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

    /// A command bus on a server that takes connections and never answers (a Postgres
    /// gone silent): every statement ends in the pool's acquire timeout.
    fn silent_store() -> (Arc<CommandBus<Tally>>, std::net::TcpListener) {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(PgConnectOptions::new().host("127.0.0.1").port(port));
        (CommandBus::new(pool, ()), silent)
    }

    async fn place(bus: &CommandBus<Tally>) -> Result<Committed, CommandError<Never>> {
        let id = uuid::Uuid::now_v7().to_string();
        let metadata = EventMetadata::new("test", Actor::anonymous());
        bus.execute_new(&id, (), &metadata, None).await
    }

    /// 300 commits queued behind two statements that wait out the acquire timeout: without
    /// sharing the failure, groups of 64 would take their turns (five statements, two at a
    /// time: three timeouts). With it, all are answered when the first two fail.
    #[tokio::test(start_paused = true)]
    async fn commits_waiting_when_the_store_is_found_unreachable_share_that_answer() {
        let (bus, _silent) = silent_store();
        let started = tokio::time::Instant::now();
        let answers = futures::future::join_all((0..300).map(|_| place(&bus))).await;
        let took = started.elapsed();
        for answer in answers {
            assert!(
                matches!(answer, Err(CommandError::Unavailable(_))),
                "{answer:?}"
            );
        }
        assert!(
            took < ACQUIRE_TIMEOUT * 2,
            "all answered after {took:?}, one acquire timeout being {ACQUIRE_TIMEOUT:?}"
        );

        // A commit queued after that failure tries the store again rather than taking the
        // old answer: it waits out a timeout of its own.
        let started = tokio::time::Instant::now();
        let answer = place(&bus).await;
        assert!(
            matches!(answer, Err(CommandError::Unavailable(_))),
            "{answer:?}"
        );
        assert!(
            started.elapsed() >= ACQUIRE_TIMEOUT,
            "{:?}",
            started.elapsed()
        );
    }
}
