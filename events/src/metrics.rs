//! The operational streams beside the log: one small message per served request
//! (`metrics.requests.<service>`, stream METRICS), a process's resource sample every few
//! seconds (`metrics.resources.<service>`, stream METRICS), and the predictor's scaling
//! decisions (`autoscale.decisions`, stream AUTOSCALE).
//!
//! These messages are best-effort telemetry, not facts of the domain: a producer drops
//! them rather than slow a request down, and consumers must tolerate gaps, duplicates and
//! messages that arrive late or out of order (each carries its own timestamp).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One request a service answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RequestMetric {
    /// The service that answered (`gateway`, `user`, `order`).
    pub service: String,
    /// The instance (host name or process id), so replicas can be told apart.
    pub instance: String,
    /// What was asked: an HTTP route template (`GET /api/v1/orders/{id}`), a GraphQL
    /// operation (`graphql query order`) or a gRPC method.
    pub operation: String,
    /// HTTP status code of the answer (gRPC codes are mapped to their HTTP equivalent).
    pub status: u16,
    /// Time from the first byte in to the last byte out, in microseconds.
    pub latency_us: u64,
    /// Size of the response body in bytes, when known.
    pub bytes: u64,
    /// When the request finished.
    pub at: DateTime<Utc>,
}

impl RequestMetric {
    /// A 5xx answer: the service failed, as opposed to the caller asking for something wrong.
    pub fn is_error(&self) -> bool {
        self.status >= 500
    }
}

/// A process's own resource use, read from /proc.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceSample {
    pub service: String,
    pub instance: String,
    /// CPU used since the previous sample, as a percentage of one core (may exceed 100 on
    /// several cores).
    pub cpu_percent: f64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    pub at: DateTime<Utc>,
}

/// Which way a scaling decision goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScalingDirection {
    Out,
    In,
}

/// A decision of the predictor to change a service's replica count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScalingDecision {
    pub service: String,
    pub direction: ScalingDirection,
    pub from_replicas: u32,
    pub to_replicas: u32,
    /// Why, in words (`cpu 78% > 70% for 5m`, `forecast cpu 74% within 5m`, ...).
    pub reason: String,
    /// Forecast request rate (requests/s) at the horizon.
    pub forecast_rate: f64,
    /// Forecast CPU (percent of one core) at the horizon.
    pub forecast_cpu_percent: f64,
    /// 0..1: how much the model is trusted (1 − recent MAPE, clamped).
    pub confidence: f64,
    pub at: DateTime<Utc>,
}

/// The predictor's latest forecast for one service, published after every window so that
/// dashboards (and the gateway) can show what the predictor expects, not only what it
/// decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LoadForecast {
    pub service: String,
    /// End of the last window the forecast is based on.
    pub at: DateTime<Utc>,
    /// How far ahead the forecast looks, in seconds.
    pub horizon_secs: u64,
    /// Request rate (requests/s) measured over the last minute.
    pub measured_rate: f64,
    /// CPU (percent of one core, mean per instance) measured over the last minute.
    pub measured_cpu_percent: Option<f64>,
    /// Forecast request rate (one-minute mean) at the horizon.
    pub forecast_rate: f64,
    /// Forecast CPU (one-minute mean) at the horizon, when CPU samples arrive.
    pub forecast_cpu_percent: Option<f64>,
    /// Mean absolute percentage error (0.1 = 10%) of recent rate forecasts, on windows the
    /// model had not seen when it forecast them.
    pub rate_mape: Option<f64>,
    /// The same for CPU.
    pub cpu_mape: Option<f64>,
    /// 0..1: 1 − CPU MAPE, clamped; 0 until forecasts have been scored.
    pub confidence: f64,
    /// Replicas the predictor currently wants.
    pub desired_replicas: u32,
}
