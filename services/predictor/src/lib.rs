//! The predictor: learns the platform's load from the request-metric stream and raises
//! scaling triggers before a threshold is crossed.
//!
//! Data flow, one file per step: every service's request metrics and resource samples
//! arrive on the METRICS stream (`metrics.requests.*`, `metrics.resources.*`) and are
//! [`ingest`]ed into fixed [`window`]s (10 s), per service and in total, with late and
//! out-of-order messages folded in within a grace period. Each closed window steps the
//! service's [`model`] (a linear regression on lagged windows and the time of day,
//! refitted every few minutes, forecasting request rate and CPU one horizon ahead) and
//! its scaling [`rule`]. Forecasts and decisions go out through [`outputs`]: the AUTOSCALE
//! stream (`autoscale.forecasts`, `autoscale.decisions`), Prometheus gauges, and optional
//! webhook and command hooks.
//!
//! Everything above the [`app`] is pure and driven by a [`clock`], so the same code runs
//! live, in the [`backtest`] over generated [`trace`]s, and in tests with minutes of
//! metrics compressed into milliseconds.

pub mod app;
pub mod backtest;
pub mod bench;
pub mod clock;
pub mod config;
pub mod ingest;
pub mod model;
pub mod outputs;
pub mod predictor;
pub mod record;
pub mod rule;
pub mod trace;
pub mod window;

pub use app::App;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Cli, Config};
pub use predictor::{Predictor, PredictorConfig, ServiceModel, Step};
