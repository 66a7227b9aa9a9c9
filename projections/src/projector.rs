//! The projector loop: a durable pull consumer on EVENTS; what has arrived is applied in
//! one transaction, with one statement per table ([`crate::batch`]) and each event's
//! per-aggregate checkpoint, or event by event under savepoints when that fails.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::StreamExt;
use sqlx::{Acquire, PgPool, Postgres, Transaction};
use tillstream_events::{EventEnvelope, Namespace};
use tillstream_runtime::Shutdown;
use tillstream_runtime::nats::{consumer_config, ensure_streams};
use tillstream_runtime::postgres::OwnConnection;
use tillstream_runtime::retry::Backoff;
use tillstream_runtime::{telemetry, trace_context};
use tracing::Instrument;

use crate::applied;
use crate::batch::{self, SetApplied};
use crate::read_model::{self, ApplyError, PROJECTION};

/// Most events applied in one transaction.
const MAX_BATCH: usize = 500;
/// How long a pull request stands at the server, and how often the server says it is
/// still there. Shorter than async-nats's defaults (30 s and 15 s): a pull lost with a
/// server that went away is replaced within seconds, not half a minute, and two missed
/// heartbeats end the stream so [`Projector::run`] consumes afresh.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
const PULL_HEARTBEAT: Duration = Duration::from_secs(1);
/// After a shutdown, the projector goes on applying what JetStream delivers until nothing
/// has arrived for `DRAIN_QUIET`, for at most `DRAIN_LIMIT`, and only then lets go of its
/// pull. A delivery dropped unacknowledged is handed out again only after the consumer's
/// ack wait (30 s), and the later events of its aggregate wait for it that long.
const DRAIN_QUIET: Duration = Duration::from_millis(100);
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// How many times JetStream has delivered `message` (1 the first time).
fn delivered(message: &jetstream::Message) -> u32 {
    message.info().map(|i| i.delivered).unwrap_or(1).max(1) as u32
}

/// How a projector retries an event it could not apply before dead-lettering it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Deliveries before the event goes to the dead letters. An event waiting for an
    /// earlier one of its aggregate gets more when needed, so that its retries outlast the
    /// consumer's ack wait twice over.
    pub max_deliveries: u32,
    /// Delay after the first failed delivery; it doubles with every further one.
    pub first_delay: Duration,
}

impl Default for RetryPolicy {
    /// Six deliveries over about a quarter of a minute (0.5 + 1 + 2 + 4 + 8 s of waiting);
    /// eight (63.5 s) for an event waiting for an earlier one, with the 30 s ack wait of
    /// `nats/streams.json`.
    fn default() -> Self {
        RetryPolicy {
            max_deliveries: 6,
            first_delay: Duration::from_millis(500),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, delivered: u32) -> Duration {
        self.first_delay
            .saturating_mul(1u32 << delivered.saturating_sub(1).min(10))
            .min(Duration::from_secs(60))
    }

    /// Deliveries before an event that waits for an earlier one of its aggregate is
    /// dead-lettered: at least `max_deliveries`, and enough that the delays between them
    /// add up to twice `ack_wait`. The earlier event may be out with a projector that died
    /// holding it, and JetStream hands it out again only once the ack wait has passed.
    fn deliveries_outlasting(&self, ack_wait: Duration) -> u32 {
        let span = ack_wait.saturating_mul(2);
        let (mut deliveries, mut waited) = (1, Duration::ZERO);
        // 64 deliveries at most: a zero first delay never adds up, and with delays capped
        // at 60 s an ack wait over ~28 minutes is not covered.
        while waited < span && deliveries < 64 {
            waited += self.delay(deliveries);
            deliveries += 1;
        }
        deliveries.max(self.max_deliveries)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error("JetStream: {0}")]
    Stream(String),
    #[error(transparent)]
    Streams(#[from] tillstream_runtime::nats::NatsError),
}

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Applied to the read models and checkpointed.
    Applied,
    /// Already applied before; nothing changed.
    Duplicate,
    /// An earlier event of the aggregate is missing; nothing changed.
    Gap { expected: u64 },
}

pub struct Projector {
    pool: PgPool,
    /// Where batches are applied: a connection of the projector's own, so a batch's
    /// transaction is not preceded and followed by a pool's pings (docs/performance.md,
    /// Fix 14). Its statements are planned for their actual values: the batch statements
    /// take arrays of any length, and a plan cached for a small table (or a short array)
    /// would keep scanning whole tables once they have grown.
    connection: tokio::sync::Mutex<OwnConnection>,
    js: jetstream::Context,
    namespace: Namespace,
    replicas: usize,
    retry: RetryPolicy,
}

impl Projector {
    pub fn new(
        pool: PgPool,
        nats: async_nats::Client,
        namespace: Namespace,
        replicas: usize,
    ) -> Self {
        Projector {
            connection: tokio::sync::Mutex::new(OwnConnection::like(
                &pool,
                &[("plan_cache_mode", "force_custom_plan")],
            )),
            pool,
            js: jetstream::new(nats),
            namespace,
            replicas,
            retry: RetryPolicy::default(),
        }
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Consumes until `shutdown` fires, reconnecting with backoff when NATS goes away.
    pub async fn run(self, shutdown: Shutdown) {
        let mut backoff = Backoff::default();
        loop {
            match self.consume(&shutdown, &mut backoff).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, "projector lost its consumer; reconnecting");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
        tracing::info!("projector stopped");
    }

    async fn consume(
        &self,
        shutdown: &Shutdown,
        backoff: &mut Backoff,
    ) -> Result<(), ProjectorError> {
        ensure_streams(&self.js, &self.namespace, self.replicas).await?;
        // The consumer is defined in nats/streams.json, with the streams.
        let (stream, config) = consumer_config(&self.namespace, "projector-main")?;
        let stream = self
            .js
            .get_stream(stream)
            .await
            .map_err(|e| ProjectorError::Stream(e.to_string()))?;
        let durable = config.durable_name.clone().unwrap_or_default();
        let consumer: jetstream::consumer::Consumer<pull::Config> = stream
            .get_or_create_consumer(&durable, config)
            .await
            .map_err(|e| ProjectorError::Stream(e.to_string()))?;
        // The server's ack wait (a test or an operator may have changed the file's), as it
        // is now: a change made later is seen once the projector consumes afresh.
        let ack_wait = consumer.cached_info().config.ack_wait;
        // Whatever has already arrived is applied together (up to MAX_BATCH events in one
        // transaction) when the projector is behind; when it is caught up, each event is
        // applied as soon as it arrives.
        let mut batches = consumer
            .stream()
            .max_messages_per_batch(MAX_BATCH)
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_HEARTBEAT)
            .messages()
            .await
            .map_err(|e| ProjectorError::Stream(e.to_string()))?
            .ready_chunks(MAX_BATCH);
        tracing::info!(consumer = %durable, "projector consuming");
        loop {
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                next = batches.next() => next,
            };
            let Some(batch) = next else {
                return Err(ProjectorError::Stream("message stream ended".to_owned()));
            };
            let mut messages = Vec::with_capacity(batch.len());
            let mut failure = None;
            for message in batch {
                match message {
                    Ok(message) => messages.push(message),
                    Err(e) => failure = Some(ProjectorError::Stream(e.to_string())),
                }
            }
            backoff.reset();
            self.handle_batch(messages, ack_wait).await;
            if let Some(error) = failure {
                return Err(error);
            }
        }
        self.drain(&mut batches, ack_wait).await;
        Ok(())
    }

    /// Applies what arrives after a shutdown until the stream has been quiet for
    /// [`DRAIN_QUIET`] (or [`DRAIN_LIMIT`] has passed), so that what was delivered before
    /// the pull is dropped is applied and acknowledged, not left to the ack wait.
    async fn drain<S>(&self, batches: &mut S, ack_wait: Duration)
    where
        S: futures::Stream<Item = Vec<Result<jetstream::Message, pull::MessagesError>>> + Unpin,
    {
        let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
        let mut applied = 0;
        loop {
            let quiet = (tokio::time::Instant::now() + DRAIN_QUIET).min(deadline);
            let Ok(Some(batch)) = tokio::time::timeout_at(quiet, batches.next()).await else {
                break;
            };
            let messages: Vec<_> = batch.into_iter().filter_map(Result::ok).collect();
            applied += messages.len();
            self.handle_batch(messages, ack_wait).await;
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    applied,
                    "projector still receiving after {DRAIN_LIMIT:?}; what is in flight is delivered again after the ack wait"
                );
                return;
            }
        }
        tracing::debug!(
            applied,
            "projector applied what it had been handed before stopping"
        );
    }

    /// Applies a batch in one transaction, and again with a savepoint per event when an
    /// event fails, so one event's failure does not undo the others. Acks go out after the
    /// commit. `ack_wait` is the consumer's.
    async fn handle_batch(&self, messages: Vec<jetstream::Message>, ack_wait: Duration) {
        if messages.is_empty() {
            return;
        }
        metrics::histogram!("tillstream_projection_batch_size", "projection" => PROJECTION)
            .record(messages.len() as f64);
        // JetStream tells each delivery how many messages wait behind it: the lag in events.
        if let Some(pending) = messages
            .last()
            .and_then(|m| m.info().ok())
            .map(|i| i.pending)
        {
            metrics::gauge!("tillstream_projection_lag_events", "projection" => PROJECTION)
                .set(pending as f64);
        }
        let mut decoded = Vec::with_capacity(messages.len());
        for message in messages {
            match serde_json::from_slice::<EventEnvelope>(&message.payload) {
                Ok(envelope) => decoded.push((message, envelope)),
                Err(error) => {
                    let delivered = delivered(&message);
                    self.dead_letter(
                        &message,
                        None,
                        &format!("not an event envelope: {error}"),
                        delivered,
                        self.retry.max_deliveries,
                    )
                    .await;
                }
            }
        }
        if decoded.is_empty() {
            return;
        }
        // One statement per table for the whole batch; if the database refuses one of them
        // (or another projector moved a checkpoint meanwhile), that transaction is dropped and
        // the batch is applied again with one savepoint per event, so the failure is the
        // failing event's alone.
        let committed = match self.apply_set_based(&decoded).await {
            Ok(Some(outcomes)) => Ok(Some(outcomes)),
            other => {
                match other {
                    Err(error) => {
                        tracing::debug!(%error, "batch refused as a whole; applying it event by event")
                    }
                    _ => tracing::debug!(
                        "another projector moved a checkpoint of the batch; applying it event by event"
                    ),
                }
                metrics::counter!("tillstream_projection_batch_fallbacks_total", "projection" => PROJECTION)
                    .increment(1);
                self.apply_batch(&decoded).await
            }
        };
        let outcomes = match committed {
            Ok(outcomes) => outcomes.unwrap_or_default(),
            Err(error) => {
                // Nothing of the batch is in the read models: every event is delivered again.
                tracing::warn!(%error, "read-model transaction failed; retrying the batch");
                for (message, _) in &decoded {
                    let delay = self.retry.delay(delivered(message));
                    self.acknowledge(message, AckKind::Nak(Some(delay))).await;
                }
                return;
            }
        };
        // The batch is in the read models and JetStream does not know: a crash here has the
        // batch redelivered, and skipped as duplicates (tests/faults.rs in the tillstream crate).
        // A batch that changed nothing is not that instant: after a restart, a first batch
        // can hold only events waiting for earlier ones that are still out with a dead
        // projector's deliveries.
        if outcomes
            .iter()
            .any(|outcome| matches!(outcome, Ok(ApplyOutcome::Applied)))
        {
            tillstream_runtime::failpoint::point("projector.before_ack");
        }
        for ((message, envelope), outcome) in decoded.iter().zip(outcomes) {
            self.settle(message, envelope, outcome, ack_wait).await;
        }
    }

    /// Applies `decoded` with one statement per table ([`batch`]) in one transaction and
    /// commits it: each event's outcome. `None` when the batch could not be applied that way
    /// (nothing is committed then).
    async fn apply_set_based(
        &self,
        decoded: &[(jetstream::Message, EventEnvelope)],
    ) -> Result<Option<Vec<Result<ApplyOutcome, ApplyError>>>, sqlx::Error> {
        let span = if telemetry::exporting() {
            tracing::info_span!(
                "projector.apply_batch",
                otel.kind = "consumer",
                messaging.system = "nats",
                messaging.batch.message_count = decoded.len(),
            )
        } else {
            tracing::Span::none()
        };
        // Each event's own trace shows it applied: a `projector.apply` span per event,
        // continuing the trace its `traceparent` header names, linked to the batch's span
        // and open while the batch is applied.
        let event_spans: Vec<tracing::Span> = decoded
            .iter()
            .map(|(message, envelope)| {
                let event_span = apply_span(message, envelope);
                event_span.follows_from(&span);
                event_span
            })
            .collect();
        let applied = async {
            let events: Vec<&EventEnvelope> = decoded.iter().map(|(_, e)| e).collect();
            let mut own = self.connection.lock().await;
            let applied = async {
                let mut tx = own.get().await?.0.begin().await?;
                match batch::apply(&mut tx, &events).await? {
                    SetApplied::Written(outcomes) => {
                        tx.commit().await?;
                        Ok(Some(outcomes))
                    }
                    SetApplied::Contended => Ok(None), // dropping `tx` rolls it back
                }
            }
            .await;
            own.check(&applied);
            applied
        }
        .instrument(span)
        .await;
        drop(event_spans);
        applied
    }

    /// Applies `decoded` in one transaction, each event under its own savepoint, and commits
    /// it: each event's outcome.
    async fn apply_batch(
        &self,
        decoded: &[(jetstream::Message, EventEnvelope)],
    ) -> Result<Option<Vec<Result<ApplyOutcome, ApplyError>>>, sqlx::Error> {
        let mut own = self.connection.lock().await;
        let applied = async {
            let mut outcomes = Vec::with_capacity(decoded.len());
            let mut tx = own.get().await?.0.begin().await?;
            for (message, envelope) in decoded {
                let span = apply_span(message, envelope);
                outcomes.push(apply_in(&mut tx, envelope).instrument(span).await);
            }
            let applied: Vec<(&str, &str, i64)> = decoded
                .iter()
                .zip(&outcomes)
                .filter(|(_, outcome)| matches!(outcome, Ok(ApplyOutcome::Applied)))
                .map(|((_, e), _)| {
                    (
                        e.aggregate_type.as_str(),
                        e.aggregate_id.as_str(),
                        e.sequence as i64,
                    )
                })
                .collect();
            applied::notify(&mut tx, &applied).await?;
            tx.commit().await?;
            Ok(Some(outcomes))
        }
        .await;
        own.check(&applied);
        applied
    }

    /// Acknowledges one event of a committed batch according to what happened to it.
    async fn settle(
        &self,
        message: &jetstream::Message,
        envelope: &EventEnvelope,
        outcome: Result<ApplyOutcome, ApplyError>,
        ack_wait: Duration,
    ) {
        let delivered = delivered(message);
        let mut deliveries = self.retry.max_deliveries;
        let failure = match outcome {
            Ok(ApplyOutcome::Applied) => {
                metrics::counter!("tillstream_projection_applied_total", "projection" => PROJECTION).increment(1);
                let lag = (chrono::Utc::now() - envelope.occurred_at)
                    .num_milliseconds()
                    .max(0) as f64
                    / 1000.0;
                metrics::gauge!("tillstream_projection_lag_seconds", "projection" => PROJECTION)
                    .set(lag);
                return self.acknowledge(message, AckKind::Ack).await;
            }
            Ok(ApplyOutcome::Duplicate) => {
                metrics::counter!("tillstream_projection_duplicates_total", "projection" => PROJECTION).increment(1);
                return self.acknowledge(message, AckKind::Ack).await;
            }
            Ok(ApplyOutcome::Gap { expected }) => {
                // The missing event may be out with a projector that died holding it: this
                // one waits until JetStream has handed that out again, unless it is a dead
                // letter already (then it will not come back by itself).
                if delivered >= deliveries && !self.waits_on_dead_letter(envelope, expected).await {
                    deliveries = self.retry.deliveries_outlasting(ack_wait);
                }
                format!("sequence {expected} has not been applied yet")
            }
            Err(ApplyError::Database(error)) => {
                // The read-model database is the problem, not the event: retry, never dead-letter.
                tracing::warn!(id = %envelope.message_id(), %error, "read-model database error; retrying");
                return self
                    .acknowledge(message, AckKind::Nak(Some(self.retry.delay(delivered))))
                    .await;
            }
            Err(error) => error.to_string(),
        };
        self.dead_letter(message, Some(envelope), &failure, delivered, deliveries)
            .await;
    }

    /// Whether an event `envelope` waits for (from sequence `expected` on) is a dead letter
    /// not yet re-driven. When that cannot be read, it is taken not to be (the event is
    /// retried). A dead letter that could not be decoded names no aggregate: the events
    /// behind it wait their full time.
    async fn waits_on_dead_letter(&self, envelope: &EventEnvelope, expected: u64) -> bool {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM dead_letters WHERE projection = $1 \
               AND aggregate_type = $2 AND aggregate_id = $3 \
               AND sequence >= $4 AND sequence < $5 AND redriven_at IS NULL)",
        )
        .bind(PROJECTION)
        .bind(&envelope.aggregate_type)
        .bind(&envelope.aggregate_id)
        .bind(expected as i64)
        .bind(envelope.sequence as i64)
        .fetch_one(&self.pool)
        .await
        .unwrap_or(false)
    }

    async fn acknowledge(&self, message: &jetstream::Message, kind: AckKind) {
        if let Err(error) = message.ack_with(kind).await {
            tracing::warn!(%error, "acknowledgement failed; the event will be redelivered and skipped");
        }
    }

    /// Retries a message that failed to apply with growing delays; after `deliveries` it
    /// is kept in `dead_letters` (and published on `events.dlq.<aggregate>.<id>`), and the
    /// consumer moves on without it.
    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        envelope: Option<&EventEnvelope>,
        failure: &str,
        delivered: u32,
        deliveries: u32,
    ) {
        if delivered < deliveries {
            tracing::debug!(subject = %message.subject, delivered, failure, "event not applied; retrying");
            return self
                .acknowledge(message, AckKind::Nak(Some(self.retry.delay(delivered))))
                .await;
        }
        let stream_sequence = message
            .info()
            .map(|i| i.stream_sequence as i64)
            .unwrap_or(0);
        let stored = sqlx::query(
            "INSERT INTO dead_letters (projection, subject, stream_sequence, aggregate_type, aggregate_id, sequence, \
                 event_type, error, deliveries, message) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (projection, stream_sequence) DO NOTHING",
        )
        .bind(PROJECTION)
        .bind(message.subject.as_str())
        .bind(stream_sequence)
        .bind(envelope.map(|e| e.aggregate_type.clone()))
        .bind(envelope.map(|e| e.aggregate_id.clone()))
        .bind(envelope.map(|e| e.sequence as i64))
        .bind(envelope.map(|e| e.event_type.clone()))
        .bind(failure)
        .bind(i64::from(delivered))
        .bind(message.payload.to_vec())
        .execute(&self.pool)
        .await;
        if let Err(error) = stored {
            // Not recorded, so not dropped: keep retrying until the table takes it.
            tracing::warn!(%error, "cannot record a dead letter; retrying the event");
            return self
                .acknowledge(message, AckKind::Nak(Some(self.retry.delay(delivered))))
                .await;
        }
        let subject = match envelope {
            Some(e) => self
                .namespace
                .dead_letter_subject(&e.aggregate_type, &e.aggregate_id),
            None => self
                .namespace
                .dead_letter_subject("unknown", &stream_sequence.to_string()),
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            "Tillstream-Error",
            failure
                .chars()
                .filter(|c| !c.is_control())
                .take(500)
                .collect::<String>()
                .as_str(),
        );
        headers.insert("Tillstream-Original-Subject", message.subject.as_str());
        if let Err(error) = self
            .js
            .publish_with_headers(subject, headers, message.payload.clone())
            .await
        {
            tracing::warn!(%error, "dead letter kept in the database but not published on the DLQ stream");
        }
        tracing::error!(subject = %message.subject, delivered, failure, "event dead-lettered; the projector moves on");
        metrics::counter!("tillstream_projection_dead_lettered_total", "projection" => PROJECTION)
            .increment(1);
        self.acknowledge(message, AckKind::Term).await;
    }

    /// Applies `event` exactly once: see the crate documentation.
    pub async fn apply(&self, event: &EventEnvelope) -> Result<ApplyOutcome, ApplyError> {
        let mut own = self.connection.lock().await;
        let outcome = async {
            let mut tx = own.get().await?.0.begin().await?;
            let outcome = apply_in(&mut tx, event).await?;
            if outcome == ApplyOutcome::Applied {
                let applied = (
                    event.aggregate_type.as_str(),
                    event.aggregate_id.as_str(),
                    event.sequence as i64,
                );
                applied::notify(&mut tx, &[applied]).await?;
            }
            tx.commit().await?;
            Ok(outcome)
        }
        .await;
        if let Err(ApplyError::Database(error)) = &outcome {
            own.failed(error);
        }
        outcome
    }
}

/// Applies `event` inside `tx`, under a savepoint: anything but [`ApplyOutcome::Applied`]
/// leaves `tx` as it was, so the other events of a batch are unaffected.
pub(crate) async fn apply_in(
    tx: &mut Transaction<'_, Postgres>,
    event: &EventEnvelope,
) -> Result<ApplyOutcome, ApplyError> {
    let mut savepoint = tx.begin().await?;
    if let Some(outcome) = claim(&mut savepoint, event).await? {
        savepoint.rollback().await?;
        return Ok(outcome);
    }
    match read_model::apply(&mut savepoint, event).await {
        Ok(()) => {
            savepoint.commit().await?;
            Ok(ApplyOutcome::Applied)
        }
        Err(error) => {
            savepoint.rollback().await?;
            Err(error)
        }
    }
}

/// Advances the aggregate's checkpoint to `event` when `event` is the next one: `None`.
/// Otherwise nothing changes and the answer says why (already applied, or an earlier event
/// is missing).
async fn claim(
    tx: &mut Transaction<'_, Postgres>,
    event: &EventEnvelope,
) -> Result<Option<ApplyOutcome>, ApplyError> {
    let sequence = event.sequence as i64;
    let claimed: Option<i64> = if sequence == 1 {
        sqlx::query_scalar(
            "INSERT INTO projection_checkpoints (projection, aggregate_type, aggregate_id, sequence) \
             VALUES ($1, $2, $3, 1) ON CONFLICT DO NOTHING RETURNING sequence",
        )
        .bind(PROJECTION)
        .bind(&event.aggregate_type)
        .bind(&event.aggregate_id)
        .fetch_optional(&mut **tx)
        .await?
    } else {
        sqlx::query_scalar(
            "UPDATE projection_checkpoints SET sequence = $4 \
             WHERE projection = $1 AND aggregate_type = $2 AND aggregate_id = $3 AND sequence = $4 - 1 \
             RETURNING sequence",
        )
        .bind(PROJECTION)
        .bind(&event.aggregate_type)
        .bind(&event.aggregate_id)
        .bind(sequence)
        .fetch_optional(&mut **tx)
        .await?
    };
    if claimed.is_some() {
        return Ok(None);
    }
    let current: Option<i64> = sqlx::query_scalar(
        "SELECT sequence FROM projection_checkpoints \
         WHERE projection = $1 AND aggregate_type = $2 AND aggregate_id = $3",
    )
    .bind(PROJECTION)
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .fetch_optional(&mut **tx)
    .await?;
    let current = current.unwrap_or(0);
    Ok(Some(if current >= sequence {
        ApplyOutcome::Duplicate
    } else {
        ApplyOutcome::Gap {
            expected: current as u64 + 1,
        }
    }))
}

/// The span of one event's application, continuing the trace its `traceparent` header
/// names (a disabled span when no traces are exported).
fn apply_span(message: &jetstream::Message, envelope: &EventEnvelope) -> tracing::Span {
    if !telemetry::exporting() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "projector.apply",
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.message.id = %envelope.message_id(),
        correlation_id = %envelope.metadata.correlation_id,
    );
    trace_context::continue_from(
        &span,
        trace_context::from_nats(message.headers.as_ref()).as_ref(),
    );
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_waiting_for_an_earlier_one_outlasts_the_ack_wait_twice() {
        let default = RetryPolicy::default();
        // 0.5 + 1 + 2 + 4 + 8 + 16 + 32 s = 63.5 s of waiting before the eighth delivery.
        assert_eq!(default.deliveries_outlasting(Duration::from_secs(30)), 8);
        // A short ack wait never gives fewer than max_deliveries.
        assert_eq!(default.deliveries_outlasting(Duration::from_secs(1)), 6);
        let fast = RetryPolicy {
            max_deliveries: 2,
            first_delay: Duration::from_millis(20),
        };
        // 20 ms doubling: 5.1 s of waiting after 8 delays, the first sum over 4 s.
        assert_eq!(fast.deliveries_outlasting(Duration::from_secs(2)), 9);
        let never = RetryPolicy {
            max_deliveries: 3,
            first_delay: Duration::ZERO,
        };
        assert_eq!(never.deliveries_outlasting(Duration::from_secs(30)), 64);
    }
}
