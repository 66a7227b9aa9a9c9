//! The log as an audit trail: replay from the event store, and following the stream.

mod support;

use futures::StreamExt;
use serde_json::json;
use support::{DEADLINE, TestPlatform, authorized};
use tillstream::tail::{self, Start};
use tillstream_events::{Actor, EventEnvelope, EventMetadata, Role};
use tillstream_order::domain::Order;
use tillstream_proto::order::v1 as order_pb;
use tillstream_runtime::audit::{self, AsOf};
use tillstream_testkit::{eventually, nats_url};

#[tokio::test]
async fn an_order_can_be_replayed_as_of_any_version_or_time_and_tailed() {
    let platform = TestPlatform::start().await;
    let (user_id, token) = platform.customer("audited").await;
    let order_id = platform.order_for(&user_id, &token).await;
    let mut orders = platform.orders().await;
    let pay = order_pb::PayOrderRequest {
        order_id: order_id.clone(),
        payment_reference: "psp-9".into(),
        amount_cents: 2550,
        idempotency_key: String::new(),
    };
    orders.pay_order(authorized(pay, &token)).await.unwrap();
    let cancel = order_pb::CancelOrderRequest {
        order_id: order_id.clone(),
        reason: "changed my mind".into(),
        idempotency_key: String::new(),
    };
    orders
        .cancel_order(authorized(cancel, &token))
        .await
        .unwrap();

    let pool = platform.env.connect("orders");
    let all = audit::history::<Order>(&pool, &order_id, AsOf::default())
        .await
        .unwrap();
    let types: Vec<&str> = all.iter().map(|s| s.event_type.as_str()).collect();
    assert_eq!(types, vec!["OrderPlaced", "OrderPaid", "OrderCancelled"]);
    assert_eq!(all[1].state["status"], "PAID");
    assert_eq!(all[2].state["refund_due_cents"], 2550);
    assert_eq!(all[2].payload["reason"], "changed my mind");
    assert_eq!(all[1].metadata.actor.id.as_deref(), Some(user_id.as_str()));

    let at_version = AsOf {
        version: Some(1),
        time: None,
    };
    let first = audit::history::<Order>(&pool, &order_id, at_version)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].state["status"], "PLACED");
    let at_time = AsOf {
        version: None,
        time: Some(all[1].recorded_at),
    };
    let two = audit::history::<Order>(&pool, &order_id, at_time)
        .await
        .unwrap();
    assert_eq!(two.last().unwrap().state["status"], "PAID");

    // An outside subscriber following the stream sees the same three events, in order.
    let client = async_nats::connect(nats_url()).await.unwrap();
    let subject = format!(
        "{}.events.order.{order_id}",
        platform.env.namespace.prefix()
    );
    let events = tail::follow(
        client,
        &platform.env.namespace,
        Some(subject),
        Start::FromStart,
    )
    .await
    .unwrap();
    let seen: Vec<u64> = tokio::time::timeout(
        DEADLINE,
        events.take(3).map(|e| e.unwrap().sequence).collect(),
    )
    .await
    .expect("three events within the deadline");
    assert_eq!(seen, vec![1, 2, 3]);
    platform.stop().await;
}

/// An `OrderPlaced` written before orders had a currency (event version 1) is read as
/// version 2 in euros everywhere: the order service can still load and change the order,
/// the relay publishes it upcast, the read model shows it, and the audit replay decodes it.
#[tokio::test]
async fn an_order_stored_as_version_1_is_read_everywhere_as_version_2() {
    let platform = TestPlatform::start().await;
    let (user_id, token) = platform.customer("legacy").await;
    let order_id = uuid::Uuid::now_v7().to_string();
    let metadata = EventMetadata::new(
        "legacy-import",
        Actor::user(user_id.clone(), Role::Customer),
    );
    let orders_db = platform.env.connect("orders");
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('order', $1, 1, 'OrderPlaced', '1', $2, $3)",
    )
    .bind(&order_id)
    .bind(json!({"OrderPlaced": {
        "user_id": user_id,
        "items": [{"sku": "OLD-1", "name": "From the old shop", "quantity": 1, "unit_price_cents": 990, "line_total_cents": 990}],
        "total_cents": 990
    }}))
    .bind(json!(metadata.to_map()))
    .execute(&orders_db)
    .await
    .unwrap();

    let pay = order_pb::PayOrderRequest {
        order_id: order_id.clone(),
        payment_reference: "psp-legacy".into(),
        amount_cents: 990,
        idempotency_key: String::new(),
    };
    let paid = platform
        .orders()
        .await
        .pay_order(authorized(pay, &token))
        .await
        .expect("a version 1 order loads through the upcaster and can be paid")
        .into_inner();
    assert_eq!(paid.version, 2);

    let reads = platform.env.connect("reads");
    let id = uuid::Uuid::parse_str(&order_id).unwrap();
    let (status, currency): (String, String) = eventually(
        DEADLINE,
        "the legacy order paid in the read model",
        || async {
            sqlx::query_as("SELECT status, currency FROM orders WHERE id = $1 AND version = 2")
                .bind(id)
                .fetch_optional(&reads)
                .await
                .unwrap()
        },
    )
    .await;
    assert_eq!((status.as_str(), currency.as_str()), ("PAID", "EUR"));

    let js = async_nats::jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let stream = js
        .get_stream(platform.env.namespace.events_stream())
        .await
        .unwrap();
    let first = stream
        .get_first_raw_message_by_subject(
            platform.env.namespace.event_subject("order", &order_id),
            1,
        )
        .await
        .unwrap();
    let published: EventEnvelope = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!(published.event_version, "2");
    assert_eq!(published.payload["currency"], "EUR");

    let history = audit::history::<Order>(&orders_db, &order_id, AsOf::default())
        .await
        .unwrap();
    assert_eq!(
        history[0].event_version, "1",
        "the store is never rewritten"
    );
    assert_eq!(history[0].state["currency"], "EUR");
    assert_eq!(history[1].event_type, "OrderPaid");
    platform.stop().await;
}

/// `auditTrail` in GraphQL: admins see each event with its actor and the state after it,
/// as of any version; customers are refused; a bad aggregate type names the field.
#[tokio::test]
async fn admins_read_the_audit_trail_over_graphql() {
    let platform = TestPlatform::start().await;
    let (user_id, token) = platform.customer("trailed").await;
    let order_id = platform.order_for(&user_id, &token).await;
    let pay = order_pb::PayOrderRequest {
        order_id: order_id.clone(),
        payment_reference: "psp-trail".into(),
        amount_cents: 2550,
        idempotency_key: String::new(),
    };
    platform
        .orders()
        .await
        .pay_order(authorized(pay, &token))
        .await
        .unwrap();
    let admin = platform.admin_token().await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/graphql", platform.addrs.gateway_http);
    let query = "query($type: String!, $id: ID!, $v: Int) { auditTrail(aggregateType: $type, id: $id, asOfVersion: $v) { \
                 aggregateType id steps { sequence eventType eventVersion actorId actorRole correlationId payload state } } }";

    let all = support::graphql(
        &http,
        &url,
        &admin,
        query,
        json!({"type": "order", "id": order_id}),
    )
    .await;
    let steps = &all["data"]["auditTrail"]["steps"];
    assert_eq!(steps.as_array().map(Vec::len), Some(2), "{all}");
    assert_eq!(steps[0]["eventType"], "OrderPlaced");
    assert_eq!(steps[0]["state"]["status"], "PLACED");
    assert_eq!(steps[1]["eventType"], "OrderPaid");
    assert_eq!(steps[1]["state"]["status"], "PAID");
    assert_eq!(steps[1]["actorId"], user_id.as_str());
    assert_eq!(steps[1]["actorRole"], "customer");
    assert_eq!(steps[1]["payload"]["payment_reference"], "psp-trail");

    let first = support::graphql(
        &http,
        &url,
        &admin,
        query,
        json!({"type": "order", "id": order_id, "v": 1}),
    )
    .await;
    assert_eq!(
        first["data"]["auditTrail"]["steps"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "{first}"
    );

    let user = support::graphql(
        &http,
        &url,
        &admin,
        query,
        json!({"type": "user", "id": user_id}),
    )
    .await;
    assert_eq!(
        user["data"]["auditTrail"]["steps"][0]["eventType"], "UserRegistered",
        "{user}"
    );

    let refused = support::graphql(
        &http,
        &url,
        &token,
        query,
        json!({"type": "order", "id": order_id}),
    )
    .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{refused}"
    );
    let bad = support::graphql(
        &http,
        &url,
        &admin,
        query,
        json!({"type": "invoice", "id": order_id}),
    )
    .await;
    assert_eq!(
        bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{bad}"
    );
    let missing = support::graphql(
        &http,
        &url,
        &admin,
        query,
        json!({"type": "order", "id": uuid::Uuid::now_v7().to_string()}),
    )
    .await;
    assert_eq!(
        missing["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{missing}"
    );
    platform.stop().await;
}
