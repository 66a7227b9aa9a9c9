//! The vocabulary of tillstream's log: what happened to users and orders, the envelope every
//! event travels in, and the names of the streams and subjects that carry it.
//!
//! This crate does no I/O. The command services produce these events (persisted by
//! cqrs-es into Postgres), the relay wraps each committed row in an [`EventEnvelope`] and
//! publishes it on JetStream, and projectors and outside subscribers decode it again.
//!
//! Two encodings exist on purpose:
//! - in the event store, payloads are cqrs-es's externally tagged enums
//!   (`{"OrderPlaced": {...}}`), the form cqrs-es replays aggregates from;
//! - on the wire, the envelope's `payload` is the event's own object, and its name is in
//!   `event_type`, which is what subscribers in other languages expect.
//!
//! [`wire_payload`] and [`decode`] convert between the two.

pub mod contracts;
pub mod envelope;
pub mod metadata;
pub mod metrics;
pub mod order;
pub mod subject;
pub mod upcast;
pub mod user;

pub use envelope::{EventEnvelope, decode, wire_payload};
pub use metadata::{Actor, EventMetadata, Role};
pub use metrics::{LoadForecast, RequestMetric, ResourceSample, ScalingDecision, ScalingDirection};
pub use order::{
    Address, OrderCancelled, OrderDelivered, OrderEvent, OrderLine, OrderPaid, OrderPlaced,
    OrderShipped, OrderStatus,
};
pub use subject::Namespace;
pub use user::{
    UserDeactivated, UserEvent, UserProfileUpdated, UserRegistered, UserRoleChanged, UserStatus,
};
