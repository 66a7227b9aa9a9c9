//! The gateway's traffic controls and telemetry against the in-process platform: request
//! metrics on the METRICS stream and in Prometheus, rate limits, request limits, the idle
//! timeout of connections, and the predictor's answer to that traffic as `loadForecast`.

mod support;

use async_nats::jetstream::consumer::pull::OrderedConfig;
use futures::StreamExt as _;
use serde_json::{Value, json};
use support::{DEADLINE, TestPlatform, forecast};
use tillstream_events::{RequestMetric, ScalingDecision, ScalingDirection};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

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

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after_and_others_go_on() {
    let platform = TestPlatform::start_with(|config| {
        config.gateway_limits.rate_limit_per_second = 1;
        config.gateway_limits.rate_limit_burst = 3;
    })
    .await;
    let (_, ann) = platform.customer("ann").await;
    let (_, ben) = platform.customer("ben").await;
    let url = format!("http://{}/graphql", platform.addrs.gateway_http);
    let http = reqwest::Client::new();
    let me = json!({ "query": "{ me { id } }" });
    let ask = |token: &str| {
        http.post(&url)
            .bearer_auth(token.to_owned())
            .json(&me)
            .send()
    };
    // The burst passes; then ann is refused at once, with a time to come back. (Requests
    // are counted, not timed: however slow the machine, at most one more token per second
    // refills, so a bounded number of requests meets the limit.)
    let mut statuses = Vec::new();
    let mut refused = None;
    while refused.is_none() && statuses.len() < 100 {
        let response = ask(&ann).await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            refused = Some(response);
        }
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    let refused = refused.unwrap();
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], json!("RATE_LIMITED"), "{body}");
    // Another client has its own budget; the ops endpoints are never limited.
    assert_eq!(ask(&ben).await.unwrap().status(), 200);
    for _ in 0..10 {
        let health = http
            .get(format!("http://{}/healthz", platform.addrs.gateway_http))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
    }
    // Once the bucket refills, ann is served again.
    tillstream_testkit::eventually(DEADLINE, "ann served again", || async {
        (ask(&ann).await.unwrap().status() == 200).then_some(())
    })
    .await;
    platform.stop().await;
}

#[tokio::test]
async fn the_gateway_closes_connections_that_stay_idle_past_its_idle_timeout() {
    let platform =
        TestPlatform::start_with(|config| config.gateway_limits.idle_timeout_secs = 1).await;
    let addr = platform.addrs.gateway_http;
    let mut kept_alive = TcpStream::connect(addr).await.unwrap();
    kept_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: gateway\r\n\r\n")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // Each is read to its end, which comes only when the gateway closes it.
    let mut answered = Vec::new();
    tokio::time::timeout(DEADLINE, kept_alive.read_to_end(&mut answered))
        .await
        .expect("the kept-alive connection closed by the gateway")
        .unwrap();
    let answered = String::from_utf8_lossy(&answered);
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    let mut nothing = Vec::new();
    tokio::time::timeout(DEADLINE, silent.read_to_end(&mut nothing))
        .await
        .expect("the silent connection closed by the gateway")
        .unwrap();
    assert!(nothing.is_empty());
    platform.stop().await;
}

#[tokio::test]
async fn oversized_deep_complex_and_introspecting_requests_are_refused_with_codes() {
    let platform = TestPlatform::start_with(|config| {
        config.gateway_limits.rate_limit_per_second = 0;
        config.gateway_limits.max_body_bytes = 2048;
        config.gateway_limits.graphql_max_depth = 4;
        config.gateway_limits.graphql_max_complexity = 50;
        config.gateway_limits.graphql_introspection = false;
        config.gateway_limits.graphiql = false;
    })
    .await;
    let (_, token) = platform.customer("cai").await;
    let gateway = format!("http://{}", platform.addrs.gateway_http);
    let url = format!("{gateway}/graphql");
    let http = reqwest::Client::new();
    let first_error = |body: &Value| {
        (
            body["errors"][0]["extensions"]["code"].clone(),
            body["errors"][0]["extensions"]["limit"].clone(),
        )
    };

    // Within every limit: answered.
    let ok = graphql(
        &http,
        &url,
        Some(&token),
        json!({ "query": "{ me { id } orders(first: 2) { edges { node { id } } } }" }),
    )
    .await;
    assert!(ok["errors"].is_null(), "{ok}");

    // Too deep: refused before it runs.
    let deep = graphql(
        &http,
        &url,
        Some(&token),
        json!({ "query": "{ orders(first: 1) { edges { node { items { sku } } } } }" }),
    )
    .await;
    assert_eq!(
        first_error(&deep),
        (json!("BAD_USER_INPUT"), json!("depth")),
        "{deep}"
    );
    assert!(deep["data"].is_null());

    // Too complex: a page costs its size times its fields.
    let complex = graphql(
        &http,
        &url,
        Some(&token),
        json!({ "query": "{ orders(first: 100) { edges { node { id status } } } }" }),
    )
    .await;
    assert_eq!(
        first_error(&complex),
        (json!("BAD_USER_INPUT"), json!("complexity")),
        "{complex}"
    );
    let aliases: String = (0..60).map(|i| format!("m{i}: me {{ id }} ")).collect();
    let many = graphql(
        &http,
        &url,
        Some(&token),
        json!({ "query": format!("{{ {aliases} }}") }),
    )
    .await;
    assert_eq!(first_error(&many).1, json!("complexity"), "{many}");

    // Page size.
    let page = graphql(
        &http,
        &url,
        Some(&token),
        json!({ "query": "{ orders(first: 101) { edges { cursor } } }" }),
    )
    .await;
    assert_eq!(first_error(&page).0, json!("BAD_USER_INPUT"), "{page}");

    // Introspection and GraphiQL are off.
    let introspection = graphql(
        &http,
        &url,
        Some(&token),
        json!({ "query": "{ __schema { types { name } } }" }),
    )
    .await;
    // async-graphql answers a disabled introspection with null, leaking nothing.
    assert!(
        introspection["data"]["__schema"].is_null() && !introspection.to_string().contains("User"),
        "{introspection}"
    );
    let graphiql = http.get(&url).send().await.unwrap();
    assert_eq!(graphiql.status(), 405);
    // Nor is the schema served as SDL (tests/fuzz.rs reads it when introspection is on).
    let sdl = http
        .get(format!("{url}/schema.graphql"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(sdl.status(), 404);

    // A body over the limit: 413 with the API's JSON error, on GraphQL and on REST.
    let padding = "x".repeat(4096);
    for path in ["/graphql", "/api/v1/orders"] {
        let response = http
            .post(format!("{gateway}{path}"))
            .bearer_auth(&token)
            .json(&json!({ "query": "{ me { id } }", "padding": padding }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["error"]["code"],
            json!("PAYLOAD_TOO_LARGE"),
            "{path}: {body}"
        );
    }
    // Without a declared length (chunked), the limit holds too.
    let chunks = futures::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![b' '; 512])));
    let response = http
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    platform.stop().await;
}

fn decision(service: &str, to: u32) -> ScalingDecision {
    ScalingDecision {
        service: service.to_owned(),
        direction: ScalingDirection::Out,
        from_replicas: to - 1,
        to_replicas: to,
        reason: format!("step {to}"),
        forecast_rate: 10.0,
        forecast_cpu_percent: 75.0,
        confidence: 0.8,
        at: chrono::DateTime::UNIX_EPOCH + chrono::Duration::minutes(i64::from(to)),
    }
}

#[tokio::test]
async fn admins_read_the_latest_forecast_per_service_and_recent_decisions() {
    let platform = TestPlatform::start().await;
    let (_, customer) = platform.customer("noor").await;
    let admin = platform.admin_token().await;
    let url = format!("http://{}/graphql", platform.addrs.gateway_http);
    let http = reqwest::Client::new();
    let ns = platform.env.namespace.clone();
    let client = async_nats::connect(tillstream_testkit::nats_url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);

    // What a predictor publishes: service names it would never see from the platform's
    // own traffic, so the real predictor running alongside cannot interfere.
    let mut acks = Vec::new();
    let mut publish = async |subject: String, body: Vec<u8>| {
        acks.push(js.publish(subject, body.into()).await.unwrap());
    };
    for (service, minute, rate) in [("shop-a", 1, 5.0), ("shop-b", 1, 7.0), ("shop-a", 2, 6.0)] {
        let body = serde_json::to_vec(&forecast(service, minute, rate)).unwrap();
        publish(ns.autoscale_forecast_subject(service), body).await;
    }
    publish(
        ns.autoscale_forecast_subject("shop-c"),
        b"not a forecast".to_vec(),
    )
    .await;
    for to in 2..=4 {
        let body = serde_json::to_vec(&decision("shop-a", to)).unwrap();
        publish(ns.autoscale_decisions_subject(), body).await;
    }
    for ack in acks {
        ack.await.unwrap();
    }

    let query = json!({ "query": "query($n: Int!) { loadForecast(decisions: $n) { \
        services { service at horizonSeconds measuredRate forecastRate forecastCpuPercent cpuMape desiredReplicas } \
        decisions { service direction fromReplicas toReplicas reason } } }", "variables": { "n": 2 } });
    let answer = graphql(&http, &url, Some(&admin), query.clone()).await;
    let view = &answer["data"]["loadForecast"];
    let ours: Vec<&Value> = view["services"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .filter(|s| {
            s["service"]
                .as_str()
                .is_some_and(|s| s.starts_with("shop-"))
        })
        .collect();
    assert_eq!(
        ours.len(),
        2,
        "one forecast per service; shop-c's undecodable one is skipped: {answer}"
    );
    assert_eq!(ours[0]["service"], "shop-a");
    assert_eq!(
        ours[0]["measuredRate"], 6.0,
        "the latest of shop-a: {answer}"
    );
    assert_eq!(ours[0]["forecastRate"], 12.0);
    assert_eq!(ours[0]["at"], "1970-01-01T00:02:00+00:00");
    assert_eq!(ours[0]["horizonSeconds"], 300);
    assert_eq!(ours[0]["cpuMape"], Value::Null);
    assert_eq!(ours[0]["desiredReplicas"], 2);
    assert_eq!(ours[1]["service"], "shop-b");
    assert_eq!(ours[1]["measuredRate"], 7.0);
    assert_eq!(
        view["decisions"],
        json!([
            { "service": "shop-a", "direction": "OUT", "fromReplicas": 3, "toReplicas": 4, "reason": "step 4" },
            { "service": "shop-a", "direction": "OUT", "fromReplicas": 2, "toReplicas": 3, "reason": "step 3" },
        ]),
        "the newest decisions first"
    );

    let refused = graphql(&http, &url, Some(&customer), query).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN");
    assert_eq!(refused["data"]["loadForecast"], Value::Null);
    let too_many = graphql(
        &http,
        &url,
        Some(&admin),
        json!({ "query": "{ loadForecast(decisions: 101) { decisions { reason } } }" }),
    )
    .await;
    assert_eq!(
        too_many["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{too_many}"
    );
    platform.stop().await;
}
