//! The envelope every event travels in on JetStream (`shared/API.md`, "Streams").

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::metadata::EventMetadata;

/// One committed event, as published on `events.<aggregate>.<id>`.
///
/// `sequence` is the aggregate's own gapless counter (from 1): consumers apply an aggregate's
/// events in sequence order and skip any sequence they have already applied. `position` is
/// the event's place in the store's commit-ordered log, useful for audits; it is increasing
/// but not gapless.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EventEnvelope {
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: u64,
    pub position: i64,
    pub event_type: String,
    pub event_version: String,
    pub occurred_at: DateTime<Utc>,
    pub payload: Value,
    pub metadata: EventMetadata,
}

impl EventEnvelope {
    /// The `Nats-Msg-Id` of this event: `<aggregate>:<id>:<sequence>`. JetStream drops a
    /// second publish with the same id inside the stream's dedupe window.
    pub fn message_id(&self) -> String {
        message_id(&self.aggregate_type, &self.aggregate_id, self.sequence)
    }

    /// Decodes the payload into the aggregate's event enum.
    pub fn decode<E: DeserializeOwned>(&self) -> Result<E, serde_json::Error> {
        decode(&self.event_type, self.payload.clone())
    }
}

/// `<aggregate>:<id>:<sequence>`, the dedupe key of one event.
pub fn message_id(aggregate_type: &str, aggregate_id: &str, sequence: u64) -> String {
    format!("{aggregate_type}:{aggregate_id}:{sequence}")
}

/// A stable UUIDv7 for an event: its time part is when the event was recorded, and its
/// random part is derived from `<aggregate>:<id>:<sequence>`, so republishing the same
/// event after a crash carries the same id.
pub fn event_id(
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: u64,
    recorded_at: DateTime<Utc>,
) -> Uuid {
    let name = message_id(aggregate_type, aggregate_id, sequence);
    let digest = Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes());
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest.as_bytes()[..10]);
    let millis = u64::try_from(recorded_at.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

/// Turns a stored payload (`{"OrderPlaced": {...}}`) into the wire payload (`{...}`).
/// A payload of any other shape is passed through unchanged.
pub fn wire_payload(event_type: &str, stored: Value) -> Value {
    match stored {
        Value::Object(mut map) if map.len() == 1 && map.contains_key(event_type) => {
            map.remove(event_type).unwrap_or(Value::Null)
        }
        other => other,
    }
}

/// Decodes a wire payload of type `event_type` into an aggregate's event enum.
pub fn decode<E: DeserializeOwned>(
    event_type: &str,
    payload: Value,
) -> Result<E, serde_json::Error> {
    let mut tagged = serde_json::Map::with_capacity(1);
    tagged.insert(event_type.to_owned(), payload);
    serde_json::from_value(Value::Object(tagged))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::{OrderEvent, OrderLine, OrderPlaced};

    fn placed() -> OrderEvent {
        OrderEvent::OrderPlaced(OrderPlaced {
            user_id: "u".into(),
            items: vec![OrderLine {
                sku: "A".into(),
                name: "a".into(),
                quantity: 2,
                unit_price_cents: 150,
                line_total_cents: 300,
            }],
            currency: "EUR".into(),
            total_cents: 300,
            shipping_address: None,
            note: String::new(),
        })
    }

    #[test]
    fn wire_payload_round_trips_through_decode() {
        let stored = serde_json::to_value(placed()).unwrap();
        let wire = wire_payload("OrderPlaced", stored);
        assert_eq!(wire["total_cents"], 300);
        let back: OrderEvent = decode("OrderPlaced", wire).unwrap();
        assert_eq!(back, placed());
    }

    #[test]
    fn unknown_event_type_fails_to_decode() {
        let wire = serde_json::json!({"x": 1});
        assert!(decode::<OrderEvent>("OrderVanished", wire).is_err());
    }

    #[test]
    fn event_id_is_stable_and_time_ordered() {
        let t1 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let t2 = DateTime::from_timestamp(1_700_000_001, 0).unwrap();
        assert_eq!(event_id("order", "o", 1, t1), event_id("order", "o", 1, t1));
        assert_ne!(event_id("order", "o", 1, t1), event_id("order", "o", 2, t1));
        assert!(event_id("order", "z", 9, t1) < event_id("order", "a", 1, t2));
        assert_eq!(event_id("order", "o", 1, t1).get_version_num(), 7);
    }
}
