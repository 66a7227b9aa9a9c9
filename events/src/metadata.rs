//! Metadata carried by every event: who caused it and which request it belongs to.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A principal's role. Customers act only on themselves; admins on everything; services are
/// other tillstream processes acting on behalf of the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
    Service,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown role `{0}` (expected customer, admin or service)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "customer" => Ok(Role::Customer),
            "admin" => Ok(Role::Admin),
            "service" => Ok(Role::Service),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

/// Who caused an event: a user (with the role they acted in) or an anonymous caller
/// (a self-registration has no authenticated actor yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Actor {
    pub id: Option<String>,
    pub role: Option<Role>,
}

impl Actor {
    pub fn anonymous() -> Self {
        Actor {
            id: None,
            role: None,
        }
    }

    pub fn user(id: impl Into<String>, role: Role) -> Self {
        Actor {
            id: Some(id.into()),
            role: Some(role),
        }
    }
}

/// Metadata of one command's events. Every event a command produces shares it.
///
/// cqrs-es stores metadata as a string map; [`EventMetadata::to_map`] and
/// [`EventMetadata::from_map`] are the only places that know the keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventMetadata {
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub actor: Actor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// W3C trace id (32 lowercase hex digits) of the request that caused the event, when it
    /// was traced: the `traceparent` a caller sent, or the trace the service started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// W3C span id (16 hex digits) of the command's span in that trace: with `trace_id` it
    /// is the parent the relay's `traceparent` NATS header continues from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
}

const CORRELATION_ID: &str = "correlation_id";
const CAUSATION_ID: &str = "causation_id";
const ACTOR_ID: &str = "actor_id";
const ACTOR_ROLE: &str = "actor_role";
const IDEMPOTENCY_KEY: &str = "idempotency_key";
const TRACE_ID: &str = "trace_id";
const SPAN_ID: &str = "span_id";

impl EventMetadata {
    pub fn new(correlation_id: impl Into<String>, actor: Actor) -> Self {
        EventMetadata {
            correlation_id: correlation_id.into(),
            causation_id: None,
            actor,
            idempotency_key: None,
            trace_id: None,
            span_id: None,
        }
    }

    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::new();
        map.insert(CORRELATION_ID.to_owned(), self.correlation_id.clone());
        let optional = [
            (CAUSATION_ID, self.causation_id.clone()),
            (ACTOR_ID, self.actor.id.clone()),
            (ACTOR_ROLE, self.actor.role.map(|r| r.as_str().to_owned())),
            (IDEMPOTENCY_KEY, self.idempotency_key.clone()),
            (TRACE_ID, self.trace_id.clone()),
            (SPAN_ID, self.span_id.clone()),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                map.insert(key.to_owned(), value);
            }
        }
        map
    }

    /// Reads metadata back from the store's map. Unknown roles are dropped rather than
    /// failing the event: metadata describes an event, it never decides whether it happened.
    pub fn from_map(map: &HashMap<String, String>) -> Self {
        let get = |key: &str| map.get(key).cloned();
        EventMetadata {
            correlation_id: get(CORRELATION_ID).unwrap_or_default(),
            causation_id: get(CAUSATION_ID),
            actor: Actor {
                id: get(ACTOR_ID),
                role: map.get(ACTOR_ROLE).and_then(|r| r.parse().ok()),
            },
            idempotency_key: get(IDEMPOTENCY_KEY),
            trace_id: get(TRACE_ID),
            span_id: get(SPAN_ID),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_survives_the_store_map() {
        let mut meta = EventMetadata::new("corr-1", Actor::user("u-1", Role::Admin));
        meta.causation_id = Some("cause".into());
        meta.idempotency_key = Some("key-1".into());
        meta.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        meta.span_id = Some("00f067aa0ba902b7".into());
        assert_eq!(EventMetadata::from_map(&meta.to_map()), meta);

        let anonymous = EventMetadata::new("corr-2", Actor::anonymous());
        assert_eq!(EventMetadata::from_map(&anonymous.to_map()), anonymous);
    }
}
