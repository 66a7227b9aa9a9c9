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
/// Delay before a message that found a gap, or a database error, is delivered again.
const RETRY_DELAY: Duration = Duration::from_millis(200);
/// Delay before an event that failed to apply is delivered again.
const POISON_RETRY_DELAY: Duration = Duration::from_secs(30);

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
        }
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
        let envelope: EventEnvelope = match serde_json::from_slice(&message.payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                tracing::error!(subject = %message.subject, %error, "undecodable message on the events stream; terminated");
                metrics::counter!("tillstream_projection_poison_total", "projection" => PROJECTION)
                    .increment(1);
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        let ack = match self.apply(&envelope).await {
            Ok(ApplyOutcome::Applied) => {
                metrics::counter!("tillstream_projection_applied_total", "projection" => PROJECTION).increment(1);
                let lag = (chrono::Utc::now() - envelope.occurred_at)
                    .num_milliseconds()
                    .max(0) as f64
                    / 1000.0;
                metrics::gauge!("tillstream_projection_lag_seconds", "projection" => PROJECTION)
                    .set(lag);
                AckKind::Ack
            }
            Ok(ApplyOutcome::Duplicate) => {
                metrics::counter!("tillstream_projection_duplicates_total", "projection" => PROJECTION).increment(1);
                AckKind::Ack
            }
            Ok(ApplyOutcome::Gap { expected }) => {
                tracing::debug!(id = %envelope.message_id(), expected, "gap before event; retrying later");
                AckKind::Nak(Some(RETRY_DELAY))
            }
            Err(ApplyError::Database(error)) => {
                tracing::warn!(id = %envelope.message_id(), %error, "read-model database error; retrying later");
                AckKind::Nak(Some(RETRY_DELAY))
            }
            Err(error) => {
                // An event this projector cannot apply (often a newer event type than it
                // knows) is retried slowly instead of dropped, so upgrading the projector
                // recovers it; its aggregate waits meanwhile and the error is counted.
                let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
                if delivered == 1 || delivered % 10 == 0 {
                    tracing::error!(id = %envelope.message_id(), delivered, %error, "event cannot be projected; retrying slowly");
                }
                metrics::counter!("tillstream_projection_poison_total", "projection" => PROJECTION)
                    .increment(1);
                AckKind::Nak(Some(POISON_RETRY_DELAY))
            }
        };
        if let Err(error) = message.ack_with(ack).await {
            tracing::warn!(%error, "acknowledgement failed; the event will be redelivered and skipped");
        }
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
