//! One [`RequestMetric`] per request on `metrics.requests.gateway` (stream METRICS), and
//! Prometheus histograms per operation.
//!
//! The request never waits for NATS: [`measure`] hands the metric to a bounded channel
//! with `try_send`; a full (or closed) channel drops the metric and counts it in
//! `tillstream_gateway_request_metrics_dropped_total`. [`Publisher::run`] drains the
//! channel onto NATS in the background (core publish, captured by the METRICS stream),
//! and on shutdown publishes what is queued and flushes. Metrics are best-effort
//! telemetry: a message may be lost while NATS is away.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::HttpBody as _;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tillstream_events::RequestMetric;
use tokio::sync::mpsc;

/// The operation a handler served, when the route alone does not say (GraphQL puts its
/// operation label here, in the response's extensions).
#[derive(Debug, Clone)]
pub struct OperationName(pub String);

const DROPPED: &str = "tillstream_gateway_request_metrics_dropped_total";
const PUBLISHED: &str = "tillstream_gateway_request_metrics_published_total";
const DURATION: &str = "tillstream_gateway_operation_duration_seconds";

/// The request side: cheap to clone, never blocks.
#[derive(Clone)]
pub struct RequestMetrics {
    sender: mpsc::Sender<RequestMetric>,
    /// Shared: axum clones the middleware's state for every request.
    instance: Arc<str>,
    dropped: Arc<AtomicU64>,
}

/// The background side: publishes what [`RequestMetrics`] queued.
pub struct Publisher {
    receiver: mpsc::Receiver<RequestMetric>,
    client: async_nats::Client,
    subject: String,
}

/// A channel of `capacity` metrics from requests to NATS `subject`.
pub fn channel(
    client: async_nats::Client,
    subject: String,
    capacity: usize,
) -> (RequestMetrics, Publisher) {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    metrics::describe_counter!(
        DROPPED,
        "Request metrics dropped because the publish buffer was full"
    );
    metrics::describe_histogram!(DURATION, "Gateway request duration by operation");
    (
        RequestMetrics {
            sender,
            instance: instance().into(),
            dropped: Arc::default(),
        },
        Publisher {
            receiver,
            client,
            subject,
        },
    )
}

/// This process, as `<host>:<pid>`, so replicas can be told apart.
fn instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}

impl RequestMetrics {
    /// Queues `metric`, or drops and counts it when the buffer is full.
    pub fn record(&self, metric: RequestMetric) {
        if self.sender.try_send(metric).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(DROPPED).increment(1);
        }
    }

    /// Metrics this handle's channel refused so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Publisher {
    /// Publishes until every [`RequestMetrics`] handle is dropped (the router stopped),
    /// then flushes.
    pub async fn run(mut self) {
        while let Some(metric) = self.receiver.recv().await {
            let payload = match serde_json::to_vec(&metric) {
                Ok(payload) => payload,
                Err(error) => {
                    tracing::warn!(%error, "request metric does not serialise");
                    continue;
                }
            };
            match self
                .client
                .publish(self.subject.clone(), payload.into())
                .await
            {
                Ok(()) => metrics::counter!(PUBLISHED).increment(1),
                Err(error) => {
                    metrics::counter!(DROPPED).increment(1);
                    tracing::debug!(%error, "request metric not published");
                }
            }
        }
        if let Err(error) = self.client.flush().await {
            tracing::debug!(%error, "request metrics not flushed");
        }
    }
}

/// Middleware: times the request and records one metric for it: the operation (GraphQL
/// label or `METHOD /route/{template}`), status, latency up to the response head, and the
/// body size when it is known up front.
pub async fn measure(State(sink): State<RequestMetrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let route = format!("{} {route}", request.method());
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let operation = response
        .extensions()
        .get::<OperationName>()
        .map_or(route, |name| name.0.clone());
    let status = response.status().as_u16();
    let labels = [
        ("operation", operation.clone()),
        ("status", format!("{}xx", status / 100)),
    ];
    metrics::histogram!(DURATION, &labels).record(elapsed.as_secs_f64());
    sink.record(RequestMetric {
        service: "gateway".to_owned(),
        instance: sink.instance.to_string(),
        operation,
        status,
        latency_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        bytes: response.body().size_hint().exact().unwrap_or(0),
        at: chrono::Utc::now(),
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;

    fn metric(n: u64) -> RequestMetric {
        RequestMetric {
            service: "gateway".to_owned(),
            instance: "test".to_owned(),
            operation: format!("GET /{n}"),
            status: 200,
            latency_us: n,
            bytes: 0,
            at: chrono::Utc::now(),
        }
    }

    /// A full buffer drops and counts instead of waiting; the publisher then sends what
    /// was queued, in order, and stops once the senders are gone.
    #[tokio::test]
    async fn a_full_buffer_drops_and_counts_and_the_rest_is_published() {
        let url = std::env::var("TILLSTREAM_TEST_NATS_URL")
            .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
        let client = async_nats::connect(url).await.unwrap();
        let subject = format!(
            "test-{}.metrics.requests.gateway",
            uuid::Uuid::new_v4().simple()
        );
        let mut subscriber = client.subscribe(subject.clone()).await.unwrap();
        let (sink, publisher) = channel(client, subject, 2);
        for n in 0..5 {
            sink.record(metric(n)); // never awaits
        }
        assert_eq!(sink.dropped(), 3);
        drop(sink);
        publisher.run().await;
        for n in 0..2 {
            let message =
                tokio::time::timeout(std::time::Duration::from_secs(10), subscriber.next())
                    .await
                    .unwrap()
                    .unwrap();
            let got: RequestMetric = serde_json::from_slice(&message.payload).unwrap();
            assert_eq!(got.latency_us, n);
        }
    }
}
