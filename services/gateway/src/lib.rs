//! gateway: the side clients talk to. GraphQL (`POST /graphql`, GraphiQL on
//! `GET /graphql`) and its REST mirror (`/api/v1`, OpenAPI at `/api/v1/openapi.json`),
//! served from the Postgres read models the projector builds; commands are forwarded to
//! the command services over gRPC. Both transports go through [`operations`], so the
//! access rules and error codes ([`error::ApiError`]) are the same on every path.
//!
//! The gateway never reads an event store and never writes a read model: queries go to
//! `tillstream_projections::queries`, the one module that owns the SQL of the read models.

pub mod app;
pub mod auth;
pub mod autoscale;
pub mod backends;
pub mod body_limit;
pub mod config;
pub mod error;
pub mod graphql;
pub mod operations;
pub mod rate_limit;
pub mod request_metrics;
pub mod request_trace;
pub mod rest;

pub use app::App;
pub use config::{Cli, Config};
