//! The projector loop: a durable pull consumer on EVENTS, one transaction per event.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::StreamExt;
use sqlx::PgPool;
use tillstream_events::{EventEnvelope, Namespace};
use tillstream_runtime::Shutdown;
use tillstream_runtime::nats::ensure_streams;
use tillstream_runtime::retry::Backoff;

use crate::read_model::{self, ApplyError, PROJECTION};

/// How long JetStream waits for an ack before redelivering.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// How a projector retries an event it could not apply before dead-lettering it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Deliveries before the event goes to the dead letters.
    pub max_deliveries: u32,
    /// Delay after the first failed delivery; it doubles with every further one.
    pub first_delay: Duration,
}

impl Default for RetryPolicy {
    /// Six deliveries over about half a minute (0.5 + 1 + 2 + 4 + 8 s of waiting).
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
        let stream = self
            .js
            .get_stream(self.namespace.events_stream())
            .await
            .map_err(|e| ProjectorError::Stream(e.to_string()))?;
        let durable = self.namespace.consumer("projector-main");
        let consumer: jetstream::consumer::Consumer<pull::Config> = stream
            .get_or_create_consumer(
                &durable,
                pull::Config {
                    durable_name: Some(durable.clone()),
                    filter_subject: self.namespace.events_wildcard(),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_ack_pending: 1000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| ProjectorError::Stream(e.to_string()))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| ProjectorError::Stream(e.to_string()))?;
        tracing::info!(consumer = %durable, "projector consuming");
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                next = messages.next() => next,
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(e)) => return Err(ProjectorError::Stream(e.to_string())),
                None => return Err(ProjectorError::Stream("message stream ended".to_owned())),
            };
            backoff.reset();
            self.handle(message).await;
        }
    }

    async fn handle(&self, message: jetstream::Message) {
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1).max(1) as u32;
        let envelope: EventEnvelope = match serde_json::from_slice(&message.payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                let failure = format!("not an event envelope: {error}");
                self.dead_letter(&message, None, &failure, delivered).await;
                return;
            }
        };
        let failure = match self.apply(&envelope).await {
            Ok(ApplyOutcome::Applied) => {
                metrics::counter!("tillstream_projection_applied_total", "projection" => PROJECTION).increment(1);
                let lag = (chrono::Utc::now() - envelope.occurred_at)
                    .num_milliseconds()
                    .max(0) as f64
                    / 1000.0;
                metrics::gauge!("tillstream_projection_lag_seconds", "projection" => PROJECTION)
                    .set(lag);
                return self.acknowledge(&message, AckKind::Ack).await;
            }
            Ok(ApplyOutcome::Duplicate) => {
                metrics::counter!("tillstream_projection_duplicates_total", "projection" => PROJECTION).increment(1);
                return self.acknowledge(&message, AckKind::Ack).await;
            }
            Ok(ApplyOutcome::Gap { expected }) => {
                format!("sequence {expected} has not been applied yet")
            }
            Err(ApplyError::Database(error)) => {
                // The read-model database is the problem, not the event: retry, never dead-letter.
                tracing::warn!(id = %envelope.message_id(), %error, "read-model database error; retrying");
                return self
                    .acknowledge(&message, AckKind::Nak(Some(self.retry.delay(delivered))))
                    .await;
            }
            Err(error) => error.to_string(),
        };
        self.dead_letter(&message, Some(&envelope), &failure, delivered)
            .await;
    }

    async fn acknowledge(&self, message: &jetstream::Message, kind: AckKind) {
        if let Err(error) = message.ack_with(kind).await {
            tracing::warn!(%error, "acknowledgement failed; the event will be redelivered and skipped");
        }
    }

    /// Retries a message that failed to apply with growing delays; after
    /// `max_deliveries` it is kept in `dead_letters` (and published on
    /// `events.dlq.<aggregate>.<id>`), and the consumer moves on without it.
    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        envelope: Option<&EventEnvelope>,
        failure: &str,
        delivered: u32,
    ) {
        if delivered < self.retry.max_deliveries {
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
        let sequence = event.sequence as i64;
        let mut tx = self.pool.begin().await?;
        let claimed: Option<i64> = if sequence == 1 {
            sqlx::query_scalar(
                "INSERT INTO projection_checkpoints (projection, aggregate_type, aggregate_id, sequence) \
                 VALUES ($1, $2, $3, 1) ON CONFLICT DO NOTHING RETURNING sequence",
            )
            .bind(PROJECTION)
            .bind(&event.aggregate_type)
            .bind(&event.aggregate_id)
            .fetch_optional(&mut *tx)
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
            .fetch_optional(&mut *tx)
            .await?
        };
        if claimed.is_none() {
            let current: Option<i64> = sqlx::query_scalar(
                "SELECT sequence FROM projection_checkpoints \
                 WHERE projection = $1 AND aggregate_type = $2 AND aggregate_id = $3",
            )
            .bind(PROJECTION)
            .bind(&event.aggregate_type)
            .bind(&event.aggregate_id)
            .fetch_optional(&mut *tx)
            .await?;
            tx.rollback().await?;
            let current = current.unwrap_or(0);
            return Ok(if current >= sequence {
                ApplyOutcome::Duplicate
            } else {
                ApplyOutcome::Gap {
                    expected: current as u64 + 1,
                }
            });
        }
        read_model::apply(&mut tx, event).await?;
        tx.commit().await?;
        Ok(ApplyOutcome::Applied)
    }
}
