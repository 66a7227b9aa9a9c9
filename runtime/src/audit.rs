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

/// `GetAuditTrail` of the command services: for admins only, the history of aggregate
/// `request.id` of type `A` as of the version or time asked, with the state after each
/// event; NOT_FOUND when it has no events.
pub async fn grpc_trail<A: Aggregate>(
    pool: &PgPool,
    caller: &crate::grpc::Caller,
    request: tillstream_proto::audit::v1::GetAuditTrailRequest,
) -> Result<tillstream_proto::audit::v1::AuditTrail, tonic::Status> {
    use tillstream_proto::audit::v1 as pb;
    if caller.role != tillstream_events::Role::Admin {
        return Err(tonic::Status::permission_denied(
            "the audit trail is for admins",
        ));
    }
    let id = crate::grpc::uuid_field("id", &request.id)?;
    let time = match request.as_of.trim() {
        "" => None,
        raw => Some(
            DateTime::parse_from_rfc3339(raw)
                .map_err(|_| crate::grpc::invalid_field("as_of", "must be an RFC 3339 time"))?
                .with_timezone(&Utc),
        ),
    };
    let as_of = AsOf {
        version: (request.as_of_version > 0).then_some(request.as_of_version),
        time,
    };
    let steps = history::<A>(pool, &id, as_of)
        .await
        .map_err(|error| match error {
            AuditError::Database(e) => {
                tracing::warn!(error = %e, "audit trail: event store unavailable");
                tonic::Status::unavailable("event store unavailable")
            }
            decode @ AuditError::Decode { .. } => tonic::Status::data_loss(decode.to_string()),
        })?;
    if steps.is_empty() {
        return Err(tonic::Status::not_found(format!(
            "{} {id} has no events{}",
            A::TYPE,
            if request.as_of_version > 0 || !request.as_of.is_empty() {
                " as of that point"
            } else {
                ""
            }
        )));
    }
    Ok(pb::AuditTrail {
        aggregate_type: A::TYPE.to_owned(),
        id,
        steps: steps
            .into_iter()
            .map(|step| pb::AuditStep {
                sequence: step.sequence,
                event_type: step.event_type,
                event_version: step.event_version,
                recorded_at: step.recorded_at.to_rfc3339(),
                actor_id: step.metadata.actor.id.unwrap_or_default(),
                actor_role: step
                    .metadata
                    .actor
                    .role
                    .map(|r| r.as_str().to_owned())
                    .unwrap_or_default(),
                correlation_id: step.metadata.correlation_id,
                causation_id: step.metadata.causation_id.unwrap_or_default(),
                payload_json: step.payload.to_string(),
                state_json: step.state.to_string(),
            })
            .collect(),
    })
}
