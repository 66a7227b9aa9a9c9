//! Every process reports its own CPU and memory on `metrics.resources.<service>`, read
//! from `/proc/self` (no agent, no extra daemon), so the predictor sees the load of each
//! service next to its request rate.
//!
//! CPU is the process's user + system time since the previous sample, as a percentage of
//! one core (so it may exceed 100 on several cores); memory is the resident set. Samples
//! are best effort: published without waiting for an acknowledgement, skipped while NATS
//! is away, and not taken at all where `/proc` does not exist.

use std::time::{Duration, Instant};

use chrono::Utc;
use tillstream_events::{Namespace, ResourceSample};

use crate::Shutdown;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;
/// Page size of `/proc/<pid>/statm` (4 KiB on the platforms we run on).
const PAGE_BYTES: u64 = 4096;

/// CPU seconds (user + system) used by this process so far.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count fields
    // after its closing parenthesis. utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE_BYTES)
}

/// This process's name on the wire: host name and process id.
fn instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    format!("{host}-{}", std::process::id())
}

/// How often a process reports.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Starts a task that publishes a [`ResourceSample`] for `service` every
/// [`SAMPLE_EVERY`] until `shutdown` fires. Does nothing where `/proc/self/stat` cannot
/// be read. Every service's `App::run` calls this once.
pub fn report(
    client: async_nats::Client,
    namespace: &Namespace,
    service: &str,
    shutdown: Shutdown,
) {
    report_every(client, namespace, service, SAMPLE_EVERY, shutdown);
}

/// [`report`] at another interval.
pub fn report_every(
    client: async_nats::Client,
    namespace: &Namespace,
    service: &str,
    every: Duration,
    shutdown: Shutdown,
) {
    let Some(mut last_cpu) = cpu_seconds() else {
        tracing::debug!("no /proc/self/stat; resource samples disabled");
        return;
    };
    let subject = namespace.resource_metrics_subject(service);
    let (service, instance) = (service.to_owned(), instance());
    tokio::spawn(async move {
        let mut last_at = Instant::now();
        let mut ticker = tokio::time::interval(every.max(Duration::from_millis(100)));
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let (Some(cpu), Some(rss)) = (cpu_seconds(), rss_bytes()) else {
                continue;
            };
            let now = Instant::now();
            let wall = now.duration_since(last_at).as_secs_f64();
            let sample = ResourceSample {
                service: service.clone(),
                instance: instance.clone(),
                cpu_percent: if wall > 0.0 {
                    100.0 * (cpu - last_cpu).max(0.0) / wall
                } else {
                    0.0
                },
                rss_bytes: rss,
                at: Utc::now(),
            };
            (last_cpu, last_at) = (cpu, now);
            if client.connection_state() != async_nats::connection::State::Connected {
                continue;
            }
            if let Ok(payload) = serde_json::to_vec(&sample) {
                let _ = client.publish(subject.clone(), payload.into()).await;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let before = cpu_seconds().expect("/proc/self/stat");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(cpu_seconds().unwrap() >= before);
        assert!(rss_bytes().unwrap() > 0);
        assert!(instance().ends_with(&std::process::id().to_string()));
    }
}
