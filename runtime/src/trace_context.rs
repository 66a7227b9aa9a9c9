//! W3C trace context (`traceparent`) across every hop of a request: the gateway's HTTP
//! request → gRPC metadata to the command services → the event's metadata (`trace_id`,
//! `span_id`) → the relay's NATS headers → the projector.
//!
//! Works the same whether spans are exported or not. With OTLP export on (see
//! [`crate::telemetry`]), each hop opens a span that is a child of the context that came in
//! and sends its own span downstream. With export off, no span carries OpenTelemetry data
//! and the context that came in is passed on unchanged, so the caller's trace id still
//! reaches the event and the NATS message; nothing is generated, recorded or sent.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header (HTTP), metadata key (gRPC) and NATS header carrying the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// A `traceparent` value (`00-<trace id>-<span id>-<flags>`) parsed, if it is well-formed
/// and names a valid (non-zero) trace and span.
pub fn parse(traceparent: &str) -> Option<SpanContext> {
    struct One<'a>(&'a str);
    impl Extractor for One<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == TRACEPARENT).then_some(self.0)
        }
        fn keys(&self) -> Vec<&str> {
            vec![TRACEPARENT]
        }
    }
    // The propagator is lenient about field widths; W3C is not.
    let traceparent = traceparent.trim();
    let widths: Vec<usize> = traceparent.split('-').map(str::len).collect();
    if widths.len() < 4 || widths[..4] != [2, 32, 16, 2] {
        return None;
    }
    let context = TraceContextPropagator::new().extract(&One(traceparent));
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// The `traceparent` value naming `context`.
pub fn format(context: &SpanContext) -> Option<String> {
    struct Capture(Option<String>);
    impl Injector for Capture {
        fn set(&mut self, key: &str, value: String) {
            if key == TRACEPARENT {
                self.0 = Some(value);
            }
        }
    }
    if !context.is_valid() {
        return None;
    }
    let mut capture = Capture(None);
    let parent = opentelemetry::Context::new().with_remote_span_context(context.clone());
    TraceContextPropagator::new().inject_context(&parent, &mut capture);
    capture.0
}

/// The context a trace id and span id (as stored in event metadata) name.
pub fn from_ids(trace_id: &str, span_id: &str) -> Option<SpanContext> {
    parse(&format!("00-{trace_id}-{span_id}-01"))
}

/// The trace context of an HTTP request (or gRPC request's headers).
pub fn from_http(headers: &http::HeaderMap) -> Option<SpanContext> {
    headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse)
}

/// The trace context of a NATS message.
pub fn from_nats(headers: Option<&async_nats::HeaderMap>) -> Option<SpanContext> {
    headers
        .and_then(|h| h.get(TRACEPARENT))
        .and_then(|v| parse(v.as_str()))
}

/// Makes `span` a child of the remote `parent` (when spans are exported; otherwise
/// nothing happens). Call it before the span is first entered.
pub fn continue_from(span: &tracing::Span, parent: Option<&SpanContext>) {
    if let Some(parent) = parent {
        let context = opentelemetry::Context::new().with_remote_span_context(parent.clone());
        // Fails only when spans are not exported (no OpenTelemetry layer): nothing to do.
        let _ = span.set_parent(context);
    }
}

/// The context to send downstream from inside `span`: the span itself when spans are
/// exported, else `incoming` (what came in), unchanged.
pub fn outgoing(span: &tracing::Span, incoming: Option<&SpanContext>) -> Option<SpanContext> {
    let own = span.context().span().span_context().clone();
    if own.is_valid() {
        Some(own)
    } else {
        incoming.cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_round_trips_and_rejects_garbage() {
        let context = parse(SAMPLE).unwrap();
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(format(&context).as_deref(), Some(SAMPLE));
        assert_eq!(
            from_ids("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"),
            Some(context)
        );
        for bad in [
            "",
            "nonsense",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(parse(bad).is_none(), "{bad:?} is refused");
        }
    }

    #[test]
    fn without_export_the_incoming_context_passes_through() {
        let incoming = parse(SAMPLE);
        let span = tracing::info_span!("test");
        continue_from(&span, incoming.as_ref());
        assert_eq!(outgoing(&span, incoming.as_ref()), incoming);
        assert_eq!(outgoing(&span, None), None);
    }
}
