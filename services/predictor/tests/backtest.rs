//! Model-quality goals of the predictor, checked on the generated traces with fixed seeds
//! (issue #6): forecast error against the naive last-value forecast on the diurnal week,
//! lead time of the scale-out on the slow ramp, and no flapping on noise.

use tillstream_predictor::backtest::{self, BacktestConfig, BacktestReport};
use tillstream_predictor::trace::{self, TraceKind};

fn backtest(kind: TraceKind, seed: u64) -> BacktestReport {
    let report = backtest::run(&trace::generate(kind, seed), &BacktestConfig::default())
        .expect("a week of trace leaves windows to score after the warmup");
    eprintln!(
        "{}: rate MAPE model {:.4} naive {:.4} ({:.1}% better); cpu MAPE model {:.4} naive {:.4} ({:.1}% better); {} decisions, {} flaps; crossings {:?}",
        kind.name(),
        report.rate.model,
        report.rate.naive,
        100.0 * report.rate.improvement,
        report.cpu.model,
        report.cpu.naive,
        100.0 * report.cpu.improvement,
        report.decisions.len(),
        report.flaps,
        report
            .crossings
            .iter()
            .map(|c| c.lead_secs)
            .collect::<Vec<_>>()
    );
    report
}

#[test]
fn diurnal_forecast_error_is_at_least_30_percent_below_naive() {
    for seed in [1, 2] {
        let report = backtest(TraceKind::Diurnal, seed);
        assert!(report.rate.scored_windows > 40_000);
        assert!(
            report.rate.improvement >= 0.30,
            "seed {seed}: rate MAPE {:.4} vs naive {:.4}",
            report.rate.model,
            report.rate.naive
        );
    }
}

#[test]
fn slow_ramp_triggers_at_least_two_minutes_before_cpu_crosses_70() {
    for seed in [1, 2, 3] {
        let report = backtest(TraceKind::Ramp, seed);
        assert_eq!(
            report.crossings.len(),
            1,
            "seed {seed}: {:?}",
            report.crossings
        );
        let lead = report.crossings[0].lead_secs;
        assert!(
            lead.is_some_and(|l| l >= 120),
            "seed {seed}: lead {lead:?}s, {:?}",
            report.crossings[0]
        );
    }
}

#[test]
fn noise_alone_does_not_flap() {
    for seed in [1, 2, 3] {
        let report = backtest(TraceKind::Noise, seed);
        assert_eq!(report.flaps, 0, "seed {seed}");
        assert!(
            report.decisions.is_empty(),
            "seed {seed}: {:?}",
            report.decisions
        );
    }
}

#[test]
fn spikes_are_reported() {
    let report = backtest(TraceKind::Spikes, 1);
    assert!(report.rate.model.is_finite());
    assert!(!report.crossings.is_empty());
}
