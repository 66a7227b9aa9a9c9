//! Crash points for fault tests: a process dies by SIGKILL at a named point of its work,
//! so a test can kill it exactly where a crash is most dangerous instead of hoping a
//! `kill -9` from outside lands there.
//!
//! `TILLSTREAM_FAILPOINTS` is read once, at the first point a process passes. It holds
//! comma-separated names, each optionally with `@N` to die on the N-th pass (default: the
//! first): `TILLSTREAM_FAILPOINTS=relay.after_publish@3`. Unset (as in production), a point
//! costs one atomic load and does nothing.
//!
//! The points:
//!
//! | name | where |
//! |---|---|
//! | `relay.after_publish` | the relay has every ack of a batch from JetStream, and has not yet committed its checkpoint |
//! | `projector.before_ack` | the projector has committed a batch that changed the read models, and has not yet acknowledged it to JetStream |
//!
//! Reaching an armed point logs one error line naming it, then the process sends itself
//! SIGKILL: no destructor, no flush, no graceful shutdown runs, exactly as if the machine
//! had killed it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that arms crash points.
pub const ENV: &str = "TILLSTREAM_FAILPOINTS";

struct Armed {
    name: String,
    /// The pass on which the process dies (1 = the first).
    on_pass: u64,
    passes: AtomicU64,
}

static ARMED: OnceLock<Vec<Armed>> = OnceLock::new();

/// Parses `name[@N],…`; entries that do not parse are ignored (a typo leaves the process
/// running, which a test notices because the process never dies).
fn parse(spec: &str) -> Vec<Armed> {
    spec.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .filter_map(|entry| {
            let (name, on_pass) = match entry.split_once('@') {
                Some((name, n)) => (name, n.parse().ok().filter(|n: &u64| *n >= 1)?),
                None => (entry, 1),
            };
            Some(Armed {
                name: name.to_owned(),
                on_pass,
                passes: AtomicU64::new(0),
            })
        })
        .collect()
}

/// Marks the point `name`. Kills the process here when `TILLSTREAM_FAILPOINTS` arms it
/// and this is the chosen pass; otherwise returns at once.
pub fn point(name: &str) {
    let armed = ARMED.get_or_init(|| std::env::var(ENV).map(|s| parse(&s)).unwrap_or_default());
    if armed.is_empty() {
        return;
    }
    for point in armed.iter().filter(|p| p.name == name) {
        let pass = point.passes.fetch_add(1, Ordering::SeqCst) + 1;
        if pass == point.on_pass {
            tracing::error!(
                failpoint = name,
                pass,
                "failpoint reached; killing this process"
            );
            kill_self();
        }
    }
}

#[cfg(unix)]
fn kill_self() -> ! {
    // SAFETY: kill(2) on our own pid with a constant signal touches no memory of ours.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    // SIGKILL cannot be caught; this line is not reached.
    std::process::abort()
}

#[cfg(not(unix))]
fn kill_self() -> ! {
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_names_and_passes() {
        let armed = parse("relay.after_publish, projector.before_ack@3,bad@0,also@x,");
        let parsed: Vec<(&str, u64)> = armed.iter().map(|a| (a.name.as_str(), a.on_pass)).collect();
        assert_eq!(
            parsed,
            [("relay.after_publish", 1), ("projector.before_ack", 3)]
        );
        assert!(parse("").is_empty());
    }
}
