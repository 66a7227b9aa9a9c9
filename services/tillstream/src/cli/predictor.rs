//! `tillstream predictor backtest|trace|record|bench`: the predictor's offline tools.

use std::path::PathBuf;

use anyhow::Context;
use tillstream_predictor::backtest::{self, BacktestConfig, BacktestReport};
use tillstream_predictor::bench;
use tillstream_predictor::record::{self, Recorder};
use tillstream_predictor::trace::{self, TraceKind};

#[derive(clap::Subcommand)]
pub enum PredictorCommand {
    /// Replay a load trace through the model and the scaling rule: MAPE of the model and
    /// of the naive last-value forecast, and the lead time of each scale-out before CPU
    /// crossed the threshold.
    Backtest(BacktestArgs),
    /// Write a synthetic load trace (CSV, or JSON when the file ends in .json).
    Trace {
        #[arg(long, value_enum)]
        kind: TraceKind,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Record real traffic as a trace: read the METRICS stream (from its start, or since a
    /// time) up to its current end, fold it into windows as the predictor does, and write
    /// one service's series (CSV, or JSON when the file ends in .json) for `backtest`.
    Record(RecordArgs),
    /// Measure ingest throughput (decode + windowing) on one core against plain decoding,
    /// and write the figures to bench/results/.
    Bench {
        #[arg(long, default_value_t = 1_000_000)]
        messages: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        #[arg(long, default_value = "bench/results")]
        out_dir: PathBuf,
    },
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub struct TraceSource {
    /// A trace file (`at,rate,cpu_percent` CSV or JSON, equally spaced windows).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// A generated trace.
    #[arg(long, value_enum)]
    synthetic: Option<TraceKind>,
}

#[derive(clap::Args)]
pub struct BacktestArgs {
    #[command(flatten)]
    source: TraceSource,
    /// Seed of the generated trace.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds at the start of the trace replayed but not scored (default six hours); a
    /// trace recorded from a shorter run needs less, and must still have windows left to
    /// score after it and the forecast horizon.
    #[arg(long, default_value_t = backtest::DEFAULT_WARMUP.as_secs())]
    warmup_secs: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct RecordArgs {
    /// The series to record: a service's name, or `*` for every service together.
    #[arg(long, default_value = "gateway")]
    service: String,
    /// Only messages stored at or after this time (RFC 3339); default the whole stream.
    #[arg(long)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Window width in seconds.
    #[arg(long, default_value_t = 10)]
    window_secs: u64,
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    nats: tillstream_runtime::nats::NatsConfig,
}

pub async fn run(command: PredictorCommand) -> anyhow::Result<()> {
    match command {
        PredictorCommand::Record(args) => record(args).await,
        PredictorCommand::Backtest(args) => {
            let (name, points) = match (&args.source.trace, args.source.synthetic) {
                (Some(path), _) => (path.display().to_string(), trace::read(path)?),
                (None, Some(kind)) => (
                    format!("synthetic {} (seed {})", kind.name(), args.seed),
                    trace::generate(kind, args.seed),
                ),
                (None, None) => anyhow::bail!("give --trace FILE or --synthetic KIND"),
            };
            let mut config = BacktestConfig {
                warmup: std::time::Duration::from_secs(args.warmup_secs),
                ..BacktestConfig::default()
            };
            if let [first, second, ..] = points.as_slice() {
                let width = (second.at - first.at)
                    .to_std()
                    .context("trace windows must go forward in time")?;
                config.predictor.windows.width = width;
            }
            let report = backtest::run(&points, &config)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_report(&name, &report);
            }
            Ok(())
        }
        PredictorCommand::Trace { kind, seed, out } => {
            let points = trace::generate(kind, seed);
            trace::write(&out, &points)?;
            println!(
                "{} windows of {} written to {}",
                points.len(),
                kind.name(),
                out.display()
            );
            Ok(())
        }
        PredictorCommand::Bench {
            messages,
            runs,
            out_dir,
        } => {
            let report = bench::run(messages, runs);
            let path = bench::write(&report, &out_dir)
                .with_context(|| format!("writing to {}", out_dir.display()))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            println!("written to {}", path.display());
            Ok(())
        }
    }
}

async fn record(args: RecordArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.window_secs >= 1, "--window-secs must be 1 or more");
    let width = std::time::Duration::from_secs(args.window_secs);
    let client = args.nats.connect("tillstream-record", true).await?;
    let namespace = tillstream_events::Namespace::new(args.nats.namespace)?;
    let js = async_nats::jetstream::new(client);
    let mut recorder = Recorder::new(width, width / 2);
    record::read_stream(&js, &namespace, args.since, &mut recorder).await?;
    let (read, skipped) = (recorder.read, recorder.skipped);
    let points = recorder.finish(&args.service);
    anyhow::ensure!(
        points.len() >= 2,
        "{read} messages read, but fewer than two windows of `{}`: nothing to write",
        args.service
    );
    trace::write(&args.out, &points)?;
    println!(
        "{} windows of {} s of `{}` from {read} messages ({skipped} skipped) written to {}",
        points.len(),
        args.window_secs,
        args.service,
        args.out.display()
    );
    Ok(())
}

fn print_report(name: &str, report: &BacktestReport) {
    println!(
        "backtest of {name}: {} windows, the first {} not scored (warmup); model fitted from {}",
        report.windows,
        report.warmup_windows,
        report.first_fit_at.map_or_else(
            || "never (too little history)".to_owned(),
            |at| at.format("%a %H:%M:%S").to_string()
        )
    );
    for (series, mape) in [("request rate", report.rate), ("cpu", report.cpu)] {
        println!(
            "  {series:<12} MAPE model {:>6.2}%   naive last-value {:>6.2}%   (model error {:.1}% {} than naive, {} windows scored)",
            100.0 * mape.model,
            100.0 * mape.naive,
            100.0 * mape.improvement.abs(),
            if mape.improvement >= 0.0 {
                "lower"
            } else {
                "higher"
            },
            mape.scored_windows
        );
    }
    println!(
        "  decisions {} ({} out, {} in), flaps {}",
        report.decisions.len(),
        report
            .decisions
            .iter()
            .filter(|d| d.direction == tillstream_events::ScalingDirection::Out)
            .count(),
        report
            .decisions
            .iter()
            .filter(|d| d.direction == tillstream_events::ScalingDirection::In)
            .count(),
        report.flaps
    );
    if report.crossings.is_empty() {
        println!("  cpu never crossed the threshold");
    }
    for crossing in &report.crossings {
        match (crossing.lead_secs, &crossing.reason) {
            (Some(lead), Some(reason)) => println!(
                "  cpu crossed at {}: scale-out {} ({reason})",
                crossing.at.format("%a %H:%M:%S"),
                if lead >= 0 {
                    format!("{lead} s before")
                } else {
                    format!("{} s after", -lead)
                }
            ),
            _ => println!(
                "  cpu crossed at {}: no scale-out",
                crossing.at.format("%a %H:%M:%S")
            ),
        }
    }
}
