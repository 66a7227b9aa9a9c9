//! `tillstream`: the platform's one binary. See `tillstream --help`.

// `--features system-allocator` leaves the C library's malloc in place, for heap profilers
// that intercept it (heaptrack; docs/performance.md).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use tillstream::cli::Cli;
use tillstream_runtime::telemetry;

fn main() -> anyhow::Result<()> {
    // Still one thread: the settings file may set environment variables.
    tillstream_runtime::config_file::load()?;
    tillstream_runtime::rt::multi_thread()?.block_on(run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Servers log at info, from a writer thread; one-off commands only warn.
    let process = if cli.is_server() {
        telemetry::Process::Server
    } else {
        telemetry::Process::Command
    };
    let _telemetry = telemetry::init(cli.telemetry(), "tillstream", process)?;
    cli.run().await
}
