//! The async runtime every tillstream binary runs on.
//!
//! Tokio's multi-thread runtime as `#[tokio::main]` builds it, plus three things about memory:
//!
//! - A worker thread about to go idle hands the memory its requests freed back to the
//!   allocator, at most once a second. The services allocate with mimalloc, which keeps a
//!   thread's freed pages in that thread's heap until the thread allocates again, and
//!   returns them to the system only from there. A burst of 2000 concurrent GraphQL
//!   requests (~60 KiB each in hyper's buffers and async-graphql's execution) left the
//!   all-in-one at ~200 MiB for as long as it then stayed idle, with under 5 MiB of it still
//!   allocated (heaptrack, docs/performance.md). `mi_collect` frees those pages; purged,
//!   they leave the resident set.
//! - Transparent huge pages are off unless the environment asks for them ([`huge_pages`]).
//! - mimalloc hands pages it frees back to the system after 1 ms, not after its default
//!   1 s, which an idle process may never reach, and a task runs the purges that have come
//!   due once a second, since mimalloc purges only when it is called ([`purge`]).

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How often one worker thread collects at most.
const COLLECT_EVERY: Duration = Duration::from_secs(1);

/// A multi-thread runtime with every driver enabled, whose workers return freed memory
/// when they go idle, in a process with transparent huge pages off ([`huge_pages`]) whose
/// allocator purges freed pages soon, also when the process idles ([`purge`]).
pub fn multi_thread() -> std::io::Result<tokio::runtime::Runtime> {
    huge_pages::turn_off();
    purge::soon();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(collect_freed_memory)
        .build()?;
    runtime.spawn(purge::when_due());
    Ok(runtime)
}

/// Returns this thread's freed allocator pages, unless it did so less than
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
        collect();
    });
}

/// mimalloc's collection from this thread: its heap's freed pages, and the purges that have
/// come due in the whole process.
fn collect() {
    // SAFETY: `mi_collect` takes no pointers and may be called from any thread at any
    // time; without mimalloc as the global allocator it collects an empty heap.
    unsafe { libmimalloc_sys::mi_collect(false) };
}

/// Freed memory handed back to the system after 1 ms, unless the environment sets the delay.
///
/// mimalloc (version 3, as libmimalloc-sys builds it here) gives the pages it no longer uses
/// back to the system (`MADV_DONTNEED`, a "purge") only once they have been free for a
/// delay, 1 s by default, so that memory freed and taken again soon costs no system call;
/// and it purges only when it next runs its purge, on a later allocation or collection. A
/// process that goes idle right after freeing may keep those pages resident for as long as
/// it idles. With the default, what the all-in-one kept depended on the run: 28–40 MiB idle
/// after start, 31–74 MiB after 50 customers were seeded; with 1 ms, 28.7–29.7 and
/// 31.4–33.9 MiB in every run; with no delay, 25–27 and 28.5–29.2 (docs/performance.md,
/// Fix 21). Under `order(id)` at 100 connections, 1 ms cost ~220 `madvise` calls and ~700
/// page faults a second more than the default, no delay ~1 230 and ~3 060: 1 ms keeps most
/// of the memory for a fifth of those calls.
///
/// The delay alone does not close the gap. mimalloc purges only when some thread calls it
/// after the delay has passed, and a worker's collection as it parks comes right after its
/// last frees, inside the delay. So pages freed in a process's last moments of work could
/// stay resident for as long as it then idled: 64 MiB freed that way stayed, in an
/// experiment and in the test below (docs/performance.md, Fix 23). [`when_due`] runs
/// mimalloc's due purges once a second, which also reach pages of other threads' heaps.
///
/// A process that finds `MIMALLOC_PURGE_DELAY` (or its older name `MIMALLOC_RESET_DELAY`)
/// set keeps mimalloc's reading of it.
pub mod purge {
    use std::os::raw::c_long;
    use std::time::Duration;

    /// How often [`when_due`] runs the purges that have come due.
    pub const EVERY: Duration = Duration::from_secs(1);

    /// Runs mimalloc's due purges every [`EVERY`], for as long as the runtime runs.
    pub async fn when_due() {
        let mut every = tokio::time::interval(EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            // A thread whose mimalloc heap was never used collects nothing; the workers of a
            // service allocate with it.
            super::collect();
        }
    }

    /// mimalloc's own variables for the delay, in milliseconds (the second is its old name).
    const VARIABLES: [&str; 2] = ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"];
    /// `mi_option_purge_delay`: its number in `mi_option_t` (the same in mimalloc 2 and 3),
    /// which libmimalloc-sys does not name. The test below checks that it is that option.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

    /// The delay set, in milliseconds.
    const DELAY: c_long = 1;

    /// Purges after [`DELAY`] from now on, unless the environment set a delay. Called before
    /// the runtime's threads start.
    pub fn soon() {
        if VARIABLES
            .iter()
            .all(|name| std::env::var_os(name).is_none())
        {
            set_delay(DELAY);
        }
    }

    /// Sets the purge delay in milliseconds (`-1`: never purge).
    fn set_delay(milliseconds: c_long) {
        // SAFETY: `mi_option_set` stores an integer in mimalloc's option table, which
        // mimalloc reads again at each purge. The store is not atomic: callers set it before
        // other threads allocate with mimalloc ([`soon`] before the runtime starts; the test
        // while no other thread of its process uses mimalloc).
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, milliseconds) };
    }

    /// The purge delay now, in milliseconds.
    #[cfg(test)]
    fn delay() -> c_long {
        // SAFETY: reads an integer from mimalloc's option table.
        unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }
    }

    #[cfg(all(test, target_os = "linux"))]
    mod tests {
        use std::os::raw::c_long;
        use std::sync::{Mutex, MutexGuard};
        use std::time::{Duration, Instant};

        use super::{delay, set_delay, when_due};

        /// The tests here set the process's purge delay and measure its resident memory:
        /// one at a time.
        static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

        /// The turn of a test that measures purges, or `None` when nothing can be measured:
        /// `MIMALLOC_PURGE_DECOMMITS=0` purges with `MADV_FREE`, which leaves pages resident.
        fn measuring_turn() -> Option<MutexGuard<'static, ()>> {
            if std::env::var_os("MIMALLOC_PURGE_DECOMMITS").is_some() {
                eprintln!("MIMALLOC_PURGE_DECOMMITS is set: not measured");
                return None;
            }
            Some(ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner()))
        }

        /// Resident memory of this process, in KiB.
        fn resident_kib() -> i64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap()
        }

        /// How much smaller the process is right after freeing 64 MiB of mimalloc blocks
        /// that were written to, with the purge delay at `milliseconds`: on a thread of its
        /// own, whose mimalloc heap holds nothing else.
        fn shrinks_by_kib(milliseconds: i64) -> i64 {
            std::thread::spawn(move || {
                set_delay(milliseconds as _);
                const BLOCK: usize = 128 * 1024;
                let blocks: Vec<*mut u8> = (0..512)
                    .map(|_| {
                        // SAFETY: a fresh block of BLOCK bytes, written within its bounds.
                        unsafe {
                            let block = libmimalloc_sys::mi_malloc(BLOCK).cast::<u8>();
                            assert!(!block.is_null());
                            std::ptr::write_bytes(block, 1, BLOCK);
                            block
                        }
                    })
                    .collect();
                let before = resident_kib();
                for block in blocks {
                    // SAFETY: each block came from `mi_malloc` and is freed once.
                    unsafe { libmimalloc_sys::mi_free(block.cast()) };
                }
                before - resident_kib()
            })
            .join()
            .unwrap()
        }

        /// Needs pages purged by `MADV_DONTNEED` (mimalloc's default), which leave the
        /// resident set at once; `MIMALLOC_PURGE_DECOMMITS=0` purges with `MADV_FREE`,
        /// which does not, and the test then has nothing to measure.
        #[test]
        fn the_option_set_is_mimallocs_purge_delay() {
            let Some(_turn) = measuring_turn() else {
                return;
            };
            let before = delay();
            let never = shrinks_by_kib(-1);
            let at_once = shrinks_by_kib(0);
            set_delay(before);
            assert!(
                at_once > 48 * 1024,
                "purging at once, freeing 64 MiB gave back only {at_once} KiB"
            );
            assert!(
                never < 16 * 1024,
                "with purging off, freeing 64 MiB still gave back {never} KiB"
            );
        }

        struct Block(*mut u8);
        // SAFETY: a mimalloc block may be freed on any thread.
        unsafe impl Send for Block {}

        /// 64 MiB allocated on one thread and freed on another, which then collects at
        /// once, as a worker does when it parks after its last frees: the memory stays
        /// resident while nothing calls mimalloc, and `when_due` hands it back.
        #[test]
        fn pages_freed_just_before_an_idle_spell_are_purged_during_it() {
            let Some(_turn) = measuring_turn() else {
                return;
            };
            let before = delay();
            // Longer than freeing takes, even in a debug build: the collection right after
            // the frees finds nothing due, as a worker's does with 1 ms in a release build.
            const DELAY_MS: c_long = 300;
            set_delay(DELAY_MS);
            const BLOCK: usize = 16 * 1024;
            // The allocating thread stays alive, blocked, as a parked worker does (a thread
            // that ends hands its heap's pages over at once).
            let (blocks_tx, blocks_rx) = std::sync::mpsc::channel::<Vec<Block>>();
            let (end_tx, end_rx) = std::sync::mpsc::channel::<()>();
            let allocator = std::thread::spawn(move || {
                let blocks = (0..4096)
                    .map(|_| {
                        // SAFETY: a fresh block of BLOCK bytes, written within its bounds.
                        unsafe {
                            let block = libmimalloc_sys::mi_malloc(BLOCK).cast::<u8>();
                            assert!(!block.is_null());
                            std::ptr::write_bytes(block, 1, BLOCK);
                            Block(block)
                        }
                    })
                    .collect();
                blocks_tx.send(blocks).unwrap();
                let _ = end_rx.recv();
            });
            let blocks = blocks_rx.recv().unwrap();
            let allocated = resident_kib();
            // The freeing thread stays alive too (a thread that ends collects its heap).
            let (freed_tx, freed_rx) = std::sync::mpsc::channel::<()>();
            let (end_freer_tx, end_freer_rx) = std::sync::mpsc::channel::<()>();
            let freer = std::thread::spawn(move || {
                // SAFETY: each block came from `mi_malloc` and is freed once; the first
                // allocation gives this thread a mimalloc heap, as a worker has.
                unsafe {
                    libmimalloc_sys::mi_free(libmimalloc_sys::mi_malloc(16));
                    for block in blocks {
                        libmimalloc_sys::mi_free(block.0.cast());
                    }
                    libmimalloc_sys::mi_collect(false);
                }
                freed_tx.send(()).unwrap();
                let _ = end_freer_rx.recv();
            });
            freed_rx.recv().unwrap();
            // Past the delay, with no thread calling mimalloc.
            std::thread::sleep(Duration::from_millis(3 * DELAY_MS as u64));
            let idle = resident_kib();
            // A current-thread runtime whose thread has a mimalloc heap, as a worker has.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            // SAFETY: a block allocated and freed on this thread.
            unsafe { libmimalloc_sys::mi_free(libmimalloc_sys::mi_malloc(16)) };
            let deadline = Instant::now() + Duration::from_secs(10);
            let purged = runtime.block_on(async {
                let upkeep = tokio::spawn(when_due());
                let purged = loop {
                    let now = resident_kib();
                    if allocated - now > 48 * 1024 || Instant::now() > deadline {
                        break now;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                upkeep.abort();
                purged
            });
            set_delay(before);
            drop((end_tx, end_freer_tx));
            allocator.join().unwrap();
            freer.join().unwrap();
            if allocated - idle > 16 * 1024 {
                // Something else ran mimalloc's purge meanwhile: nothing left to measure.
                eprintln!(
                    "freed and idle, {} KiB were already given back",
                    allocated - idle
                );
                return;
            }
            assert!(
                allocated - purged > 48 * 1024,
                "with when_due running, 64 MiB freed gave back only {} KiB in 10 s",
                allocated - purged
            );
        }
    }
}

/// Transparent huge pages, off unless asked for.
///
/// mimalloc asks the kernel for huge pages on its heap (`MADV_HUGEPAGE`). Their cost is
/// memory. The first byte used in each 2 MiB of heap makes all 2 MiB resident, and the
/// kernel's `khugepaged` (with its default `max_ptes_none` of 511) later fills whole
/// 2 MiB ranges of heap that hold a single used page, also while the process is idle and
/// also where mimalloc has handed memory back. After the suite's load the all-in-one held
/// 150–156 MiB with them, 44 MiB of it in huge pages and growing while idle, and 94–98 MiB
/// without (docs/performance.md, Fix 18). What they paid back under load, 4–10 % more
/// reads a second in one early comparison, later runs did not show within their noise.
///
/// So a process turns them off for itself (`PR_SET_THP_DISABLE`) as it starts, unless
/// `MIMALLOC_ALLOW_THP` is set to something other than `0` (`false`, `off`, `no`).
/// Memory mimalloc took before `main` (4 MiB) has them already; `MIMALLOC_ALLOW_THP=0`
/// spares that too, since mimalloc reads it before `main`. A process that finds them off
/// already (a parent's choice, inherited) leaves them off, and processes it starts (the
/// predictor's hook command) inherit that.
pub mod huge_pages {
    /// mimalloc's own variable for the same choice.
    const VARIABLE: &str = "MIMALLOC_ALLOW_THP";

    /// Turns huge pages off for this process unless the environment allows them.
    pub fn turn_off() {
        if !allowed(std::env::var(VARIABLE).ok().as_deref()) {
            // A kernel (or a sandbox) that refuses leaves them as they were: the process
            // runs as well, with more memory.
            sys::set_disabled(true);
        }
    }

    /// Whether `MIMALLOC_ALLOW_THP`'s value allows huge pages: set, and not to `0`,
    /// `false`, `off` or `no`.
    fn allowed(value: Option<&str>) -> bool {
        value
            .map(|v| v.trim().to_ascii_lowercase())
            .is_some_and(|v| !matches!(v.as_str(), "0" | "false" | "off" | "no"))
    }

    #[cfg(target_os = "linux")]
    mod sys {
        use libc::{c_int, c_ulong};

        /// Whether huge pages are off for this process now (`None`: the kernel cannot say).
        #[cfg(test)]
        pub fn disabled() -> Option<bool> {
            match prctl(libc::PR_GET_THP_DISABLE, 0) {
                0 => Some(false),
                1 => Some(true),
                _ => None,
            }
        }

        pub fn set_disabled(disabled: bool) -> bool {
            prctl(libc::PR_SET_THP_DISABLE, c_ulong::from(disabled)) == 0
        }

        /// prctl(2) with one argument. The kernel refuses these options (`EINVAL`) unless
        /// the arguments they do not use are zero, so all of them are passed.
        fn prctl(option: c_int, argument: c_ulong) -> c_int {
            // SAFETY: PR_GET_THP_DISABLE and PR_SET_THP_DISABLE read or set a flag of this
            // process's memory map and take integers only.
            unsafe { libc::prctl(option, argument, 0 as c_ulong, 0 as c_ulong, 0 as c_ulong) }
        }
    }

    #[cfg(not(target_os = "linux"))]
    mod sys {
        pub fn set_disabled(_disabled: bool) -> bool {
            false
        }
    }

    #[cfg(test)]
    mod tests {
        use super::allowed;

        #[test]
        fn huge_pages_are_off_unless_the_variable_allows_them() {
            assert!(!allowed(None));
            for off in ["0", "false", "OFF", " no "] {
                assert!(!allowed(Some(off)), "{off}");
            }
            for on in ["1", "true", "on", "yes"] {
                assert!(allowed(Some(on)), "{on}");
            }
        }

        #[cfg(target_os = "linux")]
        #[test]
        fn huge_pages_turn_off_and_on_again() {
            use super::sys;
            let Some(before) = sys::disabled() else {
                return;
            };
            assert!(sys::set_disabled(true));
            assert_eq!(sys::disabled(), Some(true));
            assert!(sys::set_disabled(false));
            assert_eq!(sys::disabled(), Some(false));
            assert!(sys::set_disabled(before));
        }
    }
}
