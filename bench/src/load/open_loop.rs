//! Open-loop load at a rate that changes over time: requests are sent when the offered
//! rate says so, whether or not earlier ones have been answered (a slow platform does not
//! slow the sender, as with real users), up to a cap on requests in flight.
//!
//! Every 10 ms the sender credits `rate(t) × elapsed` requests and sends the whole ones,
//! so the offered rate follows `rate` closely at any speed of the loop; a progress line
//! every 10 s shows the offered and completed rates.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::{Mutex, Semaphore};

use super::driver::round2;

/// How often the sender wakes.
const TICK: Duration = Duration::from_millis(10);
/// How often a progress line is printed (and the per-interval counts are kept).
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// What an open-loop run did, with the offered and completed requests of every
/// [`PROGRESS_EVERY`] interval.
pub struct OpenLoopRun {
    pub sent: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    /// Ticks whose requests were not sent because `max_in_flight` were outstanding.
    pub skipped_in_flight_cap: u64,
    pub latency_us: Histogram<u64>,
    /// (seconds since the start, offered requests/s, completed requests/s) per interval.
    pub intervals: Vec<(f64, f64, f64)>,
    pub elapsed: Duration,
}

impl OpenLoopRun {
    pub fn to_json(&self) -> serde_json::Value {
        let ms = |q: f64| round2(self.latency_us.value_at_quantile(q) as f64 / 1000.0);
        json!({
            "requests_sent": self.sent,
            "requests_ok": self.ok,
            "errors_total": self.errors.values().sum::<u64>(),
            "errors": self.errors,
            "skipped_in_flight_cap": self.skipped_in_flight_cap,
            "seconds": round2(self.elapsed.as_secs_f64()),
            "latency_ms": {
                "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99),
                "max": round2(self.latency_us.max() as f64 / 1000.0),
            },
            "offered_completed_per_second_every_10s": self.intervals.iter()
                .map(|(t, offered, done)| [t.round(), offered.round(), done.round()])
                .collect::<Vec<_>>(),
        })
    }
}

/// Sends `request(n)` (n counting from 0) at `rate(seconds since start)` requests per
/// second for `duration`, with at most `max_in_flight` outstanding, then waits for the
/// ones still in flight. An `Err` is counted under its text.
pub async fn drive<R, F, Fut>(
    label: &str,
    duration: Duration,
    max_in_flight: usize,
    mut rate: R,
    request: F,
) -> anyhow::Result<OpenLoopRun>
where
    R: FnMut(f64) -> f64,
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let errors = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let completed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let (mut sent, mut skipped, mut credit) = (0u64, 0u64, 0.0f64);
    let mut last = started;
    let mut intervals = Vec::new();
    let (mut interval_start, mut interval_sent, mut interval_done) = (started, 0u64, 0u64);
    let mut tasks = tokio::task::JoinSet::new();
    while started.elapsed() < duration {
        tick.tick().await;
        let now = Instant::now();
        let offered = rate(now.duration_since(started).as_secs_f64()).max(0.0);
        credit += offered * now.duration_since(last).as_secs_f64();
        last = now;
        while credit >= 1.0 {
            credit -= 1.0;
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                skipped += 1;
                continue;
            };
            let n = sent;
            sent += 1;
            let (request, latency, errors, completed, failed) = (
                request.clone(),
                latency.clone(),
                errors.clone(),
                completed.clone(),
                failed.clone(),
            );
            tasks.spawn(async move {
                let start = Instant::now();
                let outcome = request(n).await;
                let took = start.elapsed();
                drop(slot);
                completed.fetch_add(1, Ordering::Relaxed);
                match outcome {
                    Ok(()) => latency
                        .lock()
                        .await
                        .saturating_record(took.as_micros().max(1) as u64),
                    Err(kind) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        *errors.lock().await.entry(kind).or_default() += 1;
                    }
                }
            });
        }
        // Finished tasks are dropped as they go, so a long run holds only those in flight.
        while tasks.try_join_next().is_some() {}
        if now.duration_since(interval_start) >= PROGRESS_EVERY {
            let seconds = now.duration_since(interval_start).as_secs_f64();
            let done = completed.load(Ordering::Relaxed);
            let at = now.duration_since(started).as_secs_f64();
            let (offered_rate, done_rate) = (
                (sent - interval_sent) as f64 / seconds,
                (done - interval_done) as f64 / seconds,
            );
            intervals.push((at, offered_rate, done_rate));
            eprintln!(
                "{label}: {at:>5.0}/{:.0} s  target {offered:>6.1}/s  sent {offered_rate:>6.1}/s  \
                 done {done_rate:>6.1}/s  in flight {}  errors {}  skipped {skipped}",
                duration.as_secs_f64(),
                max_in_flight - slots.available_permits(),
                failed.load(Ordering::Relaxed),
            );
            (interval_start, interval_sent, interval_done) = (now, sent, done);
        }
    }
    let elapsed = started.elapsed();
    while let Some(joined) = tasks.join_next().await {
        joined?;
    }
    let latency_us = latency.lock().await.clone();
    let errors = errors.lock().await.clone();
    let ok = sent - errors.values().sum::<u64>();
    Ok(OpenLoopRun {
        sent,
        ok,
        errors,
        skipped_in_flight_cap: skipped,
        latency_us,
        intervals,
        elapsed,
    })
}
