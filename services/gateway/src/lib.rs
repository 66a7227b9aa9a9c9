//! gateway: the read side clients talk to. GraphQL (`POST /graphql`, GraphiQL on
//! `GET /graphql`) served from the Postgres read models the projector builds.
//!
//! The gateway never reads an event store and never writes a read model: queries go to
//! `tillstream_projections::queries`, the one module that owns the SQL of the read models.

pub mod app;
pub mod auth;
pub mod backends;
pub mod config;
pub mod graphql;
pub mod request_trace;

pub use app::App;
pub use config::{Cli, Config};
