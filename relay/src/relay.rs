//! The publish loop. See the crate documentation for the ordering argument.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::future::Future;
use tillstream_events::envelope::event_id;
use tillstream_events::{EventEnvelope, EventMetadata, Namespace, upcast, wire_payload};
use tillstream_runtime::Shutdown;
use tillstream_runtime::nats::ensure_streams;
use tillstream_runtime::postgres::{OwnConnection, STATEMENT_DEADLINE, within};
use tillstream_runtime::retry::Backoff;
use tillstream_runtime::{telemetry, trace_context};
use tracing::Instrument;

/// The Postgres channel on which command services announce their commits.
const CHANNEL: &str = tillstream_runtime::event_store::EVENTS_CHANNEL;
/// How long the relay sleeps without a notification before looking anyway (a NOTIFY can be
/// missed while the listener reconnects, and the horizon moves when unrelated transactions end).
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// The relay's session has the server probe its peer: a relay whose host died or was cut
/// off without closing the connection holds the lock (see [`Session`]) until the server
/// finds the peer gone, about 25 s with these (the system defaults take over two hours),
/// or 30 s after data it sent went unacknowledged.
const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("tcp_keepalives_idle", "10"),
    ("tcp_keepalives_interval", "5"),
    ("tcp_keepalives_count", "3"),
    ("tcp_user_timeout", "30000"),
];

/// The next batch after the relay's checkpoint (the start of the log without one), in one
/// statement. ORDER BY names the table's columns: the output column `txid` is text, and
/// sorting by it would put txid 100 before 99 (the checkpoint would then pass 99's rows,
/// which would never be published) and could not use the relay's index.
const NEXT_BATCH: &str = "\
    WITH checkpoint AS ( \
        SELECT txid, global_position FROM relay_checkpoints WHERE relay = $1 \
        UNION ALL SELECT '0'::xid8, 0 \
        ORDER BY 1 DESC, 2 DESC LIMIT 1) \
    SELECT batch.* FROM checkpoint CROSS JOIN LATERAL ( \
        SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, \
               metadata, global_position, txid::text AS txid, recorded_at \
        FROM events \
        WHERE (events.txid, events.global_position) > (checkpoint.txid, checkpoint.global_position) \
          AND events.txid < pg_snapshot_xmin(pg_current_snapshot()) \
        ORDER BY events.txid, events.global_position \
        LIMIT $2) AS batch";

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("event store: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("JetStream stream set-up: {0}")]
    Streams(#[from] tillstream_runtime::nats::NatsError),
    #[error("JetStream publish: {0}")]
    Publish(#[from] async_nats::jetstream::context::PublishError),
    #[error("event {0} cannot be encoded: {1}")]
    Encode(String, serde_json::Error),
}

/// One row of the event store, as the relay reads it.
#[derive(sqlx::FromRow)]
struct StoredEvent {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: serde_json::Value,
    metadata: sqlx::types::Json<HashMap<String, String>>,
    global_position: i64,
    txid: String,
    recorded_at: DateTime<Utc>,
}

impl StoredEvent {
    /// The envelope subscribers see: outdated payloads are upcast first, so the stream
    /// only ever carries current event versions.
    fn into_envelope(mut self) -> EventEnvelope {
        let sequence = u64::try_from(self.sequence).unwrap_or(0);
        self.event_version =
            upcast::upcast_stored(&self.event_type, &self.event_version, &mut self.payload);
        EventEnvelope {
            event_id: event_id(
                &self.aggregate_type,
                &self.aggregate_id,
                sequence,
                self.recorded_at,
            ),
            payload: wire_payload(&self.event_type, self.payload),
            metadata: EventMetadata::from_map(&self.metadata.0),
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            sequence,
            position: self.global_position,
            event_type: self.event_type,
            event_version: self.event_version,
            occurred_at: self.recorded_at,
        }
    }
}

/// Where the relay has published up to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Checkpoint {
    txid: String,
    position: i64,
}

pub struct Relay {
    pool: PgPool,
    js: jetstream::Context,
    namespace: Namespace,
    name: String,
    batch_size: i64,
    replicas: usize,
    /// When the backlog was last counted for the lag metric (see `publish_batch`).
    counted_at: std::sync::Mutex<Option<std::time::Instant>>,
    session: tokio::sync::Mutex<Session>,
}

/// The relay's own connection to the event store, and whether it leads on it.
///
/// One relay per checkpoint publishes at a time: the one whose session holds the
/// checkpoint's advisory lock. It keeps the lock from batch to batch (one statement to read
/// a batch, one to checkpoint it, where a lock per batch in a transaction on a pooled
/// connection cost eight round trips); a relay that finds it taken stands by and asks
/// again at its next look. The lock goes with the session: when the relay stops, fails
/// (it then closes its connection, so a standby can take over), or its connection breaks
/// (a dead peer within about 25 s: [`SESSION_SETTINGS`]). It needs a real session: a
/// pooler in transaction mode between the relay and Postgres (which `LISTEN` does not
/// survive either) would let two relays lead.
struct Session {
    connection: OwnConnection,
    /// When the connection on which this relay holds the lock was made.
    leading: Option<std::time::Instant>,
}

impl Relay {
    pub fn new(
        pool: PgPool,
        nats: async_nats::Client,
        namespace: Namespace,
        name: String,
        batch_size: i64,
        replicas: usize,
    ) -> Self {
        let mut js = jetstream::new(nats);
        js.set_timeout(Duration::from_secs(5));
        let session = tokio::sync::Mutex::new(Session {
            connection: OwnConnection::like(&pool, SESSION_SETTINGS),
            leading: None,
        });
        Relay {
            session,
            pool,
            js,
            namespace,
            name,
            batch_size: batch_size.max(1),
            replicas,
            counted_at: std::sync::Mutex::new(None),
        }
    }

    /// Whether the backlog may be counted again (every two seconds at most).
    fn due_for_count(&self) -> bool {
        let mut last = self.counted_at.lock().unwrap_or_else(|e| e.into_inner());
        let due = last.is_none_or(|at| at.elapsed() >= Duration::from_secs(2));
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    }

    /// Publishes until `shutdown` fires. Never returns early on errors: it logs each change
    /// between healthy and failing once, and retries with backoff.
    pub async fn run(self, shutdown: Shutdown) {
        let mut backoff = Backoff::default();
        let mut listener: Option<PgListener> = None;
        let mut streams_ready = false;
        let mut failing = false;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if listener.is_none() {
                listener = self.listen().await.ok();
            }
            let result = async {
                if !streams_ready {
                    ensure_streams(&self.js, &self.namespace, self.replicas).await?;
                    streams_ready = true;
                }
                self.publish_batch().await
            }
            .await;
            match result {
                Ok(published) => {
                    if failing {
                        tracing::info!(relay = %self.name, "relay recovered; publishing again");
                        failing = false;
                    }
                    backoff.reset();
                    if published as i64 >= self.batch_size {
                        continue; // more is waiting
                    }
                    self.wait_for_commit(&mut listener, &shutdown).await;
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(relay = %self.name, %error, "relay cannot publish; retrying with backoff");
                        failing = true;
                    } else {
                        tracing::debug!(relay = %self.name, %error, "relay still failing");
                    }
                    metrics::counter!("tillstream_relay_errors_total", "relay" => self.name.clone()).increment(1);
                    if matches!(error, RelayError::Postgres(_)) {
                        listener = None;
                    }
                    if matches!(error, RelayError::Streams(_)) {
                        streams_ready = false;
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
        // Closed rather than dropped, so the lock is free for a standby at once.
        self.session.lock().await.connection.close().await;
        tracing::info!(relay = %self.name, "relay stopped");
    }

    async fn listen(&self) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(listener)
    }

    async fn wait_for_commit(&self, listener: &mut Option<PgListener>, shutdown: &Shutdown) {
        let notified = async {
            match listener.as_mut() {
                Some(l) => {
                    if l.recv().await.is_err() {
                        *listener = None;
                    } else {
                        // One pass publishes every commit announced so far.
                        while l.next_buffered().is_some() {}
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = notified => {}
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }

    /// Publishes the next batch of final events and advances the checkpoint past them,
    /// if this relay leads (see [`Session`]). Returns how many were published. After a
    /// failure the relay gives up its connection, and so the lead.
    pub async fn publish_batch(&self) -> Result<usize, RelayError> {
        let mut session = self.session.lock().await;
        let published = self.publish_leading(&mut session).await;
        if published.is_err() {
            session.leading = None;
            session.connection.close().await;
        }
        published
    }

    async fn publish_leading(&self, session: &mut Session) -> Result<usize, RelayError> {
        let (connection, made) = session.connection.get().await?;
        if session.leading != Some(made) {
            let leads: bool = answered(
                sqlx::query_scalar(
                    "SELECT pg_try_advisory_lock(hashtext('tillstream-relay'), hashtext($1))",
                )
                .bind(&self.name)
                .fetch_one(&mut *connection),
            )
            .await?;
            if !leads {
                return Ok(0);
            }
            session.leading = Some(made);
        }
        let rows: Vec<StoredEvent> = answered(
            sqlx::query_as(NEXT_BATCH)
                .bind(&self.name)
                .bind(self.batch_size)
                .fetch_all(&mut *connection),
        )
        .await?;
        let Some(last) = rows.last() else {
            metrics::gauge!("tillstream_relay_lag_events", "relay" => self.name.clone()).set(0.0);
            return Ok(0);
        };
        let to = Checkpoint {
            txid: last.txid.clone(),
            position: last.global_position,
        };
        let count = rows.len();
        let oldest = rows.iter().map(|r| r.recorded_at).min();

        // Publishes are pipelined in waves holding at most one event per subject: the next
        // event of an aggregate is sent only after the previous one's ack. If the connection
        // drops mid-batch, a lost message can therefore never be overtaken by a later event
        // of the same aggregate; the retry republishes from the checkpoint and JetStream
        // drops what it already has.
        //
        // Wave k holds each aggregate's k-th event of the batch (the sort is stable, so
        // within a wave events keep their commit order): a batch costs as many round trips
        // as its busiest aggregate has events, not one per interleaving. Each aggregate's
        // events stay in order; events of different aggregates within one batch may be
        // published out of commit order, which no consumer may rely on across aggregates
        // anyway (every event store has its own relay).
        let mut rank: HashMap<(String, String), usize> = HashMap::new();
        let mut rows: Vec<(usize, StoredEvent)> = rows
            .into_iter()
            .map(|row| {
                let seen = rank
                    .entry((row.aggregate_type.clone(), row.aggregate_id.clone()))
                    .or_insert(0);
                *seen += 1;
                (*seen, row)
            })
            .collect();
        rows.sort_by_key(|(wave, _)| *wave);
        let mut wave: Vec<PublishAckFuture> = Vec::new();
        let mut wave_subjects: HashSet<String> = HashSet::new();
        let mut duplicates = 0u64;
        for (_, row) in rows {
            let envelope = row.into_envelope();
            let subject = self
                .namespace
                .event_subject(&envelope.aggregate_type, &envelope.aggregate_id);
            if wave_subjects.contains(&subject) {
                duplicates += settle(&mut wave).await?;
                wave_subjects.clear();
            }
            let body = serde_json::to_vec(&envelope)
                .map_err(|e| RelayError::Encode(envelope.message_id(), e))?;
            let mut message = PublishMessage::build()
                .payload(body.into())
                .message_id(envelope.message_id())
                .header("Tillstream-Event-Type", envelope.event_type.as_str())
                .header(
                    "Tillstream-Sequence",
                    envelope.sequence.to_string().as_str(),
                )
                .header(
                    "Tillstream-Correlation-Id",
                    envelope.metadata.correlation_id.as_str(),
                );
            // The event continues the trace of the command that wrote it: a publish span
            // under the command's span when spans are exported, and in either case a
            // `traceparent` header the projector (or any subscriber) continues from.
            let parent = match (&envelope.metadata.trace_id, &envelope.metadata.span_id) {
                (Some(trace), Some(span)) => trace_context::from_ids(trace, span),
                _ => None,
            };
            let span = if telemetry::exporting() {
                tracing::info_span!(
                    "relay.publish",
                    otel.kind = "producer",
                    messaging.system = "nats",
                    messaging.destination.name = %subject,
                    messaging.message.id = %envelope.message_id(),
                    correlation_id = %envelope.metadata.correlation_id,
                )
            } else {
                tracing::Span::none()
            };
            trace_context::continue_from(&span, parent.as_ref());
            if let Some(traceparent) = trace_context::outgoing(&span, parent.as_ref())
                .as_ref()
                .and_then(trace_context::format)
            {
                message = message.header(trace_context::TRACEPARENT, traceparent.as_str());
            }
            let ack = self
                .js
                .send_publish(subject.clone(), message)
                .instrument(span)
                .await?;
            wave.push(ack);
            wave_subjects.insert(subject);
        }
        duplicates += settle(&mut wave).await?;
        // Every event of the batch is in JetStream and the checkpoint does not say so yet:
        // a crash here republishes the batch (tests/faults.rs in the tillstream crate).
        tillstream_runtime::failpoint::point("relay.after_publish");

        // The checkpoint only moves forward, whatever another process did meanwhile.
        answered(
            sqlx::query(
                "INSERT INTO relay_checkpoints AS cp (relay, txid, global_position, published, updated_at) \
                 VALUES ($1, $2::text::xid8, $3, $4, now()) \
                 ON CONFLICT (relay) DO UPDATE SET txid = EXCLUDED.txid, global_position = EXCLUDED.global_position, \
                     published = cp.published + EXCLUDED.published, updated_at = now() \
                 WHERE (cp.txid, cp.global_position) < (EXCLUDED.txid, EXCLUDED.global_position)",
            )
            .bind(&self.name)
            .bind(&to.txid)
            .bind(to.position)
            .bind(count as i64)
            .execute(&mut *connection),
        )
        .await?;

        // Events still waiting: none when this batch drained the final ones. When a full
        // batch suggests a backlog they are counted (by the relay's index), but at most every
        // two seconds: counting after every batch would make draining a backlog of n events
        // cost O(n²).
        let waiting: Option<i64> = if (count as i64) < self.batch_size {
            Some(0)
        } else if self.due_for_count() {
            // Best effort: the batch is published and checkpointed whatever this says.
            sqlx::query_scalar(
                "SELECT count(*) FROM events WHERE (txid, global_position) > ($1::text::xid8, $2) \
                 AND txid < pg_snapshot_xmin(pg_current_snapshot())",
            )
            .bind(&to.txid)
            .bind(to.position)
            .fetch_one(&self.pool)
            .await
            .inspect_err(|error| tracing::debug!(%error, "relay backlog not counted"))
            .ok()
        } else {
            None
        };

        let labels = [("relay", self.name.clone())];
        if let Some(waiting) = waiting {
            metrics::gauge!("tillstream_relay_lag_events", &labels).set(waiting as f64);
        }
        metrics::counter!("tillstream_relay_published_total", &labels).increment(count as u64);
        metrics::counter!("tillstream_relay_republished_total", &labels).increment(duplicates);
        if let Some(oldest) = oldest {
            let lag = (Utc::now() - oldest).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::gauge!("tillstream_relay_lag_seconds", &labels).set(lag);
        }
        tracing::debug!(relay = %self.name, count, duplicates, "published batch");
        Ok(count)
    }
}

/// `statement`'s outcome, given up (with the connection) when the event store has not
/// answered within [`STATEMENT_DEADLINE`].
async fn answered<T>(
    statement: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    within(
        STATEMENT_DEADLINE,
        "the event store did not answer",
        statement,
    )
    .await
}

/// Awaits every ack of a wave; returns how many were duplicates JetStream dropped.
async fn settle(wave: &mut Vec<PublishAckFuture>) -> Result<u64, RelayError> {
    let mut duplicates = 0;
    for ack in wave.drain(..) {
        if ack.await?.duplicate {
            duplicates += 1;
        }
    }
    Ok(duplicates)
}
