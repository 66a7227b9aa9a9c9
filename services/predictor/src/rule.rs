//! The scaling rule: when to ask for more replicas, and when for fewer.
//!
//! - **Scale out (measured)**: at least 90% of the windows of the last `sustain` (5 min)
//!   had CPU above `cpu_high` (70%), with the whole period observed: the origin's "CPU >
//!   70% for 5 minutes", tolerating a few noisy windows (its 10th percentile is above).
//! - **Scale out (forecast)**: the forecast CPU one horizon ahead is above `cpu_high` in
//!   `confirmations` consecutive windows while the model's confidence (1 − recent MAPE) is
//!   at least `min_confidence`: the threshold will be crossed within the horizon.
//! - **Scale in**: both the measured and the forecast CPU have stayed under `low_water`
//!   (35%) for `scale_in_after` (10 min), and no decision was taken in that time.
//!
//! Hysteresis against flapping: the gap between `low_water` and `cpu_high`; a scale-out
//! is followed by no other scale-out for `scale_out_cooldown` (the new replicas need time
//! to take load) and by no scale-in for `scale_in_after`; a scale-in resets the low-water
//! clock, so the next one needs another full cool-down.
//!
//! The rule is pure (time comes in with each observation), so it is tested, backtested
//! and run live with the same code.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tillstream_events::{ScalingDecision, ScalingDirection};

#[derive(Debug, Clone)]
pub struct RuleConfig {
    pub cpu_high: f64,
    pub sustain: Duration,
    pub low_water: f64,
    pub scale_in_after: Duration,
    pub confirmations: u32,
    pub min_confidence: f64,
    pub scale_out_cooldown: Duration,
    /// CPU per replica a scale-out aims for: `to = ceil(from · cpu / target_cpu)`, at
    /// least one more.
    pub target_cpu: f64,
    pub initial_replicas: u32,
    pub min_replicas: u32,
    pub max_replicas: u32,
}

impl Default for RuleConfig {
    fn default() -> Self {
        RuleConfig {
            cpu_high: 70.0,
            sustain: Duration::from_secs(300),
            low_water: 35.0,
            scale_in_after: Duration::from_secs(600),
            confirmations: 3,
            min_confidence: 0.5,
            scale_out_cooldown: Duration::from_secs(300),
            target_cpu: 60.0,
            initial_replicas: 1,
            min_replicas: 1,
            max_replicas: 20,
        }
    }
}

/// What the rule sees after each closed window.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    /// End of the window just closed.
    pub at: DateTime<Utc>,
    /// Measured CPU of that window, None without samples.
    pub cpu: Option<f64>,
    /// Forecast CPU one horizon ahead, None without a model.
    pub forecast_cpu: Option<f64>,
    pub forecast_rate: f64,
    /// 0..1, from the CPU forecast's recent MAPE.
    pub confidence: f64,
}

/// The rule's state for one service.
#[derive(Debug, Clone)]
pub struct ScalingRule {
    config: RuleConfig,
    replicas: u32,
    recent: VecDeque<(DateTime<Utc>, f64)>,
    first_seen: Option<DateTime<Utc>>,
    forecast_high_streak: u32,
    low_since: Option<DateTime<Utc>>,
    last_out: Option<DateTime<Utc>>,
    last_decision: Option<DateTime<Utc>>,
}

fn elapsed(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or_default()
}

impl ScalingRule {
    pub fn new(config: RuleConfig) -> Self {
        let replicas = config.initial_replicas.clamp(
            config.min_replicas,
            config.max_replicas.max(config.min_replicas),
        );
        ScalingRule {
            config,
            replicas,
            recent: VecDeque::new(),
            first_seen: None,
            forecast_high_streak: 0,
            low_since: None,
            last_out: None,
            last_decision: None,
        }
    }

    pub fn replicas(&self) -> u32 {
        self.replicas
    }

    /// The 10th percentile of the CPU windows of the last `sustain`, once that much has
    /// been observed: above the threshold means 90% of the windows were.
    fn sustained_low_percentile(&self, at: DateTime<Utc>) -> Option<f64> {
        let first = self.first_seen?;
        if elapsed(first, at) < self.config.sustain {
            return None;
        }
        let mut values: Vec<f64> = self
            .recent
            .iter()
            .filter(|(t, _)| elapsed(*t, at) < self.config.sustain)
            .map(|(_, v)| *v)
            .collect();
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        Some(values[values.len() / 10])
    }

    /// Feeds one observation; returns a decision for `service` when one is due.
    pub fn observe(&mut self, service: &str, o: Observation) -> Option<ScalingDecision> {
        let c = &self.config;
        if let Some(cpu) = o.cpu {
            self.first_seen.get_or_insert(o.at);
            self.recent.push_back((o.at, cpu));
            while self
                .recent
                .front()
                .is_some_and(|(t, _)| elapsed(*t, o.at) >= c.sustain)
            {
                self.recent.pop_front();
            }
        }
        let forecast_high =
            o.forecast_cpu.is_some_and(|f| f > c.cpu_high) && o.confidence >= c.min_confidence;
        self.forecast_high_streak = if forecast_high {
            self.forecast_high_streak + 1
        } else {
            0
        };

        // Scale in: measure and forecast both under the low-water mark, long enough.
        match (o.cpu, o.forecast_cpu) {
            (Some(cpu), Some(forecast)) if cpu < c.low_water && forecast < c.low_water => {
                self.low_since.get_or_insert(o.at);
            }
            (None, _) => {}
            _ => self.low_since = None,
        }

        let out_allowed = self.replicas < c.max_replicas
            && self
                .last_out
                .is_none_or(|t| elapsed(t, o.at) >= c.scale_out_cooldown);
        if out_allowed {
            let measured = self
                .sustained_low_percentile(o.at)
                .filter(|m| *m > c.cpu_high);
            let reason = if let Some(low) = measured {
                Some(format!(
                    "cpu {low:.0}% > {:.0}% for {}",
                    c.cpu_high,
                    minutes(c.sustain)
                ))
            } else if self.forecast_high_streak >= c.confirmations {
                o.forecast_cpu.map(|f| {
                    format!(
                        "forecast cpu {f:.1}% > {:.0}% within the horizon",
                        c.cpu_high
                    )
                })
            } else {
                None
            };
            if let Some(reason) = reason {
                let load = o
                    .forecast_cpu
                    .unwrap_or(0.0)
                    .max(o.cpu.unwrap_or(0.0))
                    .max(c.cpu_high);
                let wanted = (f64::from(self.replicas) * load / c.target_cpu.max(1.0)).ceil();
                let to = (wanted as u32).max(self.replicas + 1).min(c.max_replicas);
                self.last_out = Some(o.at);
                self.low_since = None;
                self.forecast_high_streak = 0;
                return Some(self.decide(service, ScalingDirection::Out, to, reason, o));
            }
        }

        let in_due = self.replicas > c.min_replicas
            && self
                .low_since
                .is_some_and(|t| elapsed(t, o.at) >= c.scale_in_after)
            && self
                .last_decision
                .is_none_or(|t| elapsed(t, o.at) >= c.scale_in_after);
        if in_due {
            let reason = format!(
                "cpu and forecast < {:.0}% for {}",
                c.low_water,
                minutes(c.scale_in_after)
            );
            self.low_since = Some(o.at);
            let to = self.replicas - 1;
            return Some(self.decide(service, ScalingDirection::In, to, reason, o));
        }
        None
    }

    fn decide(
        &mut self,
        service: &str,
        direction: ScalingDirection,
        to: u32,
        reason: String,
        o: Observation,
    ) -> ScalingDecision {
        let from = self.replicas;
        self.replicas = to;
        self.last_decision = Some(o.at);
        ScalingDecision {
            service: service.to_owned(),
            direction,
            from_replicas: from,
            to_replicas: to,
            reason,
            forecast_rate: o.forecast_rate,
            forecast_cpu_percent: o.forecast_cpu.unwrap_or(0.0),
            confidence: o.confidence,
            at: o.at,
        }
    }
}

fn minutes(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(window: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 5, 12, 0, 0).unwrap() + chrono::Duration::seconds(10 * window)
    }

    fn obs(window: i64, cpu: f64, forecast: f64) -> Observation {
        Observation {
            at: at(window),
            cpu: Some(cpu),
            forecast_cpu: Some(forecast),
            forecast_rate: 100.0,
            confidence: 0.9,
        }
    }

    /// Feeds `cpu(i), forecast(i)` for windows `from..to`; returns (window, decision)s.
    fn run(
        rule: &mut ScalingRule,
        range: std::ops::Range<i64>,
        f: impl Fn(i64) -> (f64, f64),
    ) -> Vec<(i64, ScalingDecision)> {
        range
            .filter_map(|i| {
                let (cpu, forecast) = f(i);
                rule.observe("order", obs(i, cpu, forecast)).map(|d| (i, d))
            })
            .collect()
    }

    #[test]
    fn measured_cpu_above_threshold_for_five_minutes_scales_out() {
        let mut rule = ScalingRule::new(RuleConfig::default());
        // Forecast says nothing alarming; measured CPU is 80% from window 0.
        let decisions = run(&mut rule, 0..60, |_| (80.0, 50.0));
        assert_eq!(decisions.len(), 1);
        let (window, d) = &decisions[0];
        assert_eq!(*window, 30, "after 5 minutes of windows");
        assert_eq!(d.direction, ScalingDirection::Out);
        assert_eq!((d.from_replicas, d.to_replicas), (1, 2));
        assert!(d.reason.starts_with("cpu 80% > 70% for 5m"), "{}", d.reason);
    }

    #[test]
    fn a_short_spike_does_not_scale_out() {
        let mut rule = ScalingRule::new(RuleConfig::default());
        let decisions = run(&mut rule, 0..120, |i| {
            if (40..50).contains(&i) {
                (95.0, 50.0)
            } else {
                (50.0, 50.0)
            }
        });
        assert!(decisions.is_empty(), "{decisions:?}");
    }

    #[test]
    fn forecast_crossing_scales_out_after_confirmations_only_when_trusted() {
        let mut rule = ScalingRule::new(RuleConfig::default());
        let decisions = run(&mut rule, 0..10, |i| {
            (50.0, if i >= 5 { 75.0 } else { 50.0 })
        });
        assert_eq!(decisions.len(), 1);
        assert_eq!(decisions[0].0, 7, "third confirming window");
        assert!(decisions[0].1.reason.starts_with("forecast cpu 75.0%"));

        let mut distrusted = ScalingRule::new(RuleConfig::default());
        let decisions: Vec<_> = (0..10)
            .filter_map(|i| {
                let mut o = obs(i, 50.0, 75.0);
                o.confidence = 0.2;
                distrusted.observe("order", o)
            })
            .collect();
        assert!(decisions.is_empty());
    }

    #[test]
    fn scale_out_cooldown_then_proportional_step() {
        let mut rule = ScalingRule::new(RuleConfig::default());
        let decisions = run(&mut rule, 0..100, |_| (50.0, 130.0));
        let windows: Vec<i64> = decisions.iter().map(|(w, _)| *w).collect();
        // First after 3 confirmations, then once per 5-minute cool-down.
        assert_eq!(windows, vec![2, 32, 62, 92]);
        // ceil(1 · 130 / 60) = 3, then ceil(3 · 130 / 60) = 7.
        assert_eq!(decisions[0].1.to_replicas, 3);
        assert_eq!(decisions[1].1.to_replicas, 7);
    }

    #[test]
    fn scale_in_after_a_cool_down_under_the_low_water_mark() {
        let mut rule = ScalingRule::new(RuleConfig {
            initial_replicas: 3,
            ..RuleConfig::default()
        });
        let decisions = run(&mut rule, 0..200, |_| (20.0, 20.0));
        let windows: Vec<(i64, u32)> = decisions.iter().map(|(w, d)| (*w, d.to_replicas)).collect();
        // 10 minutes = 60 windows under the mark for each step, never below the minimum.
        assert_eq!(windows, vec![(60, 2), (120, 1)]);
        assert!(
            decisions
                .iter()
                .all(|(_, d)| d.direction == ScalingDirection::In)
        );
    }

    #[test]
    fn the_forecast_alone_being_low_does_not_scale_in() {
        let mut rule = ScalingRule::new(RuleConfig {
            initial_replicas: 3,
            ..RuleConfig::default()
        });
        assert!(run(&mut rule, 0..200, |_| (50.0, 20.0)).is_empty());
        assert!(
            run(&mut rule, 200..400, |i| (
                if i % 20 == 0 { 40.0 } else { 20.0 },
                20.0
            ))
            .is_empty()
        );
    }

    #[test]
    fn no_flapping_around_the_thresholds() {
        // Load swinging between just over the high mark and just under the low one every
        // few minutes: at most one decision per cool-down, never in right after out.
        let mut rule = ScalingRule::new(RuleConfig {
            initial_replicas: 2,
            ..RuleConfig::default()
        });
        let decisions = run(&mut rule, 0..720, |i| {
            if (i / 24) % 2 == 0 {
                (75.0, 75.0)
            } else {
                (30.0, 30.0)
            }
        });
        for pair in decisions.windows(2) {
            let ((w0, d0), (w1, d1)) = (&pair[0], &pair[1]);
            if d0.direction != d1.direction {
                assert!(
                    w1 - w0 >= 60,
                    "reversal after {} windows: {decisions:?}",
                    w1 - w0
                );
            }
        }
        assert!(
            decisions
                .iter()
                .all(|(_, d)| d.direction == ScalingDirection::Out),
            "the low stretches are shorter than the scale-in cool-down"
        );
    }
}
