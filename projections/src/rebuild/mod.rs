//! Blue-green rebuild of the read models from the start of the log.
//!
//! The live tables keep serving (and the live projector keeps applying) while a complete
//! copy is built beside them in a shadow schema; then, in one transaction, the copy is
//! brought up to the end of the stream and swapped in, and the old tables are dropped:
//!
//! 1. **Bulk.** The stream's last sequence is noted; an ordered consumer reads from the
//!    first message to it and every event is folded in memory ([`image::Image`]); each
//!    table is then written with `COPY` into the shadow schema (bare copies of the live
//!    tables), and the live tables' constraints and indexes are built on them.
//! 2. **Catch up.** Events that arrived meanwhile are applied to the shadow tables the way
//!    the projector applies them (per-aggregate checkpoint in the same transaction).
//! 3. **Swap.** One transaction locks the live tables (the checkpoint table first, the
//!    first thing every projector transaction touches, so the two cannot deadlock), applies
//!    the last few events up to the stream's end *at that moment* — so every event the live
//!    projector may already have applied is in the copy — moves the live tables out and the
//!    shadow tables in, and commits. Readers and the projector wait for that moment only;
//!    the projector then finds its next events in the new tables (those already folded are
//!    skipped as duplicates by the checkpoints).
//! 4. The old tables are dropped.
//!
//! A failure before the swap leaves the live tables untouched and drops the shadow.
//! `dead_letters` is not rebuilt: it is an operator's worklist, not a fold of the log.

mod image;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull::OrderedConfig};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use sqlx::{Connection, PgConnection, PgPool};
use tillstream_events::{EventEnvelope, Namespace};

pub use image::{Folded, Image};

use crate::projector::{ApplyOutcome, apply_in};
use crate::read_model::ApplyError;

/// The projections a rebuild knows: today one, `main`, holding every read-model table.
pub const PROJECTIONS: &[&str] = &[crate::read_model::PROJECTION];

/// The tables a rebuild replaces, the checkpoint table first (lock order).
const TABLES: &[&str] = &[
    "projection_checkpoints",
    "users",
    "orders",
    "order_items",
    "order_history",
    "user_order_stats",
];

/// Messages decoded per blocking task during the bulk phase, and chunks decoded ahead.
const DECODE_CHUNK: usize = 1024;
const DECODE_AHEAD: usize = 3;

/// Events applied per transaction while catching up.
const CATCH_UP_BATCH: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("unknown projection `{0}`; known: main")]
    UnknownProjection(String),
    #[error("read-model database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("read-model schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("JetStream: {0}")]
    Stream(String),
    #[error(
        "{count} event(s) of the log cannot be applied (first: {first}); the live read models are unchanged. \
         Fix or dead-letter them, or rebuild with --allow-unapplied to leave them out as the live projector does"
    )]
    Unapplied { count: u64, first: String },
    #[error("the stream ended at message {reached} before {expected}")]
    Truncated { reached: u64, expected: u64 },
}

fn stream_error(error: impl std::fmt::Display) -> RebuildError {
    RebuildError::Stream(error.to_string())
}

/// Where a rebuild is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading and folding the log: `done` of `total` stream messages.
    Reading,
    /// Writing the folded tables: `done` of `total` rows.
    Writing,
    /// Applying what arrived meanwhile and swapping: `done` of `total` messages.
    Swapping,
}

/// A progress report: called often, keep it cheap.
pub trait Progress: Sync {
    fn update(&self, phase: Phase, done: u64, total: u64);
}

/// Reports nothing.
pub struct Quiet;

impl Progress for Quiet {
    fn update(&self, _: Phase, _: u64, _: u64) {}
}

/// What a rebuild did.
#[derive(Debug, Clone, Default)]
pub struct RebuildReport {
    /// Stream messages read.
    pub messages: u64,
    /// Events now in the read models.
    pub applied: u64,
    /// Republished copies skipped.
    pub duplicates: u64,
    /// Messages left out (`--allow-unapplied`): not events, or not applicable.
    pub unapplied: u64,
    /// Time spent reading and folding the bulk of the log, and writing it.
    pub bulk: Duration,
    /// Events of the bulk phase per second (reading, folding and writing).
    pub bulk_events_per_second: f64,
    /// Time from the lock on the live tables to the commit of the swap.
    pub swap: Duration,
    pub total: Duration,
}

/// Rebuilds projection `name` in the read-model database behind `pool` from the EVENTS
/// stream of `namespace`.
pub async fn rebuild(
    pool: &PgPool,
    nats: async_nats::Client,
    namespace: &Namespace,
    name: &str,
    allow_unapplied: bool,
    progress: &dyn Progress,
) -> Result<RebuildReport, RebuildError> {
    if !PROJECTIONS.contains(&name) {
        return Err(RebuildError::UnknownProjection(name.to_owned()));
    }
    crate::migrate(pool).await?;
    let started = Instant::now();
    let shadow = format!("rebuild_{}", chrono::Utc::now().format("%Y%m%d%H%M%S%3f"));
    let mut conn = pool.acquire().await?.detach();
    let outcome = async {
        create_shadow(&mut conn, &shadow).await?;
        let mut log = Log::open(nats, namespace).await?;
        let mut report = RebuildReport::default();
        let mut tally = Tally::new(allow_unapplied);

        // 1. Bulk: messages are decoded in chunks on blocking threads (in order, a few
        // chunks ahead) while this task reads the stream and folds.
        let target = log.last_sequence().await?;
        let mut image = Image::default();
        let mut decoding = FuturesOrdered::new();
        let mut chunk = Vec::with_capacity(DECODE_CHUNK);
        loop {
            let reading = log.position < target;
            if reading {
                chunk.push(log.next_raw(target).await?);
            }
            if chunk.len() == DECODE_CHUNK || (!reading && !chunk.is_empty()) {
                let messages = std::mem::replace(&mut chunk, Vec::with_capacity(DECODE_CHUNK));
                decoding.push_back(tokio::task::spawn_blocking(move || {
                    messages
                        .into_iter()
                        .map(|(sequence, payload)| (sequence, image::decode(&payload)))
                        .collect::<Vec<_>>()
                }));
            }
            while decoding.len() > DECODE_AHEAD || (!reading && !decoding.is_empty()) {
                let Some(decoded) = decoding.next().await else {
                    break;
                };
                let decoded = decoded.map_err(|e| RebuildError::Stream(e.to_string()))?;
                let mut last = 0;
                for (sequence, event) in decoded {
                    let outcome =
                        event
                            .and_then(|event| image.fold(event))
                            .map(|folded| match folded {
                                Folded::Applied => ApplyOutcome::Applied,
                                Folded::Duplicate => ApplyOutcome::Duplicate,
                                Folded::Gap { expected } => ApplyOutcome::Gap { expected },
                            });
                    tally.count(sequence, outcome)?;
                    last = sequence;
                }
                progress.update(Phase::Reading, last, target);
            }
            if !reading && decoding.is_empty() {
                break;
            }
        }
        let rows = image.rows() as u64;
        let written = std::sync::atomic::AtomicU64::new(0);
        image
            .write(pool, &shadow, &|n| {
                let done = written.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
                progress.update(Phase::Writing, done, rows);
            })
            .await?;
        index_shadow(&mut conn, &shadow).await?;
        report.bulk = started.elapsed();
        report.bulk_events_per_second = target as f64 / report.bulk.as_secs_f64().max(1e-9);

        // 2. Catch up, without locks.
        let target = log.last_sequence().await?;
        while log.position < target {
            let mut tx = conn.begin().await?;
            let mut batch = 0;
            while log.position < target && batch < CATCH_UP_BATCH {
                let outcome = match log.next(target).await? {
                    Ok(envelope) => apply_in(&mut tx, &envelope).await,
                    Err(error) => Err(error),
                };
                tally.count(log.position, outcome)?;
                batch += 1;
            }
            tx.commit().await?;
            progress.update(Phase::Swapping, log.position, target);
        }

        // 3. Swap.
        let mut tx = conn.begin().await?;
        let live: Vec<String> = TABLES.iter().map(|t| format!("public.{t}")).collect();
        let locked_at = Instant::now();
        sqlx::query(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            live.join(", ")
        ))
        .execute(&mut *tx)
        .await?;
        let target = log.last_sequence().await?;
        while log.position < target {
            let outcome = match log.next(target).await? {
                Ok(envelope) => apply_in(&mut tx, &envelope).await,
                Err(error) => Err(error),
            };
            tally.count(log.position, outcome)?;
        }
        let retired = format!("{shadow}_retired");
        sqlx::query(&format!("CREATE SCHEMA {retired}"))
            .execute(&mut *tx)
            .await?;
        for table in TABLES {
            sqlx::query(&format!("ALTER TABLE public.{table} SET SCHEMA {retired}"))
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!("ALTER TABLE {shadow}.{table} SET SCHEMA public"))
                .execute(&mut *tx)
                .await?;
        }
        // Readers' caches hold rows of the tables just retired.
        crate::applied::notify_reset(&mut tx).await?;
        tx.commit().await?;
        report.swap = locked_at.elapsed();
        progress.update(Phase::Swapping, target, target);

        // 4. The old tables go.
        sqlx::query(&format!("DROP SCHEMA {retired} CASCADE"))
            .execute(&mut conn)
            .await?;
        report.messages = log.position;
        report.applied = tally.applied;
        report.duplicates = tally.duplicates;
        report.unapplied = tally.unapplied;
        Ok::<_, RebuildError>(report)
    }
    .await;
    // The shadow schema is empty after a swap and a half-built copy after a failure.
    let dropped = sqlx::query(&format!("DROP SCHEMA IF EXISTS {shadow} CASCADE"))
        .execute(&mut conn)
        .await;
    if let Err(error) = dropped {
        tracing::warn!(%error, schema = %shadow, "could not drop the rebuild's shadow schema; drop it by hand");
    }
    let mut report = outcome?;
    report.total = started.elapsed();
    Ok(report)
}

/// Creates the shadow schema with empty copies of the live tables (columns, types,
/// defaults, NOT NULL; no indexes or constraints yet, so the bulk load does not maintain
/// them row by row) and leaves `conn`'s search path on it.
async fn create_shadow(conn: &mut PgConnection, shadow: &str) -> Result<(), RebuildError> {
    sqlx::query(&format!("CREATE SCHEMA {shadow}"))
        .execute(&mut *conn)
        .await?;
    for table in TABLES {
        sqlx::query(&format!(
            "CREATE TABLE {shadow}.{table} (LIKE public.{table} INCLUDING DEFAULTS)"
        ))
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(&format!("SET search_path TO {shadow}"))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Gives the loaded shadow tables the live tables' constraints (primary keys first, then
/// foreign keys) and indexes, built once over the loaded rows.
async fn index_shadow(conn: &mut PgConnection, shadow: &str) -> Result<(), RebuildError> {
    let mut statements = Vec::new();
    let mut tx = conn.begin().await?;
    // Definitions are read with `public` on the path and pointed at the shadow tables.
    sqlx::query("SET LOCAL search_path TO public")
        .execute(&mut *tx)
        .await?;
    for table in TABLES {
        let constraints: Vec<(String, String)> = sqlx::query_as(
            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = ('public.' || $1)::regclass AND contype IN ('p', 'u', 'c', 'x') ORDER BY conname",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await?;
        for (name, definition) in constraints {
            statements.push(format!(
                "ALTER TABLE {shadow}.{table} ADD CONSTRAINT {name} {definition}"
            ));
        }
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i \
             WHERE i.indrelid = ('public.' || $1)::regclass \
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) \
             ORDER BY i.indexrelid",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await?;
        for definition in indexes {
            statements.push(
                definition
                    .replacen(
                        &format!(" ON public.{table} "),
                        &format!(" ON {shadow}.{table} "),
                        1,
                    )
                    .replacen(
                        &format!(" ON {table} "),
                        &format!(" ON {shadow}.{table} "),
                        1,
                    ),
            );
        }
    }
    for table in TABLES {
        let foreign: Vec<(String, String)> = sqlx::query_as(
            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = ('public.' || $1)::regclass AND contype = 'f' ORDER BY conname",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await?;
        for (name, definition) in foreign {
            let definition =
                definition.replace("REFERENCES public.", &format!("REFERENCES {shadow}."));
            statements.push(format!(
                "ALTER TABLE {shadow}.{table} ADD CONSTRAINT {name} {definition}"
            ));
        }
    }
    tx.commit().await?;
    for statement in statements {
        sqlx::query(&statement).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Counts outcomes and decides which failures stop the rebuild.
struct Tally {
    allow_unapplied: bool,
    applied: u64,
    duplicates: u64,
    unapplied: u64,
    first_unapplied: Option<String>,
}

impl Tally {
    fn new(allow_unapplied: bool) -> Self {
        Tally {
            allow_unapplied,
            applied: 0,
            duplicates: 0,
            unapplied: 0,
            first_unapplied: None,
        }
    }

    fn count(
        &mut self,
        position: u64,
        outcome: Result<ApplyOutcome, ApplyError>,
    ) -> Result<(), RebuildError> {
        let failure = match outcome {
            Ok(ApplyOutcome::Applied) => {
                self.applied += 1;
                return Ok(());
            }
            Ok(ApplyOutcome::Duplicate) => {
                self.duplicates += 1;
                return Ok(());
            }
            Ok(ApplyOutcome::Gap { expected }) => {
                format!(
                    "stream message {position}: sequence {expected} of its aggregate is missing"
                )
            }
            Err(ApplyError::Database(error)) => return Err(RebuildError::Database(error)),
            Err(error) => format!("stream message {position}: {error}"),
        };
        self.unapplied += 1;
        if self.allow_unapplied {
            tracing::warn!(failure, "left out of the rebuild");
            Ok(())
        } else {
            Err(RebuildError::Unapplied {
                count: self.unapplied,
                first: self.first_unapplied.get_or_insert(failure).clone(),
            })
        }
    }
}

/// The EVENTS stream read in order from its first message, by an ephemeral ordered consumer.
struct Log {
    stream: jetstream::stream::Stream,
    messages: jetstream::consumer::pull::Ordered,
    /// The stream sequence of the last message read (0 before the first).
    position: u64,
}

impl Log {
    async fn open(nats: async_nats::Client, namespace: &Namespace) -> Result<Self, RebuildError> {
        let js = jetstream::new(nats);
        let stream = js
            .get_stream(namespace.events_stream())
            .await
            .map_err(stream_error)?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: namespace.events_wildcard(),
                ..Default::default()
            })
            .await
            .map_err(stream_error)?;
        let messages = consumer.messages().await.map_err(stream_error)?;
        Ok(Log {
            stream,
            messages,
            position: 0,
        })
    }

    async fn last_sequence(&mut self) -> Result<u64, RebuildError> {
        let info = self.stream.info().await.map_err(stream_error)?;
        Ok(info.state.last_sequence)
    }

    /// The next message, decoded; the stream must still hold messages up to `target`.
    async fn next(
        &mut self,
        target: u64,
    ) -> Result<Result<EventEnvelope, ApplyError>, RebuildError> {
        let (_, payload) = self.next_raw(target).await?;
        Ok(serde_json::from_slice::<EventEnvelope>(&payload).map_err(ApplyError::Decode))
    }

    /// The next message's stream sequence and payload.
    async fn next_raw(&mut self, target: u64) -> Result<(u64, bytes::Bytes), RebuildError> {
        let message = tokio::time::timeout(Duration::from_secs(30), self.messages.next())
            .await
            .map_err(|_| RebuildError::Truncated {
                reached: self.position,
                expected: target,
            })?;
        let Some(message) = message else {
            return Err(RebuildError::Truncated {
                reached: self.position,
                expected: target,
            });
        };
        let message = message.map_err(stream_error)?;
        let sequence = message
            .info()
            .map(|i| i.stream_sequence)
            .map_err(stream_error)?;
        self.position = sequence;
        Ok((sequence, message.payload.clone()))
    }
}
