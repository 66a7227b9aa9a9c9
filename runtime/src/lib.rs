//! What every tillstream process shares: telemetry, the operations endpoints
//! (`/healthz`, `/readyz`, `/metrics`), Postgres and NATS connections, the JetStream
//! stream definitions of `nats/`, access tokens, and shutdown.
//!
//! One way to do each of these things, so the services read alike: each service crate
//! has a `Config`, an `App::build(config)` that connects and migrates, and an
//! `App::run(shutdown)` that serves until the [`Shutdown`] token fires.

pub mod audit;
pub mod config_file;
pub mod event_store;
pub mod failpoint;
pub mod gate;
pub mod grpc;
pub mod grpc_host;
#[cfg(test)]
mod h2_peer;
pub mod http_server;
pub mod keepalive;
pub mod nats;
pub mod ops;
pub mod postgres;
pub mod resources;
pub mod retry;
pub mod rt;
pub mod secret_file;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
pub mod tls;
pub mod tokens;
pub mod trace_context;

pub use shutdown::Shutdown;
pub use sqlx::PgPool;
pub use startup::StartError;
