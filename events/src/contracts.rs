//! The published contracts of the log, generated from these types so they cannot drift:
//! one JSON Schema per event payload, one for the envelope, and an AsyncAPI document for
//! the streams. They are written to `contracts/` at the repository root; a test fails when
//! the files there differ from what the types say (`TILLSTREAM_UPDATE_CONTRACTS=1 cargo test
//! -p tillstream-events` rewrites them).

use schemars::{JsonSchema, schema_for};
use serde_json::{Value, json};

use crate::order::{OrderCancelled, OrderDelivered, OrderPaid, OrderPlaced, OrderShipped};
use crate::user::{UserDeactivated, UserProfileUpdated, UserRegistered, UserRoleChanged};
use crate::{EventEnvelope, order, user};

/// One event type: its aggregate, name, version and payload schema.
struct EventContract {
    aggregate: &'static str,
    name: &'static str,
    version: &'static str,
    schema: Value,
}

fn contract<T: JsonSchema>(aggregate: &'static str, name: &'static str) -> EventContract {
    EventContract {
        aggregate,
        name,
        version: crate::upcast::current_version(name),
        schema: serde_json::to_value(schema_for!(T)).unwrap_or(Value::Null),
    }
}

fn events() -> Vec<EventContract> {
    vec![
        contract::<UserRegistered>(user::AGGREGATE_TYPE, "UserRegistered"),
        contract::<UserProfileUpdated>(user::AGGREGATE_TYPE, "UserProfileUpdated"),
        contract::<UserRoleChanged>(user::AGGREGATE_TYPE, "UserRoleChanged"),
        contract::<UserDeactivated>(user::AGGREGATE_TYPE, "UserDeactivated"),
        contract::<OrderPlaced>(order::AGGREGATE_TYPE, "OrderPlaced"),
        contract::<OrderPaid>(order::AGGREGATE_TYPE, "OrderPaid"),
        contract::<OrderShipped>(order::AGGREGATE_TYPE, "OrderShipped"),
        contract::<OrderDelivered>(order::AGGREGATE_TYPE, "OrderDelivered"),
        contract::<OrderCancelled>(order::AGGREGATE_TYPE, "OrderCancelled"),
    ]
}

fn asyncapi(events: &[EventContract]) -> Value {
    let mut messages = serde_json::Map::new();
    let mut channels = serde_json::Map::new();
    for aggregate in [user::AGGREGATE_TYPE, order::AGGREGATE_TYPE] {
        let names: Vec<&str> = events
            .iter()
            .filter(|e| e.aggregate == aggregate)
            .map(|e| e.name)
            .collect();
        for name in &names {
            messages.insert(
                (*name).to_owned(),
                json!({
                    "name": name,
                    "contentType": "application/json",
                    "headers": {
                        "type": "object",
                        "properties": {
                            "Nats-Msg-Id": { "type": "string", "description": "<aggregate>:<id>:<sequence>, the dedupe key" },
                            "Tillstream-Event-Type": { "const": name },
                            "Tillstream-Sequence": { "type": "string", "description": "the aggregate's sequence, from 1" },
                            "Tillstream-Correlation-Id": { "type": "string", "description": "the correlation id of the request that caused the event" },
                            "traceparent": { "type": "string", "description": "W3C trace context (00-<trace id>-<span id>-<flags>) when the request was traced; consumers continue the trace from it" }
                        }
                    },
                    "payload": {
                        "allOf": [
                            { "$ref": "events/envelope.schema.json" },
                            { "properties": {
                                "event_type": { "const": name },
                                "payload": { "$ref": format!("events/{name}.schema.json") }
                            } }
                        ]
                    }
                }),
            );
        }
        channels.insert(
            format!("events.{aggregate}.{{id}}"),
            json!({
                "description": format!("Every committed event of one {aggregate}, in its sequence order, once (JetStream stream EVENTS)."),
                "parameters": { "id": { "description": format!("the {aggregate}'s id (UUIDv7)") } },
                "subscribe": { "message": { "oneOf": names.iter().map(|n| json!({ "$ref": format!("#/components/messages/{n}") })).collect::<Vec<_>>() } }
            }),
        );
    }
    channels.insert(
        "events.dlq.{aggregate}.{id}".to_owned(),
        json!({
            "description": "Events a projection could not apply, as they were received (stream DLQ); header Tillstream-Error says why.",
            "subscribe": { "message": { "contentType": "application/json", "payload": { "$ref": "events/envelope.schema.json" } } }
        }),
    );
    for (channel, description, schema) in [
        (
            "metrics.requests.{service}",
            "One message per request a service answered (stream METRICS, kept 24 h). Best effort: producers drop rather than slow a request.",
            "metrics/RequestMetric.schema.json",
        ),
        (
            "metrics.resources.{service}",
            "A process's CPU and memory every few seconds (stream METRICS, kept 24 h).",
            "metrics/ResourceSample.schema.json",
        ),
        (
            "autoscale.decisions",
            "The predictor's scaling decisions (stream AUTOSCALE, kept 30 days).",
            "autoscale/ScalingDecision.schema.json",
        ),
        (
            "autoscale.forecasts.{service}",
            "The predictor's forecast for a service after every window; the last message on the subject is the latest (stream AUTOSCALE, kept 30 days).",
            "autoscale/LoadForecast.schema.json",
        ),
    ] {
        channels.insert(
            channel.to_owned(),
            json!({
                "description": description,
                "subscribe": { "message": { "contentType": "application/json", "payload": { "$ref": schema } } }
            }),
        );
    }
    json!({
        "asyncapi": "2.6.0",
        "info": {
            "title": "tillstream streams",
            "version": "1.0.0",
            "description": "Generated from the Rust types in events/ (contracts.rs); do not edit by hand."
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "components": { "messages": messages }
    })
}

/// Every contract file: (path under `contracts/`, content).
pub fn files() -> Vec<(String, String)> {
    let events = events();
    let pretty = |value: &Value| serde_json::to_string_pretty(value).unwrap_or_default() + "\n";
    let mut files = vec![(
        "events/envelope.schema.json".to_owned(),
        pretty(&serde_json::to_value(schema_for!(EventEnvelope)).unwrap_or(Value::Null)),
    )];
    for event in &events {
        let mut schema = event.schema.clone();
        if let Some(object) = schema.as_object_mut() {
            object.insert("x-tillstream-aggregate".to_owned(), json!(event.aggregate));
            object.insert(
                "x-tillstream-event-version".to_owned(),
                json!(event.version),
            );
        }
        files.push((
            format!("events/{}.schema.json", event.name),
            pretty(&schema),
        ));
    }
    for (path, schema) in [
        (
            "metrics/RequestMetric.schema.json",
            schema_for!(crate::RequestMetric),
        ),
        (
            "metrics/ResourceSample.schema.json",
            schema_for!(crate::ResourceSample),
        ),
        (
            "autoscale/ScalingDecision.schema.json",
            schema_for!(crate::ScalingDecision),
        ),
        (
            "autoscale/LoadForecast.schema.json",
            schema_for!(crate::LoadForecast),
        ),
    ] {
        files.push((
            path.to_owned(),
            pretty(&serde_json::to_value(schema).unwrap_or(Value::Null)),
        ));
    }
    files.push(("asyncapi.json".to_owned(), pretty(&asyncapi(&events))));
    files
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn published_contracts_match_the_types() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../contracts");
        let update = std::env::var("TILLSTREAM_UPDATE_CONTRACTS").is_ok_and(|v| v == "1");
        let mut stale = Vec::new();
        for (path, content) in files() {
            let file = root.join(&path);
            if update {
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(&file, &content).unwrap();
            } else if std::fs::read_to_string(&file).ok().as_deref() != Some(content.as_str()) {
                stale.push(path);
            }
        }
        assert!(
            stale.is_empty(),
            "contracts/ differs from the event types for {stale:?}: run TILLSTREAM_UPDATE_CONTRACTS=1 cargo test -p tillstream-events and commit"
        );
    }

    #[test]
    fn every_event_type_has_a_schema() {
        let names: Vec<String> = files().into_iter().map(|(p, _)| p).collect();
        for name in [
            "OrderPlaced",
            "OrderCancelled",
            "UserRegistered",
            "UserDeactivated",
        ] {
            assert!(
                names.contains(&format!("events/{name}.schema.json")),
                "{name}"
            );
        }
    }
}
