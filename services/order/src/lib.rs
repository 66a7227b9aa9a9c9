//! order-service: the gRPC command service for orders (`tillstream.order.v1`).
//!
//! `PlaceOrder` validates the items, computes line totals and the order total in integer
//! cents (overflow is a validation error, never a wrap), and commits an `OrderPlaced`
//! event to this service's Postgres event store. The relay publishes it on JetStream and
//! projectors build the `orders` and `order_items` read models from it.
//!
//! Layout: [`config`], [`app`], [`grpc`] (transport edge), [`domain`] (the aggregate, pure).

pub mod app;
pub mod config;
pub mod domain;
pub mod grpc;

pub use app::App;
pub use config::{Cli, Config};
