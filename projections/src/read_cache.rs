//! Read-model rows kept in memory by a reader and dropped when the projector says it has
//! changed them, so a hot `order(id)` is answered without a round trip to Postgres.
//!
//! A [`ReadCache`] is fed by the [`ReadModelWatch`](crate::ReadModelWatch) that already
//! listens for the projector's notifications: each names an aggregate and the version it
//! reached, and the cached row is dropped unless it is at least that new. It is exact, not
//! eventually right, by three rules:
//!
//! - **Only while listening.** Before the listener's first connection, and from the moment it
//!   loses one until it has `LISTEN`ed again, nothing is served or kept; each change of state
//!   empties the cache, since notifications may have been missed meanwhile.
//! - **No stale row after its notification.** A notification for an aggregate that is not
//!   cached leaves a marker, "at least version v", so a read that fetched the row before the
//!   commit and puts it after the notification is refused. A put also carries the *ticket*
//!   taken before its fetch: a listener restart in between refuses it.
//! - **Bounded age.** A row older than [`MAX_AGE`] is fetched again, which bounds what a lost
//!   marker (evicted by the capacity bound before the late put) could leave behind.
//!
//! A rebuild's swap replaces every table at once; it notifies [`RESET`] and the cache empties.

use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;
use uuid::Uuid;

/// A payload line meaning "everything may have changed".
pub const RESET: &str = "*";

/// The oldest a cached row may be and still be served.
pub const MAX_AGE: Duration = Duration::from_secs(10);

/// Rows kept per cache by default: an order with a few lines is under a kilobyte.
pub const DEFAULT_CAPACITY: usize = 10_000;

#[derive(Clone)]
enum Slot<V> {
    Row {
        version: i64,
        row: Arc<V>,
        at: Instant,
    },
    /// Notified at this version, not cached: older rows are refused.
    AtLeast(i64),
}

/// Rows of one aggregate type, by id, with their versions; see the module documentation.
pub struct ReadCache<V, K = Uuid> {
    slots: Cache<K, Slot<V>>,
    /// Serialises puts, invalidations and state changes (hits do not take it).
    writing: Mutex<()>,
    serving: AtomicBool,
    epoch: AtomicU64,
}

/// Taken before a fetch and handed to [`ReadCache::put`] with its result.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl<V: Clone, K: Eq + Hash + Clone> Default for ReadCache<V, K> {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl<V: Clone, K: Eq + Hash + Clone> ReadCache<V, K> {
    pub fn with_capacity(capacity: usize) -> Self {
        ReadCache {
            slots: Cache::new(capacity.max(1)),
            writing: Mutex::new(()),
            serving: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
        }
    }

    fn writing(&self) -> MutexGuard<'_, ()> {
        self.writing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached row of `id` when it is at least `min_version` (any, without one).
    pub fn get(&self, id: &K, min_version: Option<i64>) -> Option<Arc<V>> {
        if !self.serving.load(Ordering::Acquire) {
            return None;
        }
        match self.slots.get(id)? {
            Slot::Row { version, row, at }
                if min_version.is_none_or(|m| version >= m) && at.elapsed() < MAX_AGE =>
            {
                Some(row)
            }
            _ => None,
        }
    }

    /// Take before fetching a row that will be [put](Self::put).
    pub fn ticket(&self) -> Ticket {
        Ticket(self.epoch.load(Ordering::Acquire))
    }

    /// Keeps `row`, fetched after `ticket` was taken, unless the cache is not serving, was
    /// emptied since the ticket, or already knows of a newer version.
    pub fn put(&self, ticket: Ticket, id: K, version: i64, row: Arc<V>) {
        let _writing = self.writing();
        if !self.serving.load(Ordering::Acquire) || self.epoch.load(Ordering::Acquire) != ticket.0 {
            return;
        }
        let newer_known = match self.slots.get(&id) {
            Some(Slot::Row { version: v, .. }) => v > version,
            Some(Slot::AtLeast(v)) => v > version,
            None => false,
        };
        if !newer_known {
            let at = Instant::now();
            self.slots.insert(id, Slot::Row { version, row, at });
        }
    }

    /// The projector applied `id` up to `version`: an older row is dropped, and a later put
    /// of one refused.
    pub fn invalidate(&self, id: K, version: i64) {
        let _writing = self.writing();
        let current = match self.slots.get(&id) {
            Some(Slot::Row { version: v, .. }) | Some(Slot::AtLeast(v)) => Some(v),
            None => None,
        };
        if current.is_none_or(|v| v < version) {
            self.slots.insert(id, Slot::AtLeast(version));
        }
    }

    /// Empties the cache and starts (`serving`) or stops serving from it; a put whose
    /// ticket predates this is refused.
    pub fn reset(&self, serving: bool) {
        let _writing = self.writing();
        self.serving.store(serving, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.slots.clear();
    }

    /// Whether rows are served (the listener is connected).
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving() -> ReadCache<&'static str, u32> {
        let cache = ReadCache::with_capacity(100);
        cache.reset(true);
        cache
    }

    #[test]
    fn nothing_is_served_or_kept_until_the_listener_is_connected() {
        let cache: ReadCache<&str, u32> = ReadCache::with_capacity(100);
        cache.put(cache.ticket(), 1, 1, Arc::new("v1"));
        assert!(cache.get(&1, None).is_none());
        cache.reset(true);
        assert!(cache.get(&1, None).is_none(), "kept while not listening");
        cache.put(cache.ticket(), 1, 1, Arc::new("v1"));
        assert_eq!(cache.get(&1, None).as_deref(), Some(&"v1"));
        cache.reset(false);
        assert!(
            cache.get(&1, None).is_none(),
            "served after the listener was lost"
        );
    }

    #[test]
    fn a_row_below_the_wanted_version_is_a_miss() {
        let cache = serving();
        cache.put(cache.ticket(), 1, 2, Arc::new("v2"));
        assert_eq!(cache.get(&1, Some(2)).as_deref(), Some(&"v2"));
        assert!(cache.get(&1, Some(3)).is_none());
    }

    #[test]
    fn a_notification_drops_an_older_row_and_keeps_a_current_one() {
        let cache = serving();
        cache.put(cache.ticket(), 1, 2, Arc::new("v2"));
        cache.invalidate(1, 2);
        assert_eq!(cache.get(&1, None).as_deref(), Some(&"v2"));
        cache.invalidate(1, 3);
        assert!(cache.get(&1, None).is_none());
    }

    #[test]
    fn a_row_fetched_before_a_commit_and_put_after_its_notification_is_refused() {
        let cache = serving();
        let ticket = cache.ticket();
        // The fetch saw version 1; the projector then commits version 2 and notifies.
        cache.invalidate(1, 2);
        cache.put(ticket, 1, 1, Arc::new("v1"));
        assert!(cache.get(&1, None).is_none());
        cache.put(cache.ticket(), 1, 2, Arc::new("v2"));
        assert_eq!(cache.get(&1, None).as_deref(), Some(&"v2"));
        // An older row never replaces a newer one.
        cache.put(cache.ticket(), 1, 1, Arc::new("v1"));
        assert_eq!(cache.get(&1, None).as_deref(), Some(&"v2"));
    }

    #[test]
    fn a_put_whose_ticket_predates_a_reset_is_refused() {
        let cache = serving();
        let ticket = cache.ticket();
        cache.reset(true);
        cache.put(ticket, 1, 1, Arc::new("v1"));
        assert!(cache.get(&1, None).is_none());
    }
}
