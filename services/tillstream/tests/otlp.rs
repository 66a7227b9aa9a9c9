//! Span export over OTLP/HTTP, to a tiny receiver inside the test: with an endpoint
//! configured, one request's spans from the gateway, the command service, the relay and the
//! projector all reach the collector in the caller's trace, and each hop sends its own span
//! on as the parent of the next. (This binary installs the process-wide subscriber, so it
//! holds this one test.)

mod support;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{Value, json};
use support::{DEADLINE, TestPlatform};
use tillstream_runtime::telemetry::{self, TelemetryConfig};
use tillstream_testkit::eventually;

const TRACE_ID: &str = "5af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "c7ad6b7169203331";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_every_hop_reach_an_otlp_collector_in_the_callers_trace() {
    let received: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let sink = received.clone();
    let collector = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().expect("not poisoned").push(body);
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let exporting = telemetry::init(
        &TelemetryConfig {
            otlp_endpoint: Some(endpoint),
            service_name: Some("tillstream-test".into()),
            ..Default::default()
        },
        "tillstream-test",
        telemetry::Process::Server,
    )
    .expect("exporter set up");
    assert!(exporting.exporting());

    let platform = TestPlatform::start().await;
    let body: Value = reqwest::Client::new()
        .post(format!("http://{}/graphql", platform.addrs.gateway_http))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(&json!({
            "query": "mutation($i: RegisterInput!) { register(input: $i) { id } }",
            "variables": { "i": { "email": "exported@example.com", "username": "exported",
                                   "password": support::PASSWORD, "fullName": "Ex Ported" } }
        }))
        .send()
        .await
        .expect("gateway answers")
        .json()
        .await
        .expect("JSON body");
    let user_id = body["data"]["register"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("registered: {body}"))
        .to_owned();

    // The event is in the caller's trace, under the command service's own span.
    let pool = platform.env.connect("users");
    let metadata: Value = sqlx::query_scalar(
        "SELECT metadata FROM events WHERE aggregate_id = $1 ORDER BY sequence LIMIT 1",
    )
    .bind(&user_id)
    .fetch_one(&pool)
    .await
    .expect("the event is stored");
    assert_eq!(metadata["trace_id"], TRACE_ID);
    let command_span = metadata["span_id"].as_str().expect("a span id").to_owned();
    assert_ne!(
        command_span, CALLER_SPAN,
        "the service's span, not the caller's"
    );

    // Every hop's spans arrive (the batch exporter is flushed until they do), all in the
    // caller's trace, each the child of the hop before it.
    let spans = eventually(DEADLINE, "spans of every hop at the collector", || {
        tokio::task::block_in_place(|| exporting.flush());
        let spans = decode(&received.lock().expect("not poisoned"));
        let relayed = spans
            .iter()
            .any(|s| s.name == "projector.apply" && s.trace_id == hex(TRACE_ID));
        std::future::ready(relayed.then_some(spans))
    })
    .await;
    let in_trace: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == hex(TRACE_ID))
        .collect();
    let named = |name: &str| {
        in_trace
            .iter()
            .copied()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name} in the trace: {in_trace:#?}"))
    };
    let http = named("POST /graphql");
    let grpc = named("/tillstream.user.v1.UserService/RegisterUser");
    let relay = named("relay.publish");
    let projector = named("projector.apply");
    assert_eq!(
        http.parent_span_id,
        hex(CALLER_SPAN),
        "the gateway continues the caller"
    );
    assert_eq!(
        grpc.parent_span_id, http.span_id,
        "gRPC continues the gateway"
    );
    assert_eq!(
        grpc.span_id,
        hex(&command_span),
        "the event records the gRPC span"
    );
    assert_eq!(
        relay.parent_span_id, grpc.span_id,
        "the relay continues the command"
    );
    assert_eq!(
        projector.parent_span_id, relay.span_id,
        "the projector continues the relay"
    );
    platform.stop().await;
}

/// Every span in the OTLP requests received.
fn decode(bodies: &[Bytes]) -> Vec<Span> {
    bodies
        .iter()
        .filter_map(|body| ExportTraceServiceRequest::decode(body.as_ref()).ok())
        .flat_map(|request| request.resource_spans)
        .flat_map(|resource| resource.scope_spans)
        .flat_map(|scope| scope.spans)
        .collect()
}

fn hex(digits: &str) -> Vec<u8> {
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex"))
        .collect()
}
