//! Projections: read models in Postgres, built from the EVENTS stream.
//!
//! A durable JetStream pull consumer delivers every event. Each is applied in one Postgres
//! transaction together with its aggregate's checkpoint (the last sequence applied):
//!
//! - sequence ≤ checkpoint: a redelivery or a republished duplicate; skipped and acked;
//! - sequence = checkpoint + 1: applied, checkpoint advanced, committed, then acked;
//! - sequence > checkpoint + 1: an earlier event has not arrived yet; nothing is applied
//!   and the message is negatively acknowledged, so JetStream delivers it again later.
//!
//! A crash at any instant therefore neither loses nor repeats an effect: an event applied
//! but not acked is skipped when redelivered.
//!
//! What has arrived is applied together: the checkpoints of a whole batch are read and
//! claimed in one statement each and every read-model table written with one multi-row
//! statement ([`batch`]), so a backlog costs a dozen round trips per batch rather than
//! several per event. When the database refuses such a statement, the batch is applied
//! again one event at a time under savepoints, so a poison event fails alone. After the
//! commit the projector's `NOTIFY` tells readers which aggregates changed ([`applied`]),
//! which wakes reads waiting for a version and keeps the gateway's in-memory rows exact
//! ([`read_cache`]); acks go out only after the commit.
//!
//! An event that still cannot be applied after its retries (undecodable, of an unknown
//! type, or waiting on an earlier event that never came) is a dead letter: kept in the
//! `dead_letters` table with its error and published on `events.dlq.<aggregate>.<id>`,
//! counted, and the consumer moves on. `tillstream projections dead-letters` lists them
//! and re-drives them once the cause is fixed ([`dead_letters`]).
//!
//! Read models: `users`, `orders`, `order_items`, `order_history`, `user_order_stats`
//! ([`read_model`]). They can be rebuilt from the start of the log at any time, blue-green,
//! while the live ones keep serving ([`rebuild`]).

pub mod app;
pub mod applied;
mod batch;
pub mod checksum;
mod config;
pub mod dead_letters;
mod projector;
pub mod queries;
pub mod read_cache;
pub mod read_model;
pub mod rebuild;

pub use app::{App, migrate, migrator};
pub use applied::ReadModelWatch;
pub use config::{Cli, Config};
pub use projector::{ApplyOutcome, Projector, ProjectorError, RetryPolicy};
pub use read_cache::ReadCache;
