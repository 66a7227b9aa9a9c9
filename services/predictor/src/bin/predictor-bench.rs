//! `cargo run --release -p tillstream-predictor --bin predictor-bench [MESSAGES] [RUNS]`:
//! the ingest throughput benchmark (see `tillstream_predictor::bench`), written to
//! `bench/results/`. Same as `tillstream predictor bench`, without building the platform.

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let messages = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let runs = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let report = tillstream_predictor::bench::run(messages, runs);
    let path = tillstream_predictor::bench::write(&report, std::path::Path::new("bench/results"))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    println!("written to {}", path.display());
    Ok(())
}
