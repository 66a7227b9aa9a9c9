//! The audit view of one aggregate, straight from the event store: every event with its
//! metadata and the aggregate's state after it, optionally only up to a version or a time.
//! It needs neither JetStream nor the read models, so it answers even when those were lost.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use serde::Serialize;
use sqlx::PgPool;
use tillstream_events::{EventMetadata, upcast, wire_payload};

/// How far to replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AsOf {
    /// Only events up to this sequence.
    pub version: Option<u64>,
    /// Only events recorded at or before this time.
    pub time: Option<DateTime<Utc>>,
}

/// One event and what the aggregate looked like after it.
#[derive(Debug, Clone, Serialize)]
pub struct AuditStep {
    pub sequence: u64,
    pub event_type: String,
    pub event_version: String,
    pub recorded_at: DateTime<Utc>,
    pub metadata: EventMetadata,
    pub payload: serde_json::Value,
    pub state: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("event store: {0}")]
    Database(#[from] sqlx::Error),
    #[error("event {sequence} of {aggregate} does not decode: {source}")]
    Decode {
        aggregate: String,
        sequence: i64,
        #[source]
        source: serde_json::Error,
    },
}

type Row = (
    i64,
    String,
    String,
    serde_json::Value,
    sqlx::types::Json<HashMap<String, String>>,
    DateTime<Utc>,
);

/// Replays aggregate `id` of type `A` from the event store up to `as_of`.
pub async fn history<A: Aggregate>(
    pool: &PgPool,
    id: &str,
    as_of: AsOf,
) -> Result<Vec<AuditStep>, AuditError> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT sequence, event_type, event_version, payload, metadata, recorded_at FROM events \
         WHERE aggregate_type = $1 AND aggregate_id = $2 \
           AND ($3::bigint IS NULL OR sequence <= $3) AND ($4::timestamptz IS NULL OR recorded_at <= $4) \
         ORDER BY sequence",
    )
    .bind(A::TYPE)
    .bind(id)
    .bind(as_of.version.map(|v| v as i64))
    .bind(as_of.time)
    .fetch_all(pool)
    .await?;
    let mut aggregate = A::default();
    let mut steps = Vec::with_capacity(rows.len());
    for (sequence, event_type, event_version, mut payload, metadata, recorded_at) in rows {
        // The step shows the event as it is read today (upcast), with the version stored.
        upcast::upcast_stored(&event_type, &event_version, &mut payload);
        let event: A::Event =
            serde_json::from_value(payload.clone()).map_err(|source| AuditError::Decode {
                aggregate: format!("{}:{id}", A::TYPE),
                sequence,
                source,
            })?;
        aggregate.apply(event);
        steps.push(AuditStep {
            sequence: sequence as u64,
            payload: wire_payload(&event_type, payload),
            event_type,
            event_version,
            recorded_at,
            metadata: EventMetadata::from_map(&metadata.0),
            state: serde_json::to_value(&aggregate).unwrap_or(serde_json::Value::Null),
        });
    }
    Ok(steps)
}
