//! user-service: the gRPC command service for users (`tillstream.user.v1`).
//!
//! A registration becomes a `UserRegistered` event in this service's Postgres event store
//! (cqrs-es + postgres-es); the relay publishes it on JetStream, projectors build the
//! `users` read model from it. Passwords are hashed with argon2id and kept in the
//! `credentials` table, never in the log. `Login` answers with an EdDSA-signed JWT that
//! every other service verifies with the public key.
//!
//! Layout: [`config`] (settings), [`app`] (build and run), [`grpc`] (the transport edge),
//! [`domain`] (the aggregate, pure and tested without I/O), [`credentials`] (passwords).

pub mod app;
pub mod bootstrap;
pub mod config;
pub mod credentials;
pub mod domain;
pub mod grpc;

pub use app::App;
pub use config::{Cli, Config};
