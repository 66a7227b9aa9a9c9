//! The async runtime every tillstream binary runs on.
//!
//! Tokio's multi-thread runtime as `#[tokio::main]` builds it, plus one thing: a worker
//! thread about to go idle hands the memory its requests freed back to the allocator, at
//! most once a second.
//!
//! Why: the services allocate with mimalloc, which keeps a thread's freed pages in that
//! thread's heap until the thread allocates again, and returns them to the system only
//! from there. A burst of 2000 concurrent GraphQL requests (~60 KiB each in hyper's buffers
//! and async-graphql's execution) left the all-in-one at ~200 MiB for as long as it then
//! stayed idle, with under 5 MiB of it still allocated (heaptrack, docs/performance.md).
//! `mi_collect` frees those pages; purged, they leave the resident set.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How often one worker thread collects at most.
const COLLECT_EVERY: Duration = Duration::from_secs(1);

/// A multi-thread runtime with every driver enabled, whose workers return freed memory
/// when they go idle.
pub fn multi_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(collect_freed_memory)
        .build()
}

/// Returns this thread's freed allocator pages, unless it did less than
/// [`COLLECT_EVERY`] ago.
fn collect_freed_memory() {
    thread_local! {
        static COLLECTED: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    COLLECTED.with(|collected| {
        let now = Instant::now();
        if collected.get().is_some_and(|at| now - at < COLLECT_EVERY) {
            return;
        }
        collected.set(Some(now));
        // SAFETY: `mi_collect` takes no pointers and may be called from any thread at any
        // time; without mimalloc as the global allocator it collects an empty heap.
        unsafe { libmimalloc_sys::mi_collect(false) };
    });
}
