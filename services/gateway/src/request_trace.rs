//! Every HTTP request to the gateway gets a correlation id (the caller's `x-correlation-id`,
//! or a new one, echoed in the response), a span that continues the caller's W3C
//! `traceparent`, and one log line when it completes. The correlation id and the trace
//! context travel on to the command services with each forwarded command
//! ([`crate::auth::Forward`]).

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tillstream_runtime::grpc::CORRELATION_HEADER;
use tillstream_runtime::{telemetry, trace_context};
use tracing::Instrument;

/// The target of the one line per request: `RUST_LOG=info,tillstream_gateway::access=warn`
/// leaves those lines out and keeps the span, so other lines keep their correlation id.
pub const ACCESS_LOG: &str = "tillstream_gateway::access";

pub async fn trace_requests(mut request: Request, next: Next) -> Response {
    let correlation = request
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let header = HeaderValue::from_str(&correlation).ok();
    if let Some(value) = &header {
        // Handlers (and so the forwarded commands) see the same id the response carries.
        request
            .headers_mut()
            .insert(CORRELATION_HEADER, value.clone());
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| request.uri().path(), MatchedPath::as_str);
    let method = request.method().as_str();
    // The span's fields are formatted for the log as it opens, once per request: the two
    // that only name the exported span are recorded only when spans are exported.
    let span = tracing::info_span!(
        "http.request",
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        correlation_id = %correlation,
    );
    if telemetry::exporting() {
        span.record("otel.name", format!("{method} {route}"));
        span.record("otel.kind", "server");
    }
    trace_context::continue_from(&span, trace_context::from_http(request.headers()).as_ref());
    let started = std::time::Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(
            target: ACCESS_LOG,
            status,
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    });
    if let Some(value) = header {
        response.headers_mut().insert(CORRELATION_HEADER, value);
    }
    response
}
