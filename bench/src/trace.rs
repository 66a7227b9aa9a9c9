//! `tillstream-bench trace`: a shaped load over a long time, recorded as the predictor
//! sees it and backtested, so the predictor's figures come from real traffic and the
//! platform's real CPU, not only from generated traces.
//!
//! The platform is prepared as for `load` (a fresh `tillstream up`, seeded). The offered
//! rate then follows a compressed day: a cosine cycle between `--low` and `--high`
//! requests/s with a period of `--period-minutes` (starting at the trough), multiplicative
//! noise redrawn every second, sudden spikes (`--spike-factor` × the rate for
//! `--spike-minutes`, at the troughs of the second and third cycles), and a slow ramp that
//! adds up to `--ramp-extra` requests/s over `--ramp-minutes` and holds it for the last
//! `--hold-minutes`, meant to take the platform's CPU over 70% of a core for a few minutes.
//! Requests are the mixed GraphQL/REST reads of the `mixed` scenario, with a share of gRPC
//! PlaceOrders.
//!
//! Afterwards the gateway's series (request rate, and the CPU of the whole all-in-one
//! process, which every component reports) is read from the run's METRICS stream with the
//! predictor's recorder into `trace-<time>.csv`, and backtested in-process.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tillstream_predictor::backtest::{self, BacktestConfig};
use tillstream_predictor::record::{self, Recorder};
use tillstream_predictor::trace as trace_file;

use crate::load::driver::Jitter;
use crate::load::scenarios::Scenario;
use crate::load::{self, SeedArgs, open_loop};

#[derive(clap::Args, Debug, Clone)]
pub struct TraceArgs {
    /// Minutes of load.
    #[arg(long, default_value_t = 80.0)]
    minutes: f64,
    /// Minutes of one cycle of the compressed day.
    #[arg(long, default_value_t = 20.0)]
    period_minutes: f64,
    /// Requests/s at the trough of the cycle.
    #[arg(long, default_value_t = 40.0)]
    low: f64,
    /// Requests/s at the crest of the cycle.
    #[arg(long, default_value_t = 120.0)]
    high: f64,
    /// Multiplicative noise: the rate times a factor uniform in 1 ± this, redrawn every
    /// second.
    #[arg(long, default_value_t = 0.1)]
    noise: f64,
    /// Rate factor of each spike (at the troughs of the second and third cycles).
    #[arg(long, default_value_t = 2.5)]
    spike_factor: f64,
    /// Minutes each spike lasts.
    #[arg(long, default_value_t = 2.0)]
    spike_minutes: f64,
    /// Requests/s the slow ramp adds at its top.
    #[arg(long, default_value_t = 150.0)]
    ramp_extra: f64,
    /// Minutes the ramp takes to reach its top.
    #[arg(long, default_value_t = 20.0)]
    ramp_minutes: f64,
    /// Minutes the ramp's top is held at the end of the run.
    #[arg(long, default_value_t = 6.0)]
    hold_minutes: f64,
    /// Share of requests that are gRPC PlaceOrder (the rest are the mixed reads).
    #[arg(long, default_value_t = 0.05)]
    write_share: f64,
    /// Width of the recorded windows in seconds. The model fits once it has 360 training
    /// windows beyond its 15-minute look-back and 5-minute horizon: 80 minutes at the live
    /// 10 s, 32 minutes at 2 s.
    #[arg(long, default_value_t = 2)]
    window_secs: u64,
    /// Minutes at the start not scored by the backtest (default: one period, or the time
    /// the model needs for its first fit, whichever is longer).
    #[arg(long)]
    warmup_minutes: Option<f64>,
    /// CPU threshold (percent of one core) of the scaling rule in the backtest; the rule's
    /// low water (35) and scale-out target (60) are scaled with it. 70 is the live rule; on
    /// a machine whose shared cores never let the platform reach 70% of one, the shape can
    /// only be scored against a lower one.
    #[arg(long, default_value_t = 70.0)]
    cpu_high: f64,
    /// Most requests in flight; beyond it the sender skips and counts.
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// Seed of the noise.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    seed_data: SeedArgs,
}

/// The offered rate at a time of the run.
#[derive(Debug, Clone)]
struct RateShape {
    args: TraceArgs,
    spikes: Vec<f64>,
    ramp_start: f64,
}

impl RateShape {
    fn new(args: &TraceArgs) -> anyhow::Result<Self> {
        anyhow::ensure!(
            args.minutes > 0.0 && args.period_minutes > 0.0,
            "--minutes and --period-minutes must be positive"
        );
        anyhow::ensure!(
            0.0 <= args.low && args.low <= args.high,
            "need 0 ≤ --low ≤ --high"
        );
        anyhow::ensure!(
            (0.0..1.0).contains(&args.noise) && (0.0..=1.0).contains(&args.write_share),
            "--noise must be in [0, 1) and --write-share in [0, 1]"
        );
        let ramp_start = args.minutes - args.hold_minutes - args.ramp_minutes;
        anyhow::ensure!(
            ramp_start >= 0.0,
            "--ramp-minutes plus --hold-minutes exceed --minutes"
        );
        // Spikes at the troughs of the second and third cycles, if the ramp has not begun.
        let spikes = [1.0, 2.0]
            .iter()
            .map(|k| k * args.period_minutes)
            .filter(|at| at + args.spike_minutes <= ramp_start)
            .collect();
        Ok(RateShape {
            args: args.clone(),
            spikes,
            ramp_start,
        })
    }

    /// Requests/s at `minute` without noise.
    fn at(&self, minute: f64) -> f64 {
        let a = &self.args;
        let phase = std::f64::consts::TAU * minute / a.period_minutes;
        let cycle = a.low + (a.high - a.low) * (1.0 - phase.cos()) / 2.0;
        let ramp = if a.ramp_minutes > 0.0 {
            ((minute - self.ramp_start) / a.ramp_minutes).clamp(0.0, 1.0)
        } else {
            f64::from(u8::from(minute >= self.ramp_start))
        };
        let spiking = self
            .spikes
            .iter()
            .any(|s| (*s..s + a.spike_minutes).contains(&minute));
        (cycle + ramp * a.ramp_extra) * if spiking { a.spike_factor } else { 1.0 }
    }

    fn to_json(&self) -> serde_json::Value {
        let a = &self.args;
        json!({
            "minutes": a.minutes,
            "cycle": { "period_minutes": a.period_minutes, "low_per_second": a.low, "high_per_second": a.high, "starts_at": "trough" },
            "noise": { "multiplicative_uniform": a.noise, "redrawn_every_seconds": 1, "seed": a.seed },
            "spikes": { "at_minutes": self.spikes, "factor": a.spike_factor, "minutes": a.spike_minutes },
            "ramp": { "from_minute": self.ramp_start, "extra_per_second": a.ramp_extra, "minutes": a.ramp_minutes, "held_minutes": a.hold_minutes },
            "peak_offered_per_second": (a.high + a.ramp_extra).max(a.low * a.spike_factor),
            "requests": { "reads": "mixed scenario: 40% GraphQL order(id), 20% orders page, 20% me, 20% REST order", "place_order_share": a.write_share },
        })
    }
}

/// Seconds the model needs before its first fit with windows of `width`.
fn first_fit_after(config: &BacktestConfig) -> Duration {
    let predictor = &config.predictor;
    let layout =
        tillstream_predictor::model::FeatureLayout::new(predictor.windows.width, predictor.horizon);
    let windows =
        tillstream_predictor::model::MIN_TRAINING_ROWS + layout.lookback() - 1 + layout.horizon;
    predictor.windows.width * windows as u32
}

pub async fn run(args: TraceArgs, out: &Path) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(args.window_secs >= 1, "--window-secs must be 1 or more");
    let shape = RateShape::new(&args)?;
    let width = Duration::from_secs(args.window_secs);
    let mut config = BacktestConfig::default();
    config.predictor.windows.width = width;
    anyhow::ensure!(
        args.cpu_high > 0.0 && args.cpu_high <= 100.0,
        "--cpu-high must be in (0, 100]"
    );
    let rule = &mut config.predictor.rule;
    let scale = args.cpu_high / rule.cpu_high;
    (rule.cpu_high, rule.low_water, rule.target_cpu) = (
        args.cpu_high,
        rule.low_water * scale,
        rule.target_cpu * scale,
    );
    let warmup_minutes = args.warmup_minutes.unwrap_or_else(|| {
        args.period_minutes
            .max(first_fit_after(&config).as_secs_f64() / 60.0)
    });
    config.warmup = Duration::from_secs_f64(warmup_minutes.max(0.0) * 60.0);

    let (platform, target, memory) = load::prepare(args.seed_data, 64).await?;
    let load_started = chrono::Utc::now();
    let mut noise = Jitter::new(args.seed);
    let (mut noise_second, mut factor) = (u64::MAX, 1.0);
    let rate = |seconds: f64| {
        if seconds as u64 != noise_second {
            noise_second = seconds as u64;
            factor = 1.0 + args.noise * (2.0 * noise.next_unit() - 1.0);
        }
        shape.at(seconds / 60.0) * factor
    };
    let write_share = args.write_share;
    let driven = open_loop::drive(
        "trace",
        Duration::from_secs_f64(args.minutes * 60.0),
        args.max_in_flight,
        rate,
        move |n| {
            let target = target.clone();
            async move {
                let user = (n % 100_000) as usize;
                let write = Jitter::new(n ^ 0x5EED).next_unit() < write_share;
                let scenario = if write {
                    Scenario::GrpcPlaceOrder
                } else {
                    Scenario::Mixed
                };
                target.once(scenario, user, n / 100_000).await
            }
        },
    )
    .await;
    let rss_after = platform.rss_mib();
    let recorded = match &driven {
        Ok(_) => recorded(&platform, load_started, width).await,
        Err(_) => Err(anyhow::anyhow!("the load did not finish")),
    };
    platform.stop().await;
    let driven = driven?;
    let (points, read, skipped) = recorded?;

    let stamp = chrono::Utc::now().format("%Y-%m-%dT%H%M%S");
    std::fs::create_dir_all(out)?;
    let csv = out.join(format!("trace-{stamp}.csv"));
    trace_file::write(&csv, &points)?;
    eprintln!("{} windows written to {}", points.len(), csv.display());
    // A run too short to score (a calibration run) still keeps its recording and result.
    let report = match backtest::run(&points, &config) {
        Ok(report) => {
            eprintln!(
                "rate MAPE model {:.4} naive {:.4}; cpu MAPE model {:.4} naive {:.4}; crossings {:?}; flaps {}",
                report.rate.model,
                report.rate.naive,
                report.cpu.model,
                report.cpu.naive,
                report
                    .crossings
                    .iter()
                    .map(|c| c.lead_secs)
                    .collect::<Vec<_>>(),
                report.flaps
            );
            serde_json::to_value(report)?
        }
        Err(error) => {
            eprintln!("backtest: {error}");
            json!({ "error": error.to_string() })
        }
    };
    let cpu: Vec<f64> = points.iter().map(|p| p.cpu_percent).collect();
    let rates: Vec<f64> = points.iter().map(|p| p.rate).collect();
    Ok(json!({
        "shape": shape.to_json(),
        "load": driven.to_json(),
        "seed": { "customers": args.seed_data.customers, "orders_per_customer": args.seed_data.orders_per_customer },
        "platform_rss_mib": { "before_load": memory, "after_load": rss_after },
        "recording": {
            "series": "gateway (request rate; CPU of the whole tillstream up process)",
            "file": csv.file_name().map(|f| f.to_string_lossy().into_owned()),
            "window_secs": args.window_secs,
            "windows": points.len(),
            "messages_read": read,
            "messages_skipped": skipped,
            "rate_per_second": summary(&rates),
            "cpu_percent": summary(&cpu),
        },
        "backtest": {
            "warmup_minutes": warmup_minutes,
            "model_can_first_fit_after_minutes": first_fit_after(&config).as_secs_f64() / 60.0,
            "rule_cpu_percent": {
                "scale_out_above": config.predictor.rule.cpu_high,
                "low_water": config.predictor.rule.low_water,
                "target": config.predictor.rule.target_cpu,
            },
            "horizon_secs": config.predictor.horizon.as_secs(),
            "report": report,
        },
    }))
}

/// The gateway's series since `since`, from the platform's METRICS stream: (trace,
/// messages read, messages skipped).
async fn recorded(
    platform: &load::platform::RunningPlatform,
    since: chrono::DateTime<chrono::Utc>,
    width: Duration,
) -> anyhow::Result<(Vec<trace_file::TracePoint>, u64, u64)> {
    let (_, js) = platform.env.jetstream().await;
    let mut recorder = Recorder::new(width, width / 2);
    record::read_stream(&js, &platform.env.namespace, Some(since), &mut recorder).await?;
    let (read, skipped) = (recorder.read, recorder.skipped);
    let points = recorder.finish("gateway");
    anyhow::ensure!(
        points.len() >= 2,
        "{read} METRICS messages read, but fewer than two windows of the gateway"
    );
    Ok((points, read, skipped))
}

fn summary(values: &[f64]) -> serde_json::Value {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| {
        sorted
            .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    json!({
        "min": round1(at(0.0)), "p50": round1(at(0.5)), "p99": round1(at(0.99)), "max": round1(at(1.0)),
        "mean": round1(values.iter().sum::<f64>() / values.len().max(1) as f64),
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TraceArgs,
    }

    fn shape(flags: &[&str]) -> RateShape {
        let cli = Cli::parse_from(std::iter::once("trace").chain(flags.iter().copied()));
        RateShape::new(&cli.args).unwrap()
    }

    #[test]
    fn the_day_starts_at_the_trough_spikes_at_later_troughs_and_ends_on_the_ramp() {
        let s = shape(&[]);
        // Defaults: 80 minutes, period 20, 40–120/s, ramp from minute 54 to 74, held to 80.
        assert!((s.at(0.0) - 40.0).abs() < 1e-9);
        assert!((s.at(10.0) - 120.0).abs() < 1e-9);
        assert_eq!(s.spikes, vec![20.0, 40.0]);
        let cycle = |m: f64| 40.0 + 80.0 * (1.0 - (std::f64::consts::TAU * m / 20.0).cos()) / 2.0;
        // A spike multiplies the cycle for two minutes, then it is back.
        assert!((s.at(20.5) - 2.5 * cycle(20.5)).abs() < 1e-9);
        assert!((s.at(22.5) - cycle(22.5)).abs() < 1e-9);
        assert!((s.at(53.0) - cycle(53.0)).abs() < 1e-9);
        assert!((s.ramp_start - 54.0).abs() < 1e-9);
        // At 64 the ramp is half up; from 74 on it is all there.
        assert!((s.at(64.0) - (cycle(64.0) + 75.0)).abs() < 1e-9);
        assert!((s.at(77.0) - (cycle(77.0) + 150.0)).abs() < 1e-9);
    }

    #[test]
    fn a_ramp_longer_than_the_run_is_refused() {
        let cli = Cli::parse_from([
            "trace",
            "--minutes",
            "10",
            "--ramp-minutes",
            "8",
            "--hold-minutes",
            "5",
        ]);
        assert!(RateShape::new(&cli.args).is_err());
    }
}
