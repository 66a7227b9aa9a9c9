//! `tillstream-bench`: throughput of the log's two bulk paths, and the whole platform under
//! load, each next to a baseline measured in the same run on the same servers, so the
//! figures compare as ratios.
//!
//! ```sh
//! cargo run --release -p tillstream-bench -- rebuild   # bench/results/rebuild-<time>.json
//! cargo run --release -p tillstream-bench -- relay     # bench/results/relay-<time>.json
//! # the load generator starts target/release/tillstream: build it first
//! cargo build --release -p tillstream -p tillstream-bench
//! target/release/tillstream-bench load --scenario graphql-order --users 100 --ramp 5 --duration 20
//! target/release/tillstream-bench visibility --rate 1000 --duration 10
//! target/release/tillstream-bench suite                # bench/results/suite-<time>.json
//! target/release/tillstream-bench trace --minutes 80    # bench/results/trace-<time>.{csv,json}
//! # idle RSS of each split service binary: build them first
//! cargo build --release -p tillstream-bench -p tillstream-user -p tillstream-order \
//!     -p tillstream-relay -p tillstream-projections -p tillstream-gateway --bins
//! target/release/tillstream-bench idle-rss             # bench/results/idle-rss-<time>.json
//! ```
//!
//! Each run uses its own databases and NATS namespace (testkit) and removes them after.

mod baseline;
mod idle_rss;
mod load;
mod machine;
mod rebuild;
mod relay;
mod suite;
mod trace;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tillstream-bench",
    about = "Benchmarks of tillstream: relay, rebuild, and the platform under load"
)]
struct Cli {
    /// Where result files go.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    out: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Rebuild throughput (events/s from the start of the stream to the swap), against
    /// reading the stream alone and against applying event by event.
    Rebuild(rebuild::Args),
    /// Relay throughput (committed rows to acknowledged JetStream messages), against
    /// publishing the same messages straight to JetStream.
    Relay(relay::Args),
    /// One scenario against a fresh `tillstream up`: virtual users over GraphQL, REST or
    /// gRPC; throughput, latency percentiles, errors.
    Load(load::LoadArgs),
    /// Command → visibility: orders placed at a fixed rate, each read back through
    /// GraphQL as soon as it is visible.
    Visibility(load::VisibilityArgs),
    /// The baselines (axum hello world, pgbench durable insert) and every scenario in one
    /// run, with ratios and the issue's targets judged.
    Suite(suite::SuiteArgs),
    /// A shaped load (a compressed day: cycles, noise, spikes, a slow ramp over 70% CPU)
    /// for a long time, recorded from METRICS as the predictor's trace
    /// (`trace-<time>.csv`) and backtested.
    Trace(trace::TraceArgs),
    /// Idle resident memory of each split service binary (user, order, a relay per event
    /// store, projector, gateway) after start, and idle again after a customer's orders
    /// went through them, against the per-service target.
    IdleRss(idle_rss::IdleRssArgs),
    /// Starts a fresh `tillstream up` (rate limit off) for an outside load tool such as
    /// Locust, prints its addresses, and removes its databases and streams on Ctrl-C or SIGTERM.
    Serve(load::ServeArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (name, result) = match cli.command {
        Command::Rebuild(args) => ("rebuild", rebuild::run(args).await?),
        Command::Relay(args) => ("relay", relay::run(args).await?),
        Command::Load(args) => ("load", load::run_load(args).await?),
        Command::Visibility(args) => ("visibility", load::run_visibility(args).await?),
        Command::Suite(args) => ("suite", suite::run(args).await?),
        Command::Trace(args) => ("trace", trace::run(args, &cli.out).await?),
        Command::IdleRss(args) => ("idle-rss", idle_rss::run(args).await?),
        Command::Serve(args) => return load::serve(args).await,
    };
    let document = serde_json::json!({
        "benchmark": name,
        "at": chrono::Utc::now().to_rfc3339(),
        "machine": machine::describe().await,
        "result": result,
    });
    std::fs::create_dir_all(&cli.out)?;
    let file = cli.out.join(format!(
        "{name}-{}.json",
        chrono::Utc::now().format("%Y-%m-%dT%H%M%S")
    ));
    std::fs::write(&file, serde_json::to_string_pretty(&document)? + "\n")?;
    println!("{}", serde_json::to_string_pretty(&document["result"])?);
    println!("written to {}", file.display());
    Ok(())
}

/// Median, min and max of several measurements: the spread says how noisy a figure is.
pub fn spread(mut values: Vec<f64>) -> serde_json::Value {
    values.sort_by(f64::total_cmp);
    let median = values.get(values.len() / 2).copied().unwrap_or(0.0);
    serde_json::json!({
        "median": median.round(),
        "min": values.first().copied().unwrap_or(0.0).round(),
        "max": values.last().copied().unwrap_or(0.0).round(),
        "runs": values.iter().map(|v| v.round()).collect::<Vec<_>>(),
    })
}
