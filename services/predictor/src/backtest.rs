//! Replaying a load trace through the predictor, window by window, to measure what it
//! would have done: forecast error against the naive "the next horizon looks like now",
//! and how long before CPU actually crossed the threshold each scale-out fired.
//!
//! Forecasts are of the one-minute mean one horizon ahead, and so is the naive forecast
//! (the last measured one-minute mean). The replay is walk-forward: every forecast is made from windows before it and scored
//! against the window one horizon later, and the model is refitted on the same schedule
//! as live. It is open-loop: the trace's CPU does not drop after a scale-out, so each
//! crossing is scored by the first scale-out around it.
//!
//! "CPU crosses the threshold" means the one-minute mean of measured CPU goes above it
//! (a single noisy window over 70% is not a crossing); a new crossing needs the mean to
//! have been back under the threshold for the sustain period first.
//!
//! The first `warmup` of the trace is replayed but not scored (6 h by default: the model
//! fits only once it has an hour of history beyond its look-back and horizon, and the time
//! of day means little before some of the day has been seen). A shorter trace, such as
//! one recorded from a load-generator run, needs a shorter warmup; one that leaves no
//! window to score is an error rather than a report of nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tillstream_events::{ScalingDecision, ScalingDirection};

use crate::predictor::{PredictorConfig, ServiceModel};
use crate::trace::TracePoint;

#[derive(Debug, Clone)]
pub struct BacktestConfig {
    pub predictor: PredictorConfig,
    /// Windows at the start that are not scored (the model has little history yet).
    pub warmup: Duration,
}

/// The default warmup: six hours.
pub const DEFAULT_WARMUP: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error(
        "nothing to score: the trace has {windows} windows of {width_secs} s, and the warmup \
         ({warmup_windows} windows) plus the forecast horizon ({horizon_windows} windows) \
         leave none; give a shorter warmup or a longer trace"
    )]
    NothingToScore {
        windows: usize,
        width_secs: f64,
        warmup_windows: usize,
        horizon_windows: usize,
    },
}

impl Default for BacktestConfig {
    fn default() -> Self {
        let mut predictor = PredictorConfig::default();
        predictor.rule.initial_replicas = 2;
        BacktestConfig {
            predictor,
            warmup: DEFAULT_WARMUP,
        }
    }
}

/// Mean absolute percentage errors (fractions) of the model and of the naive forecast.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Mape {
    pub model: f64,
    pub naive: f64,
    /// `1 − model / naive`: 0.3 means 30% lower error than naive.
    pub improvement: f64,
    pub scored_windows: usize,
}

/// One crossing of the CPU threshold and the scale-out that answered it.
#[derive(Debug, Clone, Serialize)]
pub struct Crossing {
    pub at: DateTime<Utc>,
    pub trigger_at: Option<DateTime<Utc>>,
    /// Seconds the trigger came before the crossing (negative: after it); None: missed.
    pub lead_secs: Option<i64>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BacktestReport {
    pub windows: usize,
    /// Windows replayed but not scored.
    pub warmup_windows: usize,
    /// The start of the first window after which the model had a fit (before it, its
    /// forecast is the naive one and both score alike); None: it never had enough history.
    pub first_fit_at: Option<DateTime<Utc>>,
    pub rate: Mape,
    pub cpu: Mape,
    pub crossings: Vec<Crossing>,
    pub decisions: Vec<ScalingDecision>,
    /// Decisions reversing the previous one within 30 minutes.
    pub flaps: usize,
}

const FLAP_WINDOW: Duration = Duration::from_secs(1800);

/// Trailing means over `span` windows (shorter at the start).
fn minute_means(values: &[f64], span: usize) -> Vec<f64> {
    let mut sum = 0.0;
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            sum += v;
            if i >= span {
                sum -= values[i - span];
            }
            sum / (i + 1).min(span) as f64
        })
        .collect()
}

/// Scores `model[i]` (the forecast made after window `i`) and the naive forecast
/// `minute[i]` against `minute[i + horizon]`.
fn mape(minute: &[f64], model: &[Option<f64>], from: usize, horizon: usize, floor: f64) -> Mape {
    let (actual, naive) = (minute, minute);
    let (mut m, mut n, mut count) = (0.0, 0.0, 0usize);
    for i in from..actual.len().saturating_sub(horizon) {
        let (Some(forecast), truth) = (model[i], actual[i + horizon]) else {
            continue;
        };
        if truth < floor || truth <= 0.0 {
            continue;
        }
        m += (forecast - truth).abs() / truth;
        n += (naive[i] - truth).abs() / truth;
        count += 1;
    }
    let (model, naive) = if count == 0 {
        (f64::NAN, f64::NAN)
    } else {
        (m / count as f64, n / count as f64)
    };
    Mape {
        model,
        naive,
        improvement: 1.0 - model / naive,
        scored_windows: count,
    }
}

/// Replays `points` (equally spaced windows of the configured width) through one
/// service's model and rule. Fails when the warmup and the horizon leave no window to score.
pub fn run(
    points: &[TracePoint],
    config: &BacktestConfig,
) -> Result<BacktestReport, BacktestError> {
    let width = config.predictor.windows.width.as_secs_f64().max(1.0);
    let horizon = (config.predictor.horizon.as_secs_f64() / width).round() as usize;
    let warmup = (config.warmup.as_secs_f64() / width) as usize;
    if warmup + horizon >= points.len() {
        return Err(BacktestError::NothingToScore {
            windows: points.len(),
            width_secs: width,
            warmup_windows: warmup,
            horizon_windows: horizon,
        });
    }
    let capacity = config.predictor.windows.capacity.max(1);
    let mut model = ServiceModel::new(&config.predictor);
    let rates: Vec<f64> = points.iter().map(|p| p.rate).collect();
    let cpus: Vec<f64> = points.iter().map(|p| p.cpu_percent).collect();
    let mut rate_forecasts = vec![None; points.len()];
    let mut cpu_forecasts = vec![None; points.len()];
    let mut decisions = Vec::new();
    let mut first_fit_at = None;
    for (i, point) in points.iter().enumerate() {
        let from = (i + 1).saturating_sub(capacity);
        let Some(step) = model.step(
            "backtest",
            &rates[from..=i],
            &cpus[from..=i],
            Some(point.cpu_percent),
            point.at,
        ) else {
            continue;
        };
        if first_fit_at.is_none() && model.is_fitted() {
            first_fit_at = Some(point.at);
        }
        rate_forecasts[i] = Some(step.forecast.forecast_rate);
        cpu_forecasts[i] = step.forecast.forecast_cpu_percent;
        decisions.extend(step.decision);
    }
    let span = ((60.0 / width).round() as usize).max(1);
    let floor = config.predictor.mape_floor;
    let rule = &config.predictor.rule;
    Ok(BacktestReport {
        windows: points.len(),
        warmup_windows: warmup,
        first_fit_at,
        rate: mape(
            &minute_means(&rates, span),
            &rate_forecasts,
            warmup,
            horizon,
            floor,
        ),
        cpu: mape(
            &minute_means(&cpus, span),
            &cpu_forecasts,
            warmup,
            horizon,
            floor,
        ),
        crossings: crossings(points, &decisions, rule.cpu_high, rule.sustain, width),
        flaps: flaps(&decisions),
        decisions,
    })
}

fn crossings(
    points: &[TracePoint],
    decisions: &[ScalingDecision],
    threshold: f64,
    sustain: Duration,
    width: f64,
) -> Vec<Crossing> {
    let smooth = ((60.0 / width).round() as usize).max(1);
    let rearm = ((sustain.as_secs_f64() / width).round() as usize).max(1);
    let mut found = Vec::new();
    let (mut armed, mut below_for) = (true, rearm);
    let mut sum = 0.0;
    let mut previous_end: Option<DateTime<Utc>> = None;
    for (i, point) in points.iter().enumerate() {
        sum += point.cpu_percent;
        if i >= smooth {
            sum -= points[i - smooth].cpu_percent;
        }
        if i + 1 < smooth {
            continue;
        }
        let mean = sum / smooth as f64;
        let at = point.at + chrono::Duration::seconds(width as i64);
        if mean > threshold {
            if armed {
                // The first scale-out since the previous crossing, up to 10 minutes after.
                let late_limit = at + chrono::Duration::seconds(600);
                let trigger = decisions.iter().find(|d| {
                    d.direction == ScalingDirection::Out
                        && previous_end.is_none_or(|end| d.at > end)
                        && d.at <= late_limit
                });
                found.push(Crossing {
                    at,
                    trigger_at: trigger.map(|d| d.at),
                    lead_secs: trigger.map(|d| (at - d.at).num_seconds()),
                    reason: trigger.map(|d| d.reason.clone()),
                });
                armed = false;
            }
            below_for = 0;
        } else {
            below_for += 1;
            if !armed && below_for >= rearm {
                armed = true;
                previous_end = Some(at);
            }
        }
    }
    found
}

fn flaps(decisions: &[ScalingDecision]) -> usize {
    decisions
        .windows(2)
        .filter(|pair| {
            pair[0].direction != pair[1].direction
                && (pair[1].at - pair[0].at).to_std().unwrap_or_default() < FLAP_WINDOW
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// Three hours of 10 s windows: a 20-minute cycle between 50 and 150 requests/s.
    fn three_hours() -> Vec<TracePoint> {
        let start = Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 0).unwrap();
        (0..1080)
            .map(|i| {
                let phase = std::f64::consts::TAU * f64::from(i) / 120.0;
                let rate = 100.0 - 50.0 * phase.cos();
                TracePoint {
                    at: start + chrono::Duration::seconds(10 * i64::from(i)),
                    rate,
                    cpu_percent: 5.0 + 0.4 * rate,
                }
            })
            .collect()
    }

    #[test]
    fn the_default_warmup_leaves_a_short_trace_nothing_to_score() {
        let error = run(&three_hours(), &BacktestConfig::default()).unwrap_err();
        let BacktestError::NothingToScore {
            windows,
            warmup_windows,
            horizon_windows,
            ..
        } = error;
        assert_eq!((windows, warmup_windows, horizon_windows), (1080, 2160, 30));
        assert!(error.to_string().contains("shorter warmup"), "{error}");
    }

    #[test]
    fn a_short_warmup_scores_every_window_after_it() {
        let config = BacktestConfig {
            warmup: Duration::from_secs(1800),
            ..BacktestConfig::default()
        };
        let report = run(&three_hours(), &config).unwrap();
        assert_eq!(report.warmup_windows, 180);
        // Every window from the warmup to one horizon before the end.
        assert_eq!(report.rate.scored_windows, 1080 - 180 - 30);
        assert_eq!(report.cpu.scored_windows, 1080 - 180 - 30);
        // An hour of training rows beyond the 15-minute look-back and the 5-minute
        // horizon, at the next refit (every 5 minutes).
        let first_fit = report.first_fit_at.expect("fitted within three hours");
        let start = three_hours()[0].at;
        assert_eq!((first_fit - start).num_seconds(), 4800);
        assert!(report.rate.model.is_finite() && report.rate.naive.is_finite());
    }

    #[test]
    fn a_warmup_as_long_as_the_trace_less_the_horizon_is_refused() {
        let points = three_hours();
        for (warmup_secs, refused) in [(10_490, false), (10_499, false), (10_500, true)] {
            let config = BacktestConfig {
                warmup: Duration::from_secs(warmup_secs),
                ..BacktestConfig::default()
            };
            assert_eq!(run(&points, &config).is_err(), refused, "{warmup_secs} s");
        }
    }
}
