//! The gateway's traffic controls and telemetry against the in-process platform: request
//! metrics on the METRICS stream and in Prometheus, rate limits, and request limits.

mod support;

use async_nats::jetstream::consumer::pull::OrderedConfig;
use futures::StreamExt as _;
use serde_json::{Value, json};
use support::{DEADLINE, TestPlatform};
use tillstream_events::RequestMetric;

async fn graphql(http: &reqwest::Client, url: &str, token: Option<&str>, body: Value) -> Value {
    let mut request = http.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn every_request_is_a_metric_on_the_stream_and_in_prometheus() {
    let platform = TestPlatform::start().await;
    let (_, token) = platform.customer("mia").await;
    let gateway = format!("http://{}", platform.addrs.gateway_http);
    let http = reqwest::Client::new();
    let ns = platform.env.namespace.clone();

    // Read the namespace's METRICS stream from its start, as the predictor would.
    let client = async_nats::connect(tillstream_testkit::nats_url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = tillstream_testkit::eventually(DEADLINE, "the METRICS stream", || async {
        js.get_stream(ns.stream("METRICS")).await.ok()
    })
    .await;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: ns.request_metrics_subject("gateway"),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();

    let body = graphql(
        &http,
        &format!("{gateway}/graphql"),
        Some(&token),
        json!({ "query": "query Mine { me { email } }" }),
    )
    .await;
    assert!(body["data"]["me"]["email"].is_string(), "{body}");
    let missing = http
        .get(format!("{gateway}/api/v1/orders/{}", uuid::Uuid::now_v7()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 401);

    let mut wanted = vec![
        ("graphql query me".to_owned(), 200_u16),
        ("GET /api/v1/orders/{id}".to_owned(), 401),
    ];
    let seen = tokio::time::timeout(DEADLINE, async {
        while let Some(message) = messages.next().await {
            let message = message.unwrap();
            let metric: RequestMetric = serde_json::from_slice(&message.payload).unwrap();
            assert_eq!(metric.service, "gateway");
            wanted.retain(|(operation, status)| {
                let hit = metric.operation == *operation && metric.status == *status;
                if hit {
                    assert!(metric.bytes > 0, "body size is recorded: {metric:?}");
                }
                !hit
            });
            if wanted.is_empty() {
                return;
            }
        }
    })
    .await;
    assert!(seen.is_ok(), "metrics not seen on the stream: {wanted:?}");

    let text = http
        .get(format!("{gateway}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines().any(
            |l| l.starts_with("tillstream_gateway_operation_duration_seconds")
                && l.contains("operation=\"graphql query me\"")
        ),
        "per-operation histogram in /metrics"
    );
    platform.stop().await;
}
