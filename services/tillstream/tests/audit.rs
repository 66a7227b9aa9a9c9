//! The log as an audit trail: replay from the event store, and following the stream.

mod support;

use futures::StreamExt;
use support::{DEADLINE, TestPlatform, authorized};
use tillstream::tail::{self, Start};
use tillstream_order::domain::Order;
use tillstream_proto::order::v1 as order_pb;
use tillstream_runtime::audit::{self, AsOf};
use tillstream_testkit::nats_url;

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
