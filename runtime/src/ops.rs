//! Operations endpoints served by every process: `/healthz` (the process is alive),
//! `/readyz` (its dependencies answer) and `/metrics` (Prometheus text format).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::{ListenerExt, TapIo};
use futures::future::BoxFuture;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use crate::keepalive::Http2Keepalive;
use crate::{Shutdown, http_server};

/// Something a process needs before it can serve: a database, a NATS connection.
pub trait ReadinessCheck: Send + Sync + 'static {
    /// A short name shown in `/readyz` output.
    fn name(&self) -> &'static str;
    /// `Ok` when ready, or a plain-words reason when not.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// The set of checks `/readyz` runs.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<Arc<dyn ReadinessCheck>>,
}

impl Readiness {
    pub fn with(mut self, check: impl ReadinessCheck) -> Self {
        self.checks.push(Arc::new(check));
        self
    }

    pub fn merge(mut self, other: Readiness) -> Self {
        self.checks.extend(other.checks);
        self
    }

    /// Runs every check; returns whether all passed and a JSON report.
    pub async fn report(&self) -> (bool, serde_json::Value) {
        let mut ready = true;
        let mut details = serde_json::Map::new();
        for check in &self.checks {
            let status = match check.check().await {
                Ok(()) => "ok".to_owned(),
                Err(reason) => {
                    ready = false;
                    reason
                }
            };
            details.insert(check.name().to_owned(), json!(status));
        }
        (ready, json!({ "ready": ready, "checks": details }))
    }
}

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How often the recorder's histograms fold the samples recorded since into their
/// summaries. Without it they keep every sample until `/metrics` is next scraped: memory
/// that grows with every request wherever nothing scrapes (at 15 000 requests/s, two
/// histograms each, ~1 GB an hour).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The process-wide Prometheus recorder, installed on first use, with its upkeep running.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => {
                start_upkeep(handle.clone());
                Some(handle)
            }
            Err(error) => {
                tracing::warn!(%error, "metrics recorder not installed; /metrics will be empty");
                None
            }
        })
        .as_ref()
}

/// Runs the recorder's upkeep every [`UPKEEP_INTERVAL`]: as a task of the runtime that
/// installs the recorder (a service's one runtime, for its whole life), or on a thread of
/// its own when there is none. Not a thread always: one more thread costs a service ~2 MiB
/// of allocator pages (`tillstream-bench idle-rss`), against a 30 MB budget.
fn start_upkeep(handle: PrometheusHandle) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    handle.run_upkeep();
                }
            });
        }
        Err(_) => {
            let started = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_INTERVAL);
                        handle.run_upkeep();
                    }
                });
            if let Err(error) = started {
                tracing::warn!(%error, "metrics upkeep not started; histograms are drained only by scrapes");
            }
        }
    }
}

/// `/healthz`, `/readyz`, `/metrics`, to merge into a service's HTTP router or serve alone.
pub fn router(readiness: Readiness) -> Router {
    prometheus();
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok") }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(readiness))
}

async fn readyz(State(readiness): State<Arc<Readiness>>) -> impl IntoResponse {
    let (ready, body) = readiness.report().await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

async fn metrics() -> impl IntoResponse {
    match prometheus() {
        Some(handle) => (StatusCode::OK, handle.render()),
        None => (StatusCode::OK, String::new()),
    }
}

/// Axum middleware recording `tillstream_http_requests_total` and
/// `tillstream_http_request_duration_seconds` by route and status class.
pub async fn track_requests(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let labels = [
        ("route", route),
        ("status", format!("{}xx", response.status().as_u16() / 100)),
    ];
    metrics::counter!("tillstream_http_requests_total", &labels).increment(1);
    metrics::histogram!("tillstream_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Binds `addr` for an HTTP router. Port 0 picks a free port; see `local_addr`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// `listener`, whose accepted connections send without delay (`TCP_NODELAY`): a response
/// written in more than one piece does not wait for the peer's acknowledgement of the
/// first (docs/performance.md, Fix 16). For `axum::serve`, which does not set it.
pub fn without_delay(listener: TcpListener) -> TapIo<TcpListener, fn(&mut TcpStream)> {
    listener.tap_io(set_nodelay as fn(&mut TcpStream))
}

pub(crate) fn set_nodelay(connection: &mut TcpStream) {
    if let Err(error) = connection.set_nodelay(true) {
        tracing::debug!(%error, "TCP_NODELAY not set on a connection");
    }
}

/// Serves `router` on `listener` until `shutdown` fires, finishing in-flight requests;
/// connections that send no request for [`http_server::DEFAULT_IDLE_TIMEOUT`] are closed,
/// and HTTP/2 peers that stop answering pings too ([`Http2Keepalive::SERVER`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    http_server::serve(
        listener,
        router,
        shutdown,
        Some(http_server::DEFAULT_IDLE_TIMEOUT),
        Http2Keepalive::SERVER,
    )
    .await
}
