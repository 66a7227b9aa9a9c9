//! Settings of the predictor: command-line flags, each with an environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use crate::predictor::PredictorConfig;
use crate::rule::RuleConfig;
use crate::window::WindowConfig;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    #[command(flatten)]
    pub nats: tillstream_runtime::nats::NatsConfig,
    /// /healthz, /readyz, /metrics listen address.
    #[arg(
        long = "ops-addr",
        env = "TILLSTREAM_PREDICTOR_OPS_ADDR",
        default_value = "127.0.0.1:9106"
    )]
    pub ops_addr: SocketAddr,
    /// Name of the durable consumer on the METRICS stream.
    #[arg(
        long,
        env = "TILLSTREAM_PREDICTOR_CONSUMER",
        default_value = "predictor"
    )]
    pub consumer: String,
    /// Width of one window, in seconds.
    #[arg(long, env = "TILLSTREAM_PREDICTOR_WINDOW_SECS", default_value_t = 10)]
    pub window_secs: u64,
    /// Seconds after a window's end that late messages are still folded in.
    #[arg(long, env = "TILLSTREAM_PREDICTOR_GRACE_SECS", default_value_t = 5)]
    pub grace_secs: u64,
    /// Closed windows kept per service (8640 × 10 s = 24 h).
    #[arg(
        long,
        env = "TILLSTREAM_PREDICTOR_RING_WINDOWS",
        default_value_t = 8640
    )]
    pub ring_windows: usize,
    /// How far ahead to forecast, in seconds.
    #[arg(long, env = "TILLSTREAM_PREDICTOR_HORIZON_SECS", default_value_t = 300)]
    pub horizon_secs: u64,
    /// How often the regressions are refitted, in seconds.
    #[arg(long, env = "TILLSTREAM_PREDICTOR_REFIT_SECS", default_value_t = 300)]
    pub refit_secs: u64,
    /// Held-out windows the reported MAPE covers.
    #[arg(long, env = "TILLSTREAM_PREDICTOR_MAPE_WINDOWS", default_value_t = 360)]
    pub mape_windows: usize,
    /// Scale out above this CPU (percent of one core, mean per instance).
    #[arg(long, env = "TILLSTREAM_PREDICTOR_CPU_HIGH", default_value_t = 70.0)]
    pub cpu_high: f64,
    /// Measured CPU must stay above `cpu-high` this long (seconds) to scale out.
    #[arg(long, env = "TILLSTREAM_PREDICTOR_SUSTAIN_SECS", default_value_t = 300)]
    pub sustain_secs: u64,
    /// Scale in when measure and forecast stay under this CPU ...
    #[arg(long, env = "TILLSTREAM_PREDICTOR_LOW_WATER", default_value_t = 35.0)]
    pub low_water: f64,
    /// ... for this long (seconds); also the pause between a decision and a scale-in.
    #[arg(
        long,
        env = "TILLSTREAM_PREDICTOR_SCALE_IN_AFTER_SECS",
        default_value_t = 600
    )]
    pub scale_in_after_secs: u64,
    /// Consecutive windows the forecast must be over `cpu-high` before it scales out.
    #[arg(long, env = "TILLSTREAM_PREDICTOR_CONFIRMATIONS", default_value_t = 3)]
    pub confirmations: u32,
    /// Least confidence (1 − CPU MAPE) for a forecast to scale out.
    #[arg(
        long,
        env = "TILLSTREAM_PREDICTOR_MIN_CONFIDENCE",
        default_value_t = 0.5
    )]
    pub min_confidence: f64,
    /// No second scale-out within this many seconds of the last.
    #[arg(
        long,
        env = "TILLSTREAM_PREDICTOR_SCALE_OUT_COOLDOWN_SECS",
        default_value_t = 300
    )]
    pub scale_out_cooldown_secs: u64,
    /// CPU per replica a scale-out aims for.
    #[arg(long, env = "TILLSTREAM_PREDICTOR_TARGET_CPU", default_value_t = 60.0)]
    pub target_cpu: f64,
    /// Replicas each service is assumed to run when the predictor starts.
    #[arg(
        long,
        env = "TILLSTREAM_PREDICTOR_INITIAL_REPLICAS",
        default_value_t = 1
    )]
    pub initial_replicas: u32,
    #[arg(long, env = "TILLSTREAM_PREDICTOR_MIN_REPLICAS", default_value_t = 1)]
    pub min_replicas: u32,
    #[arg(long, env = "TILLSTREAM_PREDICTOR_MAX_REPLICAS", default_value_t = 20)]
    pub max_replicas: u32,
    /// POST every decision as JSON to this URL.
    #[arg(long, env = "TILLSTREAM_PREDICTOR_WEBHOOK_URL")]
    pub webhook_url: Option<url::Url>,
    /// Run this shell command on every decision, with `TILLSTREAM_SCALE_SERVICE`,
    /// `_DIRECTION`, `_FROM`, `_TO`, `_REASON` in its environment (for example
    /// `kubectl scale deployment/$TILLSTREAM_SCALE_SERVICE --replicas=$TILLSTREAM_SCALE_TO`).
    #[arg(long, env = "TILLSTREAM_PREDICTOR_COMMAND")]
    pub command: Option<String>,
    /// How often windows are closed and models stepped, in milliseconds.
    #[arg(long, env = "TILLSTREAM_PREDICTOR_TICK_MS", default_value_t = 1000)]
    pub tick_ms: u64,
}

impl Config {
    /// Every setting at its default (or its environment variable), with `nats`.
    pub fn with_defaults(nats: tillstream_runtime::nats::NatsConfig) -> Result<Self, clap::Error> {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            config: Config,
        }
        let mut config = Defaults::try_parse_from(["predictor"])?.config;
        config.nats = nats;
        Ok(config)
    }

    pub fn predictor(&self) -> PredictorConfig {
        let secs = Duration::from_secs;
        PredictorConfig {
            windows: WindowConfig {
                width: secs(self.window_secs.max(1)),
                grace: secs(self.grace_secs),
                capacity: self.ring_windows.max(1),
            },
            horizon: secs(self.horizon_secs),
            refit_every: secs(self.refit_secs),
            mape_windows: self.mape_windows,
            mape_floor: 1.0,
            rule: RuleConfig {
                cpu_high: self.cpu_high,
                sustain: secs(self.sustain_secs),
                low_water: self.low_water,
                scale_in_after: secs(self.scale_in_after_secs),
                confirmations: self.confirmations,
                min_confidence: self.min_confidence,
                scale_out_cooldown: secs(self.scale_out_cooldown_secs),
                target_cpu: self.target_cpu,
                initial_replicas: self.initial_replicas,
                min_replicas: self.min_replicas,
                max_replicas: self.max_replicas,
            },
        }
    }
}

// The command line of `tillstream-predictor`: its settings and the logging and tracing flags
// every binary takes. The doc comment below is its `--help` text.
#[derive(Debug, clap::Parser)]
#[command(
    name = "tillstream-predictor",
    version,
    about = "Forecasts load from the METRICS stream and publishes scaling decisions"
)]
/// The predictor: reads request metrics (`metrics.requests.*`) and resource samples
/// (`metrics.resources.*`) from the METRICS stream into fixed windows, forecasts request
/// rate and CPU with a linear model, and publishes scaling decisions on
/// `autoscale.decisions` (and the latest forecast on `autoscale.forecasts`), with
/// Prometheus gauges and optional webhook or command hooks. Serves /healthz, /readyz and
/// /metrics on --ops-addr. See docs/predictor.md.
///
/// Every flag can also be set by the environment variable shown with it; all settings of
/// every binary are listed in docs/configuration.md.
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(flatten)]
    pub telemetry: tillstream_runtime::telemetry::TelemetryConfig,
    #[command(flatten)]
    pub file: tillstream_runtime::config_file::ConfigFile,
}
