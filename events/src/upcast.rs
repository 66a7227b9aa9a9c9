//! Reading old events: upcasting.
//!
//! Events are never rewritten in the store. When a payload's shape changes, the event type
//! gets a new `event_version` and an [`Upcaster`] that turns the previous version into the
//! new one; every reader (the command services loading an aggregate, the relay publishing,
//! the audit replay) passes stored payloads through [`upcast`] first, so old events stay
//! readable forever and subscribers only ever see current versions.
//!
//! The one real example: `OrderPlaced` version 1 (from before orders had a currency, when
//! every order was in euros) has no `currency`; version 2 has it.

use serde_json::{Map, Value};

/// One step: `event_type` at `from` becomes `to` by `apply`ing a change to the payload
/// object (the wire form, without the `{"EventType": …}` wrapper).
pub struct Upcaster {
    pub event_type: &'static str,
    pub from: &'static str,
    pub to: &'static str,
    pub apply: fn(&mut Map<String, Value>),
}

/// The currency of every order placed before orders carried one.
pub const ORDER_PLACED_V1_CURRENCY: &str = "EUR";

fn order_placed_v1_to_v2(payload: &mut Map<String, Value>) {
    payload
        .entry("currency")
        .or_insert_with(|| Value::String(ORDER_PLACED_V1_CURRENCY.to_owned()));
}

/// Every upcaster, oldest first per type.
pub const UPCASTERS: &[Upcaster] = &[Upcaster {
    event_type: "OrderPlaced",
    from: "1",
    to: "2",
    apply: order_placed_v1_to_v2,
}];

/// The version new events of `event_type` are written with.
pub fn current_version(event_type: &str) -> &'static str {
    let mut version = "1";
    while let Some(step) = step(event_type, version) {
        version = step.to;
    }
    version
}

fn step(event_type: &str, version: &str) -> Option<&'static Upcaster> {
    UPCASTERS
        .iter()
        .find(|u| u.event_type == event_type && u.from == version)
}

/// Whether a stored `event_type` at `version` is older than the current version.
pub fn is_outdated(event_type: &str, version: &str) -> bool {
    step(event_type, version).is_some()
}

/// Brings a wire payload of `event_type` at `version` to the current version, step by step.
/// Returns the resulting version. A payload that is not an object is left as it is (it
/// fails to decode later, with the decoder's error).
pub fn upcast(event_type: &str, version: &str, payload: &mut Value) -> String {
    let mut version = version;
    while let Some(step) = step(event_type, version) {
        if let Value::Object(object) = payload {
            (step.apply)(object);
        }
        version = step.to;
    }
    version.to_owned()
}

/// [`upcast`] for the stored form `{"EventType": {…}}` that cqrs-es writes.
pub fn upcast_stored(event_type: &str, version: &str, stored: &mut Value) -> String {
    match stored.get_mut(event_type) {
        Some(inner) => upcast(event_type, version, inner),
        None => upcast(event_type, version, stored),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::order::OrderEvent;
    use crate::{decode, wire_payload};

    fn v1_placed() -> Value {
        json!({"OrderPlaced": {
            "user_id": "u1",
            "items": [{"sku": "A", "name": "a", "quantity": 2, "unit_price_cents": 150, "line_total_cents": 300}],
            "total_cents": 300
        }})
    }

    #[test]
    fn order_placed_v1_reads_as_v2_in_euros() {
        let mut stored = v1_placed();
        assert!(
            decode::<OrderEvent>("OrderPlaced", wire_payload("OrderPlaced", stored.clone()))
                .is_err()
        );
        let version = upcast_stored("OrderPlaced", "1", &mut stored);
        assert_eq!(version, "2");
        let Ok(OrderEvent::OrderPlaced(placed)) =
            decode::<OrderEvent>("OrderPlaced", wire_payload("OrderPlaced", stored))
        else {
            panic!("v1 OrderPlaced does not decode after upcasting");
        };
        assert_eq!(placed.currency, "EUR");
        assert_eq!(placed.total_cents, 300);
    }

    #[test]
    fn current_events_pass_through_unchanged() {
        let mut stored = v1_placed();
        stored["OrderPlaced"]["currency"] = json!("USD");
        let before = stored.clone();
        assert_eq!(upcast_stored("OrderPlaced", "2", &mut stored), "2");
        assert_eq!(stored, before);
        let mut paid = json!({"payment_reference": "p", "amount_cents": 1});
        assert_eq!(upcast("OrderPaid", "1", &mut paid), "1");
        assert!(!is_outdated("OrderPaid", "1"));
        assert!(is_outdated("OrderPlaced", "1"));
    }

    #[test]
    fn current_versions_follow_the_upcasters() {
        assert_eq!(current_version("OrderPlaced"), "2");
        assert_eq!(current_version("OrderPaid"), "1");
        assert_eq!(current_version("UserRegistered"), "1");
    }
}
