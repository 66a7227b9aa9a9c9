//! The async runtime every tillstream binary runs on.
//!
//! Tokio's multi-thread runtime as `#[tokio::main]` builds it, plus two things about memory:
//!
//! - A worker thread about to go idle hands the memory its requests freed back to the
//!   allocator, at most once a second. The services allocate with mimalloc, which keeps a
//!   thread's freed pages in that thread's heap until the thread allocates again, and
//!   returns them to the system only from there. A burst of 2000 concurrent GraphQL
//!   requests (~60 KiB each in hyper's buffers and async-graphql's execution) left the
//!   all-in-one at ~200 MiB for as long as it then stayed idle, with under 5 MiB of it still
//!   allocated (heaptrack, docs/performance.md). `mi_collect` frees those pages; purged,
//!   they leave the resident set.
//! - Transparent huge pages wait until the process is busy ([`huge_pages`]).

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How often one worker thread collects at most.
const COLLECT_EVERY: Duration = Duration::from_secs(1);

/// A multi-thread runtime with every driver enabled, whose workers return freed memory
/// when they go idle, and which allows transparent huge pages once it is busy.
pub fn multi_thread() -> std::io::Result<tokio::runtime::Runtime> {
    huge_pages::hold_off();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(on_park)
        .build()
}

/// Returns this thread's freed allocator pages and looks at how busy the runtime has
/// been, unless it did so less than [`COLLECT_EVERY`] ago.
fn on_park() {
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
        huge_pages::allow_if_busy(now);
    });
}

/// Transparent huge pages, held off while the process is quiet.
///
/// mimalloc asks the kernel for huge pages on its heap (`MADV_HUGEPAGE`). Under load they
/// pay: the gateway served 4–10 % more reads a second with them. Idle, they cost: the
/// first byte a thread uses in each 2 MiB of heap makes all 2 MiB resident, about 10 MiB
/// per process, which took the idle gateway over its 30 MB target (docs/performance.md,
/// "Idle memory and huge pages").
///
/// So a process starts with huge pages turned off for itself (`PR_SET_THP_DISABLE`), and
/// turns them on for good the first time its runtime's workers were busy, together, for
/// at least half of a second over a second or more. Memory it used before that keeps
/// ordinary pages, also when the allocator reuses it; memory it uses for the first time
/// from then on gets huge pages. Memory mimalloc took before `main` (4 MiB) has them
/// already. Measured (docs/performance.md, Fix 17): the idle gateway (thin LTO) 24.7 MiB
/// instead of 30.8; under a read load right after start, the all-in-one had 4–8 MiB of
/// its heap in huge pages against 14–20 MiB by default.
///
/// `MIMALLOC_ALLOW_THP` decides instead when it is set: `0` (or `false`, `off`, `no`)
/// keeps huge pages off, any other value leaves them on from the start. A process that
/// finds them off already (a parent's choice, inherited) leaves them off. Processes
/// started while they are held off (the predictor's hook command) inherit that.
pub mod huge_pages {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    /// mimalloc's own variable for the same choice; when it is set, it decides.
    const VARIABLE: &str = "MIMALLOC_ALLOW_THP";
    /// Busy time of all workers together, as a share of the time it was measured over.
    const BUSY_SHARE: f64 = 0.5;
    /// The shortest time a share is measured over.
    const WINDOW: Duration = Duration::from_secs(1);

    /// Huge pages are off and wait for the runtime to be busy.
    static HELD: AtomicBool = AtomicBool::new(false);
    static BUSYNESS: Mutex<Busyness> = Mutex::new(Busyness::new());

    /// What the environment asks for.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Policy {
        /// Unset: off until the process is busy.
        WhenBusy,
        Always,
        Never,
    }

    impl Policy {
        fn from_variable(value: Option<&str>) -> Self {
            match value.map(|v| v.trim().to_ascii_lowercase()) {
                None => Self::WhenBusy,
                Some(v) if matches!(v.as_str(), "0" | "false" | "off" | "no") => Self::Never,
                Some(_) => Self::Always,
            }
        }
    }

    /// Turns huge pages off until [`allow_if_busy`] sees a busy runtime, as the
    /// environment asks (see the module's documentation).
    pub fn hold_off() {
        let value = std::env::var(VARIABLE).ok();
        match Policy::from_variable(value.as_deref()) {
            Policy::Always => {}
            // mimalloc has done this already if it saw the variable as the process started;
            // a settings file sets it after that.
            Policy::Never => {
                sys::set_disabled(true);
            }
            Policy::WhenBusy => {
                if sys::disabled() == Some(false) && sys::set_disabled(true) {
                    HELD.store(true, Ordering::Release);
                }
            }
        }
    }

    /// Turns huge pages on, for good, once the runtime has been busy enough.
    pub(super) fn allow_if_busy(now: Instant) {
        if !HELD.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let metrics = runtime.metrics();
        let busy = (0..metrics.num_workers())
            .map(|worker| metrics.worker_total_busy_duration(worker))
            .sum();
        let busy_enough = match BUSYNESS.lock() {
            Ok(mut busyness) => busyness.observe(now, busy),
            Err(_) => return,
        };
        if busy_enough && HELD.swap(false, Ordering::AcqRel) {
            if sys::set_disabled(false) {
                tracing::info!("the runtime is busy: transparent huge pages allowed from now on");
            } else {
                tracing::warn!(
                    "the runtime is busy, but transparent huge pages stay off: the kernel refused"
                );
            }
        }
    }

    /// The runtime's busy time, sampled now and then.
    #[derive(Debug)]
    struct Busyness {
        last: Option<(Instant, Duration)>,
    }

    impl Busyness {
        const fn new() -> Self {
            Self { last: None }
        }

        /// Takes the workers' total busy time at `at`; true when, since the last sample
        /// (at least [`WINDOW`] ago), they were busy for [`BUSY_SHARE`] of the time.
        fn observe(&mut self, at: Instant, busy: Duration) -> bool {
            let Some((then, busy_then)) = self.last else {
                self.last = Some((at, busy));
                return false;
            };
            let elapsed = at.saturating_duration_since(then);
            if elapsed < WINDOW {
                return false;
            }
            self.last = Some((at, busy));
            busy.saturating_sub(busy_then).as_secs_f64() >= BUSY_SHARE * elapsed.as_secs_f64()
        }
    }

    #[cfg(target_os = "linux")]
    mod sys {
        use libc::{c_int, c_ulong};

        /// Whether huge pages are off for this process now (`None`: the kernel cannot say).
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
        pub fn disabled() -> Option<bool> {
            None
        }

        pub fn set_disabled(_disabled: bool) -> bool {
            false
        }
    }

    #[cfg(test)]
    mod tests {
        use std::time::{Duration, Instant};

        use super::{Busyness, Policy, sys};

        #[test]
        fn the_variable_decides_when_set() {
            assert_eq!(Policy::from_variable(None), Policy::WhenBusy);
            for off in ["0", "false", "OFF", " no "] {
                assert_eq!(Policy::from_variable(Some(off)), Policy::Never, "{off}");
            }
            for on in ["1", "true", "on", "yes"] {
                assert_eq!(Policy::from_variable(Some(on)), Policy::Always, "{on}");
            }
        }

        #[test]
        fn busy_means_half_the_time_over_a_second_or_more() {
            let start = Instant::now();
            let at = |ms: u64| start + Duration::from_millis(ms);
            let busy = Duration::from_millis;
            let mut busyness = Busyness::new();
            // The first sample only sets the baseline, however busy.
            assert!(!busyness.observe(at(0), busy(5_000)));
            // A burst of 300 ms within a quiet minute is not busy.
            assert!(!busyness.observe(at(60_000), busy(5_300)));
            // Too short to judge: 900 ms busy in 950 ms; the baseline stays.
            assert!(!busyness.observe(at(60_950), busy(6_200)));
            // 1 200 ms of busy time over 1 500 ms (two workers) is.
            assert!(busyness.observe(at(61_500), busy(6_500)));
            // 400 ms over the next second is not.
            assert!(!busyness.observe(at(62_500), busy(6_900)));
        }

        #[cfg(target_os = "linux")]
        #[test]
        fn huge_pages_turn_off_and_on_again() {
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
