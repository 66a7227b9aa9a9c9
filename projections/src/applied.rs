//! Telling readers which aggregates the projector has just applied, so a read that waits
//! for a version (the gateway's `minVersion`) wakes when its aggregate changes instead of
//! only on a timer.
//!
//! The projector sends `NOTIFY` on [`CHANNEL`] inside the transaction that applies the
//! events; Postgres delivers it when that transaction commits, never before and never
//! for a rolled-back one. Each payload is a list of `<aggregate type>:<id>:<version>` lines.
//! A [`ReadModelWatch`] `LISTEN`s on the read-model database and wakes the reads waiting
//! for the aggregates named. Notifications are a hint, not a guarantee (a listener
//! reconnecting misses some): readers keep polling as a fallback and always read the row
//! itself before answering. The same mechanism serves the all-in-one process and the split
//! deployment, where the gateway and projector are different processes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::{PgPool, Postgres, Transaction};
use tillstream_events::order;
use tillstream_runtime::Shutdown;
use tillstream_runtime::retry::Backoff;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;
use uuid::Uuid;

use crate::queries::{OrderWithItems, Reads};
use crate::read_cache::{RESET, ReadCache};

/// The channel the projector notifies on after applying events.
pub const CHANNEL: &str = "tillstream_projection_applied";

/// Postgres refuses payloads of 8000 bytes or more; lines are packed below that.
const MAX_PAYLOAD: usize = 7_000;

/// Queues, inside `tx`, a notification naming each aggregate and the version it reached.
pub(crate) async fn notify(
    tx: &mut Transaction<'_, Postgres>,
    applied: &[(&str, &str, i64)],
) -> Result<(), sqlx::Error> {
    if applied.is_empty() {
        return Ok(());
    }
    let mut payloads = vec![String::new()];
    for (aggregate_type, id, version) in applied {
        let line = format!("{aggregate_type}:{id}:{version}");
        let current = payloads
            .last_mut()
            .filter(|p| p.len() + line.len() < MAX_PAYLOAD);
        match current {
            Some(payload) => {
                if !payload.is_empty() {
                    payload.push('\n');
                }
                payload.push_str(&line);
            }
            None => payloads.push(line),
        }
    }
    sqlx::query("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload")
        .bind(CHANNEL)
        .bind(&payloads)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Queues, inside `tx`, a notification that every read-model row may have changed (a
/// rebuild's swap): caches empty and waiting reads read again.
pub(crate) async fn notify_reset(tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(RESET)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The aggregates the payload of one notification names, as `(type, id, version)`.
fn named(payload: &str) -> impl Iterator<Item = (&str, &str, i64)> {
    payload.lines().filter_map(|line| {
        let mut parts = line.splitn(3, ':');
        Some((parts.next()?, parts.next()?, parts.next()?.parse().ok()?))
    })
}

/// Wakes reads waiting for an aggregate when the projector reports having applied it, and
/// keeps the [`ReadCache`] of orders exact (see [`crate::read_cache`]).
/// Cloning shares the one listener.
#[derive(Clone, Default)]
pub struct ReadModelWatch {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Per watched aggregate (`type:id`): its wake-up and how many reads hold it.
    waiting: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
    listening: AtomicBool,
    orders: ReadCache<OrderWithItems>,
}

impl Inner {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<Notify>, usize)>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes every waiting read: after a gap in listening, anything may have changed.
    fn wake_all(&self) {
        for (notify, _) in self.waiting().values() {
            notify.notify_waiters();
        }
    }

    /// Empties the caches, which serve from now on only while `listening`.
    fn reset_caches(&self, listening: bool) {
        self.orders.reset(listening);
    }

    /// Acts on one notification's payload.
    fn notified(&self, payload: &str) {
        if payload.lines().any(|line| line == RESET) {
            self.reset_caches(true);
            self.wake_all();
            return;
        }
        let waiting = self.waiting();
        for (aggregate_type, id, version) in named(payload) {
            if aggregate_type == order::AGGREGATE_TYPE
                && let Ok(uuid) = Uuid::parse_str(id)
            {
                self.orders.invalidate(uuid, version);
            }
            if let Some((notify, _)) = waiting.get(&format!("{aggregate_type}:{id}")) {
                notify.notify_waiters();
            }
        }
    }
}

impl ReadModelWatch {
    /// Listens on the read-model database of `reads` until `shutdown`, reconnecting with
    /// backoff. Without it a watch is never notified, and waiting reads only poll.
    pub fn spawn_listener(&self, reads: &Reads, shutdown: Shutdown) {
        tokio::spawn(self.clone().listen(reads.pool.clone(), shutdown));
    }

    /// Whether notifications are arriving (false before the first connection and while
    /// reconnecting); readers may poll less often while it is true.
    pub fn is_listening(&self) -> bool {
        self.inner.listening.load(Ordering::Relaxed)
    }

    /// Orders as the gateway last read them, kept exact by the notifications.
    pub fn orders(&self) -> &ReadCache<OrderWithItems> {
        &self.inner.orders
    }

    /// Starts watching one aggregate; dropping the answer stops it.
    pub fn watch(&self, aggregate_type: &str, id: &str) -> Watched {
        let key = format!("{aggregate_type}:{id}");
        let notify = {
            let mut waiting = self.inner.waiting();
            let entry = waiting
                .entry(key.clone())
                .or_insert_with(|| (Arc::new(Notify::new()), 0));
            entry.1 += 1;
            entry.0.clone()
        };
        Watched {
            inner: self.inner.clone(),
            key,
            notify,
        }
    }

    async fn listen(self, pool: PgPool, shutdown: Shutdown) {
        let mut backoff = Backoff::default();
        loop {
            let listened = tokio::select! {
                _ = shutdown.cancelled() => break,
                listened = self.listen_once(&pool) => listened,
            };
            self.inner.listening.store(false, Ordering::Relaxed);
            self.inner.reset_caches(false);
            self.inner.wake_all();
            match listened {
                Ok(()) => backoff.reset(),
                Err(error) => {
                    tracing::debug!(%error, "read-model watch lost its listener; reads poll until it is back")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(backoff.next_delay().min(Duration::from_secs(5))) => {}
            }
        }
        self.inner.listening.store(false, Ordering::Relaxed);
        self.inner.reset_caches(false);
    }

    /// One connection's worth of notifications; returns when the connection is lost.
    async fn listen_once(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        // Whatever was applied before the LISTEN took effect was not announced to us. The
        // caches serve from here on, before `is_listening` says so.
        self.inner.reset_caches(true);
        self.inner.listening.store(true, Ordering::Relaxed);
        self.inner.wake_all();
        // `try_recv` says `None` when the connection dropped (`recv` would reconnect
        // silently and hide the notifications lost meanwhile).
        while let Some(notification) = listener.try_recv().await? {
            self.inner.notified(notification.payload());
        }
        Ok(())
    }
}

/// One read's interest in an aggregate.
pub struct Watched {
    inner: Arc<Inner>,
    key: String,
    notify: Arc<Notify>,
}

impl Watched {
    /// Completes at the next notification naming the aggregate (or a listener restart)
    /// after this call: call it before reading the row, then await it, and no commit
    /// between the read and the wait goes unnoticed.
    pub fn changed(&self) -> Notified<'_> {
        self.notify.notified()
    }

    /// Whether notifications are arriving ([`ReadModelWatch::is_listening`]). While they
    /// are, [`changed`](Self::changed) is what tells a waiting read to look again; when the
    /// listener's connection is lost, every waiting read is woken.
    pub fn is_listening(&self) -> bool {
        self.inner.listening.load(Ordering::Relaxed)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let mut waiting = self.inner.waiting();
        if let Some(entry) = waiting.get_mut(&self.key) {
            entry.1 -= 1;
            if entry.1 == 0 {
                waiting.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_lines_name_type_id_and_version() {
        let named: Vec<_> = named("order:1a:3\nuser:2b:1\nbroken\norder:3c:x").collect();
        assert_eq!(named, vec![("order", "1a", 3), ("user", "2b", 1)]);
    }

    #[tokio::test]
    async fn a_watch_is_forgotten_when_its_last_read_drops_it() {
        let watch = ReadModelWatch::default();
        let first = watch.watch("order", "x");
        let second = watch.watch("order", "x");
        drop(first);
        assert_eq!(watch.inner.waiting().len(), 1);
        drop(second);
        assert!(watch.inner.waiting().is_empty());
    }
}
