//! Listing and re-driving dead letters.
//!
//! Re-driving applies each waiting dead letter again, aggregate by aggregate in sequence
//! order (so a dead-lettered event and the later events that waited behind it go back in
//! the right order), through the same exactly-once path as the live projector.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tillstream_events::EventEnvelope;

use crate::read_model::PROJECTION;
use crate::{ApplyOutcome, Projector};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetter {
    pub id: i64,
    pub subject: String,
    pub stream_sequence: i64,
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    pub sequence: Option<i64>,
    pub event_type: Option<String>,
    pub error: String,
    pub deliveries: i64,
    pub dead_at: DateTime<Utc>,
}

/// Dead letters not yet re-driven, oldest first.
pub async fn waiting(pool: &PgPool) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, subject, stream_sequence, aggregate_type, aggregate_id, sequence, event_type, error, deliveries, dead_at \
         FROM dead_letters WHERE projection = $1 AND redriven_at IS NULL ORDER BY id",
    )
    .bind(PROJECTION)
    .fetch_all(pool)
    .await
}

/// What a re-drive did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Redrive {
    /// Applied now.
    pub applied: usize,
    /// Had been applied meanwhile; nothing to do.
    pub already_applied: usize,
    /// Still failing (or still waiting on an earlier event): kept, with the new error.
    pub still_failing: usize,
}

/// Re-drives the waiting dead letters (only `only` when given).
pub async fn redrive(
    projector: &Projector,
    pool: &PgPool,
    only: Option<i64>,
) -> Result<Redrive, sqlx::Error> {
    let letters: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT id, message FROM dead_letters \
         WHERE projection = $1 AND redriven_at IS NULL AND ($2::bigint IS NULL OR id = $2) \
         ORDER BY aggregate_type, aggregate_id, sequence, id",
    )
    .bind(PROJECTION)
    .bind(only)
    .fetch_all(pool)
    .await?;
    let mut report = Redrive::default();
    for (id, message) in letters {
        let outcome = match serde_json::from_slice::<EventEnvelope>(&message) {
            Ok(envelope) => projector.apply(&envelope).await.map_err(|e| e.to_string()),
            Err(error) => Err(format!("not an event envelope: {error}")),
        };
        let error = match outcome {
            Ok(ApplyOutcome::Applied) => {
                report.applied += 1;
                None
            }
            Ok(ApplyOutcome::Duplicate) => {
                report.already_applied += 1;
                None
            }
            Ok(ApplyOutcome::Gap { expected }) => {
                Some(format!("sequence {expected} has not been applied yet"))
            }
            Err(error) => Some(error),
        };
        match error {
            None => {
                sqlx::query("UPDATE dead_letters SET redriven_at = now() WHERE id = $1")
                    .bind(id)
                    .execute(pool)
                    .await?;
            }
            Some(error) => {
                report.still_failing += 1;
                sqlx::query("UPDATE dead_letters SET error = $2 WHERE id = $1")
                    .bind(id)
                    .bind(error)
                    .execute(pool)
                    .await?;
            }
        }
    }
    Ok(report)
}
