//! The relay: publishes every committed event of one event store to JetStream, without
//! gaps, in per-aggregate order, exactly once after JetStream's dedupe.
//!
//! # Why rows are read by `(txid, global_position)` and not by `global_position`
//!
//! `global_position` is a sequence: numbers are taken when rows are inserted, not when
//! transactions commit. A transaction holding 41 may commit after one holding 42; a relay
//! that had already published 42 and moved its checkpoint past 41 would never publish it.
//!
//! Every row also records its writing transaction (`txid xid8`). Postgres tells us the
//! oldest transaction still running (`pg_snapshot_xmin(pg_current_snapshot())`): every
//! transaction with a smaller id has committed or rolled back, so its rows are final, and
//! any transaction that commits later has an id at least as large. Reading only rows with
//! `txid < xmin`, ordered by `(txid, global_position)`, therefore yields a log that only
//! ever grows at its end, and a checkpoint `(txid, global_position)` never skips a row.
//! (That is transaction-id order, not strictly commit order: of two unrelated transactions
//! the one that wrote first is published first, even if it committed second.)
//! Within one batch the relay publishes in waves (each aggregate's first event of the batch,
//! then each one's second, ...), so an aggregate's events stay in order while events of
//! different aggregates of the same batch may appear out of commit order on the stream.
//! Per-aggregate order holds too: a command loads its aggregate before its transaction
//! begins, so the transaction that writes sequence n+1 starts (and takes its txid) after the
//! one that wrote n committed.
//!
//! The price: a long-running transaction anywhere in the cluster holds back the horizon
//! and delays (never loses) publication until it ends.
//!
//! # Crash safety
//!
//! Events are published with `Nats-Msg-Id: <aggregate>:<id>:<sequence>`, acks are awaited,
//! and only then is the checkpoint advanced. A crash between publish and checkpoint
//! republishes the batch; JetStream drops the duplicates inside its dedupe window, and
//! consumers skip sequences they already applied. When NATS or Postgres is unreachable the
//! relay retries with bounded exponential backoff, so events committed meanwhile are
//! published once it is back.
//!
//! The crash between publish and checkpoint is tested with a real process killed there
//! (`TILLSTREAM_FAILPOINTS=relay.after_publish`, see [`tillstream_runtime::failpoint`]).

pub mod app;
mod config;
mod relay;

pub use app::App;
pub use config::{Cli, Config};
pub use relay::{Relay, RelayError};
