//! The forecasting model: an ordinary least-squares regression (linfa-linear) of a series'
//! one-minute mean one horizon ahead on its recent values and the time of day.
//!
//! The target is the mean of the minute that ends one horizon after the last window (the
//! rate a dashboard shows, not one 10-second window's count, which is mostly counting
//! noise at ordinary rates); the naive forecast it is compared with is likewise the last
//! measured one-minute mean.
//!
//! Features of window `t`, predicting window `t + h` (h = horizon / window width):
//! the last value; the means of the last 1, 5 and 15 minutes (level and trend, which the
//! regression turns into an extrapolation); sine and cosine of the target's time of day
//! (UTC), first and second harmonic (where in the daily cycle the target falls). Features
//! are standardised and a small ridge penalty is added (as extra rows), so flat stretches
//! and the nearly collinear time features of a young history still give a well-posed fit.
//!
//! The model is refitted on a schedule by the caller; between fits it only predicts, which
//! costs a few dozen operations. Its error is measured on windows it had not seen when it
//! forecast them ([`HeldOutError`]), next to the same error of the naive forecast "the
//! next horizon looks like now".

use std::collections::VecDeque;
use std::f64::consts::TAU;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use linfa::Dataset;
use linfa::traits::{Fit, Predict};
use linfa_linear::{FittedLinearRegression, LinearRegression};
use ndarray::{Array1, Array2};

const FEATURES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("not enough history to fit: {rows} rows, need {needed}")]
    TooLittleHistory { rows: usize, needed: usize },
    #[error("regression failed: {0}")]
    Fit(String),
}

/// Which windows the features look at.
#[derive(Debug, Clone, Copy)]
pub struct FeatureLayout {
    /// Windows between the last observed one and the forecast one.
    pub horizon: usize,
    short: usize,
    medium: usize,
    long: usize,
    width: Duration,
}

impl FeatureLayout {
    pub fn new(width: Duration, horizon: Duration) -> Self {
        let windows =
            |d: Duration| ((d.as_secs_f64() / width.as_secs_f64()).round() as usize).max(1);
        FeatureLayout {
            horizon: windows(horizon),
            short: windows(Duration::from_secs(60)),
            medium: windows(Duration::from_secs(300)),
            long: windows(Duration::from_secs(900)),
            width,
        }
    }

    /// Windows averaged into one target (and into the naive forecast): one minute.
    pub fn target_span(&self) -> usize {
        self.short
    }

    /// Windows of history a forecast needs.
    pub fn lookback(&self) -> usize {
        self.long.max(self.medium).max(self.short)
    }

    pub fn horizon_duration(&self) -> Duration {
        self.width * self.horizon as u32
    }

    /// Features of the window ending `values[t]`, for a target starting at `target`.
    /// `prefix[i]` is the sum of `values[..i]`; needs `t + 1 >= lookback`.
    fn row(
        &self,
        values: &[f64],
        prefix: &[f64],
        t: usize,
        target: DateTime<Utc>,
    ) -> [f64; FEATURES] {
        let mean = |n: usize| (prefix[t + 1] - prefix[t + 1 - n]) / n as f64;
        let day = f64::from(target.num_seconds_from_midnight()) / 86_400.0;
        [
            values[t],
            mean(self.short),
            mean(self.medium),
            mean(self.long),
            (TAU * day).sin(),
            (TAU * day).cos(),
            (2.0 * TAU * day).sin(),
            (2.0 * TAU * day).cos(),
        ]
    }
}

fn prefix_sums(values: &[f64]) -> Vec<f64> {
    let mut prefix = Vec::with_capacity(values.len() + 1);
    prefix.push(0.0);
    let mut sum = 0.0;
    for v in values {
        sum += v;
        prefix.push(sum);
    }
    prefix
}

struct Fitted {
    model: FittedLinearRegression<f64>,
    mean: [f64; FEATURES],
    scale: [f64; FEATURES],
}

/// One series' regression. Without a fit (too little history) it forecasts the last
/// minute's mean, the naive forecast.
pub struct Forecaster {
    layout: FeatureLayout,
    fitted: Option<Fitted>,
    /// Ridge penalty relative to the number of rows.
    ridge: f64,
}

/// Fewest training rows for a fit: an hour of windows, so that a young history of noise
/// is not fitted (and extrapolated) as if it were signal.
pub const MIN_TRAINING_ROWS: usize = 360;

impl Forecaster {
    pub fn new(layout: FeatureLayout) -> Self {
        Forecaster {
            layout,
            fitted: None,
            ridge: 1e-3,
        }
    }

    pub fn layout(&self) -> FeatureLayout {
        self.layout
    }

    pub fn is_fitted(&self) -> bool {
        self.fitted.is_some()
    }

    /// Fits on every window of `values` whose target (one horizon later) is also in
    /// `values`; `first_start` is the start of `values[0]`. Keeps the previous fit when this
    /// one fails. Returns the number of training rows.
    pub fn fit(&mut self, values: &[f64], first_start: DateTime<Utc>) -> Result<usize, ModelError> {
        let (lookback, horizon) = (self.layout.lookback(), self.layout.horizon);
        // Rows need `lookback` windows of features and a target minute ending `horizon`
        // windows later (horizon ≥ the target span, so the target is all in the future).
        let rows = values.len().saturating_sub(lookback - 1 + horizon);
        if rows < MIN_TRAINING_ROWS {
            return Err(ModelError::TooLittleHistory {
                rows,
                needed: MIN_TRAINING_ROWS,
            });
        }
        let prefix = prefix_sums(values);
        let width = chrono::Duration::from_std(self.layout.width).unwrap_or_default();
        let mut raw = Vec::with_capacity(rows);
        let mut targets = Vec::with_capacity(rows + FEATURES);
        for t in (lookback - 1)..(lookback - 1 + rows) {
            let target_start = first_start + width * (t + horizon) as i32;
            raw.push(self.layout.row(values, &prefix, t, target_start));
            let end = t + horizon + 1;
            targets
                .push((prefix[end] - prefix[end - self.layout.short]) / self.layout.short as f64);
        }
        let mut mean = [0.0; FEATURES];
        let mut scale = [0.0; FEATURES];
        for j in 0..FEATURES {
            let m = raw.iter().map(|r| r[j]).sum::<f64>() / rows as f64;
            let var = raw.iter().map(|r| (r[j] - m).powi(2)).sum::<f64>() / rows as f64;
            mean[j] = m;
            scale[j] = if var > 1e-12 { var.sqrt() } else { 0.0 };
        }
        let target_mean = targets.iter().sum::<f64>() / rows as f64;
        let penalty = (self.ridge * rows as f64).sqrt();
        let mut x = Array2::<f64>::zeros((rows + FEATURES, FEATURES));
        for (i, r) in raw.iter().enumerate() {
            for j in 0..FEATURES {
                x[[i, j]] = standardise(r[j], mean[j], scale[j]);
            }
        }
        for j in 0..FEATURES {
            x[[rows + j, j]] = penalty;
            targets.push(target_mean);
        }
        let dataset = Dataset::new(x, Array1::from(targets));
        let model = LinearRegression::new()
            .fit(&dataset)
            .map_err(|e| ModelError::Fit(e.to_string()))?;
        if model.params().iter().any(|p| !p.is_finite()) {
            return Err(ModelError::Fit("non-finite coefficients".to_owned()));
        }
        self.fitted = Some(Fitted { model, mean, scale });
        Ok(rows)
    }

    /// The forecast of the one-minute mean ending one horizon after the last window of `values` (which started at
    /// `last_start`), never negative. None without enough history for the features.
    pub fn forecast(&self, values: &[f64], last_start: DateTime<Utc>) -> Option<f64> {
        values.last()?;
        let recent = &values[values.len().saturating_sub(self.layout.short)..];
        let naive = recent.iter().sum::<f64>() / recent.len() as f64;
        let Some(fitted) = &self.fitted else {
            return Some(naive);
        };
        let lookback = self.layout.lookback();
        if values.len() < lookback {
            return Some(naive);
        }
        let tail = &values[values.len() - lookback..];
        let prefix = prefix_sums(tail);
        let target = last_start
            + chrono::Duration::from_std(self.layout.horizon_duration()).unwrap_or_default();
        let row = self.layout.row(tail, &prefix, lookback - 1, target);
        let mut x = Array2::<f64>::zeros((1, FEATURES));
        for j in 0..FEATURES {
            x[[0, j]] = standardise(row[j], fitted.mean[j], fitted.scale[j]);
        }
        let y = fitted.model.predict(&x);
        y.get(0).map(|v| v.max(0.0)).filter(|v| v.is_finite())
    }
}

fn standardise(value: f64, mean: f64, scale: f64) -> f64 {
    if scale > 0.0 {
        (value - mean) / scale
    } else {
        0.0
    }
}

/// Mean absolute percentage error of forecasts on windows that had not happened when
/// they were forecast, over the most recent `capacity` such windows, for the model and for
/// the naive last-value forecast. Windows whose actual value is below `floor` are left
/// out (a percentage of almost nothing says nothing).
#[derive(Debug, Clone)]
pub struct HeldOutError {
    pending: VecDeque<(i64, f64, f64)>,
    model: VecDeque<f64>,
    naive: VecDeque<f64>,
    capacity: usize,
    floor: f64,
}

impl HeldOutError {
    pub fn new(capacity: usize, floor: f64) -> Self {
        HeldOutError {
            pending: VecDeque::new(),
            model: VecDeque::new(),
            naive: VecDeque::new(),
            capacity: capacity.max(1),
            floor,
        }
    }

    /// Remembers the forecasts made for window `target`.
    pub fn forecast(&mut self, target: i64, model: f64, naive: f64) {
        self.pending.push_back((target, model, naive));
    }

    /// Window `index` closed with `actual`: scores the forecasts made for it.
    pub fn actual(&mut self, index: i64, actual: f64) {
        while let Some(&(target, model, naive)) = self.pending.front() {
            if target > index {
                break;
            }
            self.pending.pop_front();
            if target == index && actual >= self.floor && actual > 0.0 {
                push_bounded(
                    &mut self.model,
                    (model - actual).abs() / actual,
                    self.capacity,
                );
                push_bounded(
                    &mut self.naive,
                    (naive - actual).abs() / actual,
                    self.capacity,
                );
            }
        }
    }

    /// The model's MAPE as a fraction (0.1 = 10%), None before any window was scored.
    pub fn mape(&self) -> Option<f64> {
        mean(&self.model)
    }

    pub fn naive_mape(&self) -> Option<f64> {
        mean(&self.naive)
    }

    pub fn scored(&self) -> usize {
        self.model.len()
    }
}

fn push_bounded(queue: &mut VecDeque<f64>, value: f64, capacity: usize) {
    queue.push_back(value);
    while queue.len() > capacity {
        queue.pop_front();
    }
}

fn mean(values: &VecDeque<f64>) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn layout() -> FeatureLayout {
        FeatureLayout::new(Duration::from_secs(10), Duration::from_secs(300))
    }

    #[test]
    fn layout_counts_windows() {
        let l = layout();
        assert_eq!(l.horizon, 30);
        assert_eq!(l.lookback(), 90);
    }

    #[test]
    fn learns_to_extrapolate_a_ramp() {
        let start = Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap();
        let values: Vec<f64> = (0..600).map(|i| 10.0 + 0.1 * f64::from(i)).collect();
        // Target: the mean of windows 624..=629.
        let mut f = Forecaster::new(layout());
        assert!(f.forecast(&values, start).is_some());
        f.fit(&values, start).unwrap();
        let last_start = start + chrono::Duration::seconds(10 * 599);
        let forecast = f.forecast(&values, last_start).unwrap();
        let truth = 10.0 + 0.1 * 626.5;
        assert!(
            (forecast - truth).abs() < 0.5,
            "forecast {forecast}, truth {truth}"
        );
    }

    #[test]
    fn flat_history_fits_without_error() {
        let start = Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap();
        let values = vec![42.0; 600];
        let mut f = Forecaster::new(layout());
        f.fit(&values, start).unwrap();
        let forecast = f.forecast(&values, start).unwrap();
        assert!((forecast - 42.0).abs() < 1e-6, "{forecast}");
    }

    #[test]
    fn too_little_history_is_an_error_and_forecasts_last_value() {
        let start = Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap();
        let mut f = Forecaster::new(layout());
        assert!(matches!(
            f.fit(&[1.0; 300], start),
            Err(ModelError::TooLittleHistory { .. })
        ));
        assert_eq!(f.forecast(&[1.0, 2.0], start), Some(1.5));
    }

    #[test]
    fn held_out_error_scores_only_forecast_windows() {
        let mut e = HeldOutError::new(10, 1.0);
        e.forecast(5, 110.0, 90.0);
        e.forecast(6, 50.0, 50.0);
        e.actual(4, 100.0);
        assert_eq!(e.mape(), None);
        e.actual(5, 100.0);
        assert!((e.mape().unwrap() - 0.1).abs() < 1e-12);
        e.actual(6, 0.5); // under the floor
        assert_eq!(e.scored(), 1);
        assert!((e.naive_mape().unwrap() - 0.1).abs() < 1e-12);
    }
}
