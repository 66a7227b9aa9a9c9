//! Correlation ids and W3C trace context cross every hop without an external collector:
//! a `traceparent` sent to the gateway (or straight to a command service) is the trace of
//! the events it causes, and reaches the NATS message the relay publishes for them.
//! (Span export over OTLP is `otlp.rs`; here nothing is exported, the context passes through.)

mod support;

use serde_json::{Value, json};
use support::{DEADLINE, TestPlatform, authorized, place};
use tillstream_testkit::eventually;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn a_callers_traceparent_and_correlation_id_reach_the_event_and_its_nats_message() {
    let platform = TestPlatform::start().await;
    let url = format!("http://{}/graphql", platform.addrs.gateway_http);
    let response = reqwest::Client::new()
        .post(&url)
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .header("x-correlation-id", "checkout-42")
        .json(&json!({
            "query": "mutation($i: RegisterInput!) { register(input: $i) { id } }",
            "variables": { "i": { "email": "traced@example.com", "username": "traced",
                                   "password": support::PASSWORD, "fullName": "Tra Ced" } }
        }))
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(
        response.headers()["x-correlation-id"],
        "checkout-42",
        "the gateway echoes the correlation id"
    );
    let body: Value = response.json().await.expect("JSON body");
    let user_id = body["data"]["register"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("registered: {body}"))
        .to_owned();

    // The event store: the caller's trace and span (nothing is exported, so the gateway
    // and the service pass the caller's context on unchanged).
    let metadata = stored_metadata(&platform, "users", &user_id).await;
    assert_eq!(metadata["correlation_id"], "checkout-42");
    assert_eq!(metadata["trace_id"], TRACE_ID);
    assert_eq!(metadata["span_id"], CALLER_SPAN);

    // The NATS message of that event carries the same trace and correlation id.
    let headers = published_headers(&platform, "user", &user_id).await;
    assert_eq!(
        headers.get("traceparent").map(|v| v.as_str()),
        Some(format!("00-{TRACE_ID}-{CALLER_SPAN}-01").as_str())
    );
    assert_eq!(
        headers.get("Tillstream-Correlation-Id").map(|v| v.as_str()),
        Some("checkout-42")
    );

    // Straight to a command service over gRPC: the same rules.
    let (customer, token) = platform.customer("grpc-traced").await;
    let mut request = authorized(place(&customer), &token);
    let other_trace = "0af7651916cd43dd8448eb211c80319c";
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{other_trace}-b7ad6b7169203331-01")
            .parse()
            .expect("ASCII"),
    );
    let order_id = platform
        .orders()
        .await
        .place_order(request)
        .await
        .expect("order placed")
        .into_inner()
        .id;
    let metadata = stored_metadata(&platform, "orders", &order_id).await;
    assert_eq!(metadata["trace_id"], other_trace);
    let headers = published_headers(&platform, "order", &order_id).await;
    assert!(
        headers
            .get("traceparent")
            .is_some_and(|v| v.as_str().contains(other_trace)),
        "{headers:?}"
    );

    // Without a traceparent (and without export) events carry no trace, only a correlation id.
    let (plain, _) = platform.customer("untraced").await;
    let metadata = stored_metadata(&platform, "users", &plain).await;
    assert!(metadata.get("trace_id").is_none(), "{metadata}");
    assert!(
        metadata["correlation_id"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    platform.stop().await;
}

/// The metadata of aggregate `id`'s first event in the event store `<id>_<database>`.
async fn stored_metadata(platform: &TestPlatform, database: &str, id: &str) -> Value {
    let pool = platform.env.connect(database);
    sqlx::query_scalar(
        "SELECT metadata FROM events WHERE aggregate_id = $1 ORDER BY sequence LIMIT 1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .expect("the event is stored")
}

/// The headers of the last message the relay published for aggregate `id`.
async fn published_headers(
    platform: &TestPlatform,
    aggregate: &str,
    id: &str,
) -> async_nats::HeaderMap {
    let client = async_nats::connect(tillstream_testkit::nats_url())
        .await
        .expect("NATS answers");
    let js = async_nats::jetstream::new(client);
    let namespace = &platform.env.namespace;
    let stream = js
        .get_stream(namespace.events_stream())
        .await
        .expect("EVENTS exists");
    let subject = namespace.event_subject(aggregate, id);
    eventually(DEADLINE, "the event on the EVENTS stream", || async {
        stream
            .get_last_raw_message_by_subject(&subject)
            .await
            .ok()
            .map(|m| m.headers)
    })
    .await
}
