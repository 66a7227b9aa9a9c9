//! The predictor's core, without I/O: windows in, forecasts and decisions out.
//!
//! [`ServiceModel`] is one service's regressions, error tracking and scaling rule; it is
//! stepped once per closed window with that service's history. [`Predictor`] owns the
//! windows of every service and steps each service's model when windows close. The live
//! app and the backtest drive the same `ServiceModel`, so what is backtested is what runs.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tillstream_events::{LoadForecast, RequestMetric, ResourceSample, ScalingDecision};

use crate::model::{FeatureLayout, Forecaster, HeldOutError};
use crate::rule::{Observation, RuleConfig, ScalingRule};
use crate::window::{WindowConfig, WindowCounters, Windows};

#[derive(Debug, Clone)]
pub struct PredictorConfig {
    pub windows: WindowConfig,
    /// How far ahead to forecast.
    pub horizon: Duration,
    /// How often the regressions are refitted.
    pub refit_every: Duration,
    /// Held-out windows the MAPE is computed over.
    pub mape_windows: usize,
    /// Windows with a smaller actual value are not scored (requests/s or CPU %).
    pub mape_floor: f64,
    pub rule: RuleConfig,
}

impl Default for PredictorConfig {
    fn default() -> Self {
        PredictorConfig {
            windows: WindowConfig::default(),
            horizon: Duration::from_secs(300),
            refit_every: Duration::from_secs(300),
            mape_windows: 360,
            mape_floor: 1.0,
            rule: RuleConfig::default(),
        }
    }
}

/// One service's forecast after a window, and the decision it led to, if any.
#[derive(Debug, Clone)]
pub struct Step {
    pub forecast: LoadForecast,
    pub decision: Option<ScalingDecision>,
}

/// One service's models, errors and rule.
pub struct ServiceModel {
    width: Duration,
    refit_every: Duration,
    rate: Forecaster,
    cpu: Forecaster,
    rate_error: HeldOutError,
    cpu_error: HeldOutError,
    rule: ScalingRule,
    last_fit: Option<DateTime<Utc>>,
}

impl ServiceModel {
    pub fn new(config: &PredictorConfig) -> Self {
        let layout = FeatureLayout::new(config.windows.width, config.horizon);
        ServiceModel {
            width: config.windows.width,
            refit_every: config.refit_every,
            rate: Forecaster::new(layout),
            cpu: Forecaster::new(layout),
            rate_error: HeldOutError::new(config.mape_windows, config.mape_floor),
            cpu_error: HeldOutError::new(config.mape_windows, config.mape_floor),
            rule: ScalingRule::new(config.rule.clone()),
            last_fit: None,
        }
    }

    pub fn rate_error(&self) -> &HeldOutError {
        &self.rate_error
    }

    pub fn cpu_error(&self) -> &HeldOutError {
        &self.cpu_error
    }

    /// Whether the request-rate regression has been fitted (before, forecasts are naive).
    pub fn is_fitted(&self) -> bool {
        self.rate.is_fitted()
    }

    /// Steps the model with the history of closed windows, oldest first, the newest having
    /// just closed: `rates` per window, `cpus` with gaps filled by the previous value (empty
    /// while no CPU sample has arrived), `cpu_now` the newest window's own measure (None
    /// without samples), `last_start` the newest window's start.
    pub fn step(
        &mut self,
        service: &str,
        rates: &[f64],
        cpus: &[f64],
        cpu_now: Option<f64>,
        last_start: DateTime<Utc>,
    ) -> Option<Step> {
        rates.last()?;
        let span = self.rate.layout().target_span();
        let minute = |values: &[f64]| -> Option<f64> {
            let tail = &values[values.len().saturating_sub(span)..];
            (!tail.is_empty()).then(|| tail.iter().sum::<f64>() / tail.len() as f64)
        };
        let measured_rate = minute(rates)?;
        let measured_cpu = minute(cpus);
        let width = chrono::Duration::from_std(self.width).unwrap_or_default();
        let index = last_start.timestamp_millis() / width.num_milliseconds().max(1);
        let at = last_start + width;

        self.rate_error.actual(index, measured_rate);
        if let (Some(_), Some(cpu)) = (cpu_now, measured_cpu) {
            self.cpu_error.actual(index, cpu);
        }

        let due = self
            .last_fit
            .is_none_or(|t| (at - t).to_std().unwrap_or_default() >= self.refit_every);
        if due {
            let first_start = last_start - width * (rates.len() as i32 - 1);
            let rate_fit = self.rate.fit(rates, first_start);
            let cpu_first = last_start - width * (cpus.len() as i32 - 1);
            let cpu_fit = if cpus.is_empty() {
                Ok(0)
            } else {
                self.cpu.fit(cpus, cpu_first)
            };
            if let (Err(error), _) | (_, Err(error)) = (&rate_fit, &cpu_fit) {
                tracing::debug!(service, %error, "refit skipped");
            }
            self.last_fit = Some(at);
        }

        let horizon = self.rate.layout().horizon as i64;
        let forecast_rate = self
            .rate
            .forecast(rates, last_start)
            .unwrap_or(measured_rate);
        self.rate_error
            .forecast(index + horizon, forecast_rate, measured_rate);
        let forecast_cpu = self.cpu.forecast(cpus, last_start);
        if let (Some(forecast), Some(naive)) = (forecast_cpu, measured_cpu) {
            self.cpu_error.forecast(index + horizon, forecast, naive);
        }
        // No trust in a forecast that is only the naive one (no fit yet).
        let confidence = match self.cpu_error.mape() {
            Some(mape) if self.cpu.is_fitted() => (1.0 - mape).clamp(0.0, 1.0),
            _ => 0.0,
        };

        let decision = self.rule.observe(
            service,
            Observation {
                at,
                cpu: cpu_now,
                forecast_cpu,
                forecast_rate,
                confidence,
            },
        );
        Some(Step {
            forecast: LoadForecast {
                service: service.to_owned(),
                at,
                horizon_secs: self.rate.layout().horizon_duration().as_secs(),
                measured_rate,
                measured_cpu_percent: measured_cpu,
                forecast_rate,
                forecast_cpu_percent: forecast_cpu,
                rate_mape: self.rate_error.mape(),
                cpu_mape: self.cpu_error.mape(),
                confidence,
                desired_replicas: self.rule.replicas(),
            },
            decision,
        })
    }
}

/// Most windows stepped per service in one tick (after a pause or at start-up, older
/// closed windows still feed the fits, they are just not each turned into a decision).
const MAX_STEPS_PER_TICK: usize = 30;

/// Windows of every service plus each service's model.
pub struct Predictor {
    config: PredictorConfig,
    windows: Windows,
    models: HashMap<String, ServiceModel>,
}

impl Predictor {
    pub fn new(config: PredictorConfig) -> Self {
        Predictor {
            windows: Windows::new(config.windows),
            config,
            models: HashMap::new(),
        }
    }

    pub fn add_request(&mut self, metric: &RequestMetric) -> bool {
        self.windows.add_request(metric)
    }

    pub fn add_resource(&mut self, sample: &ResourceSample) -> bool {
        self.windows.add_resource(sample)
    }

    pub fn counters(&self) -> WindowCounters {
        self.windows.counters()
    }

    pub fn windows(&self) -> &Windows {
        &self.windows
    }

    /// Closes the windows that are due at `now` and steps every service's model through
    /// them. Decisions are per service; the total is windowed but not scaled.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Step> {
        let closed = self.windows.close_until(now);
        if closed == 0 {
            return Vec::new();
        }
        let mut steps = Vec::new();
        for service in self.windows.services() {
            let Some(history) = self.windows.closed(&service) else {
                continue;
            };
            let rates: Vec<f64> = history.iter().map(|w| w.rate).collect();
            let measured: Vec<Option<f64>> = history.iter().map(|w| w.cpu_percent).collect();
            let starts: Vec<DateTime<Utc>> = history.iter().map(|w| w.start).collect();
            let cpus = fill_forward(&measured);
            let model = self
                .models
                .entry(service.clone())
                .or_insert_with(|| ServiceModel::new(&self.config));
            let n = rates.len();
            for end in (n + 1 - closed.min(MAX_STEPS_PER_TICK).min(n))..=n {
                // `cpus` is aligned to the end of the history and may be shorter.
                let cpu_end = end.saturating_sub(n - cpus.len());
                if let Some(step) = model.step(
                    &service,
                    &rates[..end],
                    &cpus[..cpu_end],
                    measured[end - 1],
                    starts[end - 1],
                ) {
                    steps.push(step);
                }
            }
        }
        steps
    }
}

/// CPU per window with gaps filled by the last measure; windows before the first measure
/// are left out (the result is aligned to the end of `measured`).
pub fn fill_forward(measured: &[Option<f64>]) -> Vec<f64> {
    let mut last = None;
    let mut out = Vec::with_capacity(measured.len());
    for m in measured {
        if m.is_some() {
            last = *m;
        }
        if let Some(v) = last {
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_forward_aligns_to_the_end() {
        assert_eq!(
            fill_forward(&[None, Some(1.0), None, Some(3.0), None]),
            vec![1.0, 1.0, 3.0, 3.0]
        );
        assert!(fill_forward(&[None, None]).is_empty());
    }
}
