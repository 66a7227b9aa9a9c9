//! The load loop: `users` virtual users started evenly over `ramp`, each sending one
//! request after the other (closed loop, optionally pausing `think` between requests)
//! until the end of `duration` after the ramp. Only requests that start after the ramp
//! are measured; a progress line shows the rate and errors every second.
//!
//! Latencies go into one HdrHistogram per user (microseconds, 3 significant digits),
//! merged at the end, so recording costs no lock.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;

#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub users: usize,
    pub ramp: Duration,
    pub duration: Duration,
    /// Mean pause of a user between two requests (uniform in 0.5–1.5 × this); zero runs
    /// the users flat out.
    pub think: Duration,
}

/// What one measured run produced.
pub struct Measured {
    pub label: String,
    pub shape: Shape,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub latency_us: Histogram<u64>,
    pub window: Duration,
}

impl Measured {
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64().max(1e-9)
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// A latency quantile in milliseconds.
    pub fn ms(&self, quantile: f64) -> f64 {
        round2(self.latency_us.value_at_quantile(quantile) as f64 / 1000.0)
    }

    pub fn max_ms(&self) -> f64 {
        round2(self.latency_us.max() as f64 / 1000.0)
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "scenario": self.label,
            "users": self.shape.users,
            "ramp_seconds": self.shape.ramp.as_secs_f64(),
            "measured_seconds": round2(self.window.as_secs_f64()),
            "think_ms_mean": self.shape.think.as_millis() as u64,
            "requests_ok": self.ok,
            "throughput_per_second": self.throughput().round(),
            "errors_total": self.error_count(),
            "errors": self.errors,
            "latency_ms": {
                "p50": self.ms(0.50),
                "p90": self.ms(0.90),
                "p99": self.ms(0.99),
                "max": self.max_ms(),
                "mean": round2(self.latency_us.mean() / 1000.0),
            },
        })
    }
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Runs `request(user, iteration)` as `shape` says. An `Err` is counted under its text
/// (keep it short and stable: `http 503`, `UNAVAILABLE`, …).
pub async fn drive<F, Fut>(label: &str, shape: Shape, request: F) -> anyhow::Result<Measured>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let started = Instant::now();
    let measure_from = started + shape.ramp;
    let end = measure_from + shape.duration;
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let active = Arc::new(AtomicUsize::new(0));
    let users = shape.users.max(1);
    let mut tasks = Vec::with_capacity(users);
    for user in 0..users {
        let request = request.clone();
        let (done, failed, active) = (done.clone(), failed.clone(), active.clone());
        let offset = shape.ramp.mul_f64(user as f64 / users as f64);
        tasks.push(tokio::spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut ok = 0u64;
            let mut rng = Jitter::new(user as u64);
            tokio::time::sleep_until((started + offset).into()).await;
            active.fetch_add(1, Ordering::Relaxed);
            let mut iteration = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let outcome = request(user, iteration).await;
                let took = sent.elapsed();
                iteration += 1;
                done.fetch_add(1, Ordering::Relaxed);
                if outcome.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                if sent >= measure_from {
                    match outcome {
                        Ok(()) => {
                            ok += 1;
                            histogram.saturating_record(took.as_micros().max(1) as u64);
                        }
                        Err(kind) => *errors.entry(kind).or_default() += 1,
                    }
                }
                if !shape.think.is_zero() {
                    tokio::time::sleep(shape.think.mul_f64(0.5 + rng.next_unit())).await;
                }
            }
            active.fetch_sub(1, Ordering::Relaxed);
            Ok::<_, String>((histogram, errors, ok))
        }));
    }
    let progress = tokio::spawn(progress_line(
        label.to_owned(),
        started,
        end,
        users,
        done.clone(),
        failed.clone(),
        active.clone(),
    ));
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut ok = 0;
    for task in tasks {
        let (histogram, user_errors, user_ok) = task.await?.map_err(anyhow::Error::msg)?;
        latency_us.add(&histogram)?;
        for (kind, n) in user_errors {
            *errors.entry(kind).or_default() += n;
        }
        ok += user_ok;
    }
    let finished = Instant::now();
    progress.abort();
    let measured = Measured {
        label: label.to_owned(),
        shape,
        ok,
        errors,
        latency_us,
        // Requests that started before the end may finish after it: count the real window.
        window: finished.saturating_duration_since(measure_from),
    };
    eprintln!(
        "{label}: {} req/s, p50 {} ms, p99 {} ms, max {} ms, {} errors",
        measured.throughput().round(),
        measured.ms(0.5),
        measured.ms(0.99),
        measured.max_ms(),
        measured.error_count()
    );
    Ok(measured)
}

async fn progress_line(
    label: String,
    started: Instant,
    end: Instant,
    users: usize,
    done: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    active: Arc<AtomicUsize>,
) {
    let terminal = std::io::stderr().is_terminal();
    let mut last = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = done.load(Ordering::Relaxed);
        let line = format!(
            "{label}: {:>4.0}/{:.0} s  users {:>4}/{users}  {:>6} req/s  errors {}",
            started.elapsed().as_secs_f64(),
            (end - started).as_secs_f64(),
            active.load(Ordering::Relaxed),
            now - last,
            failed.load(Ordering::Relaxed),
        );
        last = now;
        if terminal {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
    }
}

/// A tiny per-user random source (xorshift) for think times and picks; no shared state.
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Self {
        Jitter(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [0, 1).
    pub fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
