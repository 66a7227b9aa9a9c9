//! Logs, trace export and metrics set-up, done once per process. The Prometheus recorder
//! is installed here, so work done while a service builds (the first admin, say) is counted.
//!
//! - Logs: `RUST_LOG` filters (default `info`); `--log-format json` (or
//!   `TILLSTREAM_LOG_FORMAT=json`) writes one JSON object per line, with the fields of the
//!   spans it happened in (the request's `correlation_id`, for one). A server's lines go to
//!   stdout from a thread of their own, in batches: a thread that logs only formats its line
//!   and queues it ([`LOG_QUEUE_LINES`] at most; then it waits, and no line is dropped).
//!   At exit the process gives the writer a second to empty the queue (tracing-appender's
//!   guard): with stdout keeping up that is ample, but a stalled pipe loses what is still
//!   queued then, and a killed process always loses it.
//! - Traces: with `--otlp-endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) set, every span is
//!   exported over OTLP/HTTP (protobuf) to `<endpoint>/v1/traces`, in batches from a
//!   background thread. Unset (the default), no OpenTelemetry layer is installed: spans carry
//!   no trace data, nothing is buffered and no thread is started. How contexts cross
//!   processes either way is in [`crate::trace_context`].

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How a process logs and whether it exports traces. Every binary takes these flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TelemetryConfig {
    /// OTLP/HTTP collector to export trace spans to, as a plain `http://` base URL (spans are
    /// posted to `<url>/v1/traces`), e.g. `http://otel-collector:4318`. Unset: no export.
    #[arg(
        long = "otlp-endpoint",
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        global = true
    )]
    pub otlp_endpoint: Option<String>,
    /// Service name on exported spans (default: the binary's name).
    #[arg(long = "service-name", env = "OTEL_SERVICE_NAME", global = true)]
    pub service_name: Option<String>,
    /// Log lines as `text` or `json` (one JSON object per line, with span fields).
    #[arg(
        long = "log-format",
        env = "TILLSTREAM_LOG_FORMAT",
        default_value = "text",
        value_enum,
        global = true
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot set up the OTLP exporter for {endpoint}: {source}")]
    Exporter {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// Keeps trace export running; dropping it sends the spans still buffered and stops the
/// exporter. Hold it for the life of the process.
#[must_use = "dropping the guard stops trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// Dropped after the provider, so what its shutdown logs is written too.
    _log_writer: Option<WorkerGuard>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans finished so far (tests; shutdown does this too).
    pub fn flush(&self) {
        if let Some(provider) = &self.provider
            && let Err(error) = provider.force_flush()
        {
            tracing::warn!(%error, "trace spans could not be flushed");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("trace export did not shut down cleanly: {error}");
        }
    }
}

/// Log lines queued for the writer thread at most. A line is a few hundred bytes, so the
/// queue holds a few MiB when stdout is slower than the process logs; past it, logging
/// threads wait for stdout as they would without the queue.
pub const LOG_QUEUE_LINES: usize = 16_384;

/// The default `RUST_LOG` filter of the servers.
const SERVER_FILTER: &str = "info,sqlx::postgres::notice=warn";

/// What kind of process logs: it sets the default filter and how lines reach stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// A server: `info` by default (sqlx's notices from `warn`). Lines are queued for a
    /// writer thread of their own, off the threads that serve.
    Server,
    /// A one-off command: `warn` by default. Lines are written as they come, in order with
    /// what the command prints.
    Command,
}

static INSTALLED: AtomicBool = AtomicBool::new(false);
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports spans. Per-event work (the relay, the projector) opens its
/// spans only then: with export off it costs nothing beyond passing `traceparent` on.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Installs logging (and trace export when configured) for the process `service`, with
/// the default filter of its kind when `RUST_LOG` is unset.
/// Only the first call installs anything; later ones (a test harness) get an inert guard.
pub fn init(
    config: &TelemetryConfig,
    service: &str,
    process: Process,
) -> Result<Telemetry, TelemetryError> {
    crate::ops::prometheus();
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Ok(Telemetry {
            provider: None,
            _log_writer: None,
        });
    }
    let provider = match config.otlp_endpoint.as_deref().map(str::trim) {
        Some(endpoint) if !endpoint.is_empty() => {
            let name = config.service_name.as_deref().unwrap_or(service);
            Some(tracer_provider(endpoint, name)?)
        }
        _ => None,
    };
    let default_filter = match process {
        Process::Server => SERVER_FILTER,
        Process::Command => "warn",
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let (writer, log_writer) = match process {
        Process::Server => {
            let (writer, guard) = NonBlockingBuilder::default()
                .lossy(false)
                .buffered_lines_limit(LOG_QUEUE_LINES)
                .thread_name("log-writer")
                .finish(std::io::BufWriter::with_capacity(
                    64 * 1024,
                    std::io::stdout(),
                ));
            (BoxMakeWriter::new(writer), Some(guard))
        }
        Process::Command => (BoxMakeWriter::new(std::io::stdout), None),
    };
    let logs = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(colours())
            .with_writer(writer)
            .boxed(),
    };
    let traces = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service.to_owned())));
    // Another subscriber (a test harness) may already be installed; keep it.
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init()
        .is_ok();
    EXPORTING.store(installed && provider.is_some(), Ordering::Relaxed);
    Ok(Telemetry {
        provider,
        _log_writer: log_writer.filter(|_| installed),
    })
}

/// Text logs are coloured on a terminal only (and not with `NO_COLOR` set): a log file or
/// a collector's pipe gets no escape codes.
fn colours() -> bool {
    use std::io::IsTerminal as _;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn tracer_provider(endpoint: &str, service: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .build()
        .map_err(|source| TelemetryError::Exporter {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build())
}
