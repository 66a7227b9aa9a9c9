//! Load traces: one row per window (start, request rate, CPU), generated synthetically
//! with a fixed seed or read from a file, for the backtest.
//!
//! The synthetic kinds are built from the same parts real load has: a diurnal cycle (low
//! at 03:00 UTC, high mid-afternoon), a weekly pattern (weekends at 60%), noise (Poisson
//! counting noise on requests plus a few percent of burstiness, and measurement noise on
//! CPU), sudden spikes, and a slow ramp. CPU follows the rate (5% idle + 0.55% per
//! request/s, one replica) plus its own noise. The same seed gives the same trace.
//!
//! Files: `.csv` (`at,rate,cpu_percent`, RFC 3339 times) or `.json` (an array of rows).

use std::f64::consts::TAU;
use std::path::Path;

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One window of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TracePoint {
    pub at: DateTime<Utc>,
    /// Requests per second.
    pub rate: f64,
    /// CPU, percent of one core.
    pub cpu_percent: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceKind {
    /// A week of diurnal cycles with a weekly pattern and noise.
    Diurnal,
    /// The diurnal week with sudden spikes (×2–3 for 2–10 minutes, a few a day).
    Spikes,
    /// Half a day at a steady level, then a slow three-hour ramp across 70% CPU.
    Ramp,
    /// A steady level (CPU about 60%) with noise only.
    Noise,
}

impl TraceKind {
    pub fn name(self) -> &'static str {
        match self {
            TraceKind::Diurnal => "diurnal",
            TraceKind::Spikes => "spikes",
            TraceKind::Ramp => "ramp",
            TraceKind::Noise => "noise",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON trace: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} line {line}: {reason}")]
    Csv {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("{0}: the trace needs at least two windows, equally spaced")]
    Shape(String),
}

pub const WINDOW_SECS: i64 = 10;
const IDLE_CPU: f64 = 5.0;
/// CPU percent per request/s: the diurnal peak (1000 requests/s) runs one replica at 60%.
const CPU_PER_RATE: f64 = 0.055;

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
}

/// Requests per second observed in one window when `rate` is the true mean: Poisson
/// counting noise (normal approximation) times a few percent of burstiness.
fn observed_rate(rng: &mut ChaCha8Rng, rate: f64) -> f64 {
    let count = rate * WINDOW_SECS as f64;
    let counted = count + count.sqrt() * normal(rng);
    let bursty = counted * (1.0 + 0.02 * normal(rng));
    (bursty / WINDOW_SECS as f64).max(0.0)
}

fn cpu_for(rng: &mut ChaCha8Rng, rate: f64, noise: f64) -> f64 {
    (IDLE_CPU + CPU_PER_RATE * rate + noise * normal(rng)).max(0.0)
}

/// The diurnal-and-weekly mean rate at `at`, peaking at `peak` requests/s.
fn diurnal_rate(at: DateTime<Utc>, peak: f64) -> f64 {
    let hour = f64::from(at.num_seconds_from_midnight()) / 3600.0;
    let day = 0.5 - 0.5 * (TAU * (hour - 3.0) / 24.0).cos();
    let weekly = if at.weekday().number_from_monday() >= 6 {
        0.6
    } else {
        1.0
    };
    peak * (0.15 + 0.85 * day) * weekly
}

/// Monday 2026-01-05 00:00 UTC: every synthetic trace starts on a Monday at midnight.
pub fn synthetic_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// Generates a trace of `kind` with `seed`.
pub fn generate(kind: TraceKind, seed: u64) -> Vec<TracePoint> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let start = synthetic_start();
    let at = |i: i64| start + chrono::Duration::seconds(i * WINDOW_SECS);
    let per_hour = 3600 / WINDOW_SECS;
    match kind {
        TraceKind::Diurnal | TraceKind::Spikes => {
            let windows = 7 * 24 * per_hour;
            let mut spike_until = -1i64;
            let mut spike_factor = 1.0;
            (0..windows)
                .map(|i| {
                    let mut rate = diurnal_rate(at(i), 1000.0);
                    if kind == TraceKind::Spikes {
                        // About four spikes a day.
                        if i > spike_until && rng.random::<f64>() < 4.0 / (24.0 * per_hour as f64) {
                            spike_until = i + rng.random_range(12..=60);
                            spike_factor = rng.random_range(2.0..3.0);
                        }
                        if i <= spike_until {
                            rate *= spike_factor;
                        }
                    }
                    let rate = observed_rate(&mut rng, rate);
                    TracePoint {
                        at: at(i),
                        rate,
                        cpu_percent: cpu_for(&mut rng, rate, 1.0),
                    }
                })
                .collect()
        }
        TraceKind::Ramp => {
            let (flat, ramp, hold) = (12 * per_hour, 3 * per_hour, per_hour);
            (0..flat + ramp + hold)
                .map(|i| {
                    let progress = ((i - flat) as f64 / ramp as f64).clamp(0.0, 1.0);
                    let rate = observed_rate(&mut rng, 600.0 + 1200.0 * progress);
                    TracePoint {
                        at: at(i),
                        rate,
                        cpu_percent: cpu_for(&mut rng, rate, 1.0),
                    }
                })
                .collect()
        }
        TraceKind::Noise => (0..2 * 24 * per_hour)
            .map(|i| {
                let rate = observed_rate(&mut rng, 1000.0) * (1.0 + 0.05 * normal(&mut rng));
                TracePoint {
                    at: at(i),
                    rate,
                    cpu_percent: cpu_for(&mut rng, rate, 3.0),
                }
            })
            .collect(),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TraceError + '_ {
    move |source| TraceError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn is_json(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// Writes `points` as CSV, or as JSON when the file name ends in `.json`.
pub fn write(path: &Path, points: &[TracePoint]) -> Result<(), TraceError> {
    let text = if is_json(path) {
        serde_json::to_string(points).map_err(|source| TraceError::Json {
            path: path.display().to_string(),
            source,
        })?
    } else {
        let mut text = String::from("at,rate,cpu_percent\n");
        for p in points {
            text.push_str(&format!(
                "{},{:.3},{:.3}\n",
                p.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                p.rate,
                p.cpu_percent
            ));
        }
        text
    };
    std::fs::write(path, text).map_err(io(path))
}

/// Reads a trace written by [`write`] (or recorded elsewhere in the same format).
pub fn read(path: &Path) -> Result<Vec<TracePoint>, TraceError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let name = path.display().to_string();
    let points: Vec<TracePoint> = if is_json(path) {
        serde_json::from_str(&text).map_err(|source| TraceError::Json {
            path: name.clone(),
            source,
        })?
    } else {
        parse_csv(&name, &text)?
    };
    let spaced = points.len() >= 2
        && points
            .windows(2)
            .all(|w| w[1].at - w[0].at == points[1].at - points[0].at)
        && points[1].at > points[0].at;
    if !spaced {
        return Err(TraceError::Shape(name));
    }
    Ok(points)
}

fn parse_csv(path: &str, text: &str) -> Result<Vec<TracePoint>, TraceError> {
    let error = |line: usize, reason: String| TraceError::Csv {
        path: path.to_owned(),
        line,
        reason,
    };
    let mut points = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        if line.trim().is_empty() || (n == 0 && line.starts_with("at,")) {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [at, rate, cpu] = fields[..] else {
            return Err(error(
                line_no,
                format!("expected 3 fields, found {}", fields.len()),
            ));
        };
        let at = DateTime::parse_from_rfc3339(at)
            .map_err(|e| error(line_no, format!("time `{at}`: {e}")))?
            .with_timezone(&Utc);
        let number = |field: &str, what: &str| {
            field
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| {
                    error(
                        line_no,
                        format!("{what} `{field}` is not a non-negative number"),
                    )
                })
        };
        points.push(TracePoint {
            at,
            rate: number(rate, "rate")?,
            cpu_percent: number(cpu, "cpu_percent")?,
        });
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_trace_and_files_round_trip() {
        let a = generate(TraceKind::Ramp, 7);
        assert_eq!(a, generate(TraceKind::Ramp, 7));
        assert_ne!(a, generate(TraceKind::Ramp, 8));
        let dir = std::env::temp_dir().join(format!("trace-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["t.csv", "t.json"] {
            let path = dir.join(name);
            write(&path, &a[..100]).unwrap();
            let back = read(&path).unwrap();
            assert_eq!(back.len(), 100);
            assert!((back[5].rate - a[5].rate).abs() < 1e-3);
            assert_eq!(back[5].at, a[5].at);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_csv_says_where() {
        let err = parse_csv(
            "x.csv",
            "at,rate,cpu_percent\n2026-01-05T00:00:00Z,1,2\nnope,1\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        let err = parse_csv("x.csv", "2026-01-05T00:00:00Z,-1,2\n").unwrap_err();
        assert!(err.to_string().contains("rate"), "{err}");
    }

    #[test]
    fn diurnal_shape() {
        let week = generate(TraceKind::Diurnal, 1);
        assert_eq!(week.len(), 7 * 24 * 360);
        let mean = |from: usize, n: usize| {
            week[from..from + n].iter().map(|p| p.rate).sum::<f64>() / n as f64
        };
        // Monday 15:00 vs Monday 03:00 vs Saturday 15:00.
        let (peak, trough, weekend) = (
            mean(15 * 360, 60),
            mean(3 * 360, 60),
            mean((5 * 24 + 15) * 360, 60),
        );
        assert!(
            peak > 900.0 && trough < 200.0 && (weekend / peak - 0.6).abs() < 0.05,
            "{peak} {trough} {weekend}"
        );
    }
}
