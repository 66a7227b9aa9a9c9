//! The projector's exactly-once application, against the real Postgres.

use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use serde_json::json;
use tillstream_events::{Actor, EventEnvelope, EventMetadata};
use tillstream_projections::{ApplyOutcome, Projector, RetryPolicy, dead_letters, migrate};
use tillstream_testkit::{TestEnv, nats_url};
use uuid::Uuid;

fn envelope(
    aggregate_type: &str,
    aggregate_id: Uuid,
    sequence: u64,
    event_type: &str,
    payload: serde_json::Value,
) -> EventEnvelope {
    EventEnvelope {
        event_id: Uuid::now_v7(),
        aggregate_type: aggregate_type.into(),
        aggregate_id: aggregate_id.to_string(),
        sequence,
        position: sequence as i64,
        event_type: event_type.into(),
        event_version: "1".into(),
        occurred_at: Utc::now(),
        payload,
        metadata: EventMetadata::new("test", Actor::anonymous()),
    }
}

/// Publishes `events` in order on their aggregates' subjects, then waits for every ack.
async fn publish_all(
    env: &TestEnv,
    js: &async_nats::jetstream::Context,
    events: Vec<EventEnvelope>,
) {
    let mut acks = Vec::new();
    for event in events {
        let subject = env
            .namespace
            .event_subject(&event.aggregate_type, &event.aggregate_id);
        acks.push(
            js.publish(subject, serde_json::to_vec(&event).unwrap().into())
                .await
                .unwrap(),
        );
    }
    for ack in acks {
        ack.await.unwrap();
    }
}

/// Creates the projector's durable consumer with `ack_wait` instead of the 30 s of
/// `nats/streams.json`; a projector started afterwards uses it as it is.
async fn projector_consumer(
    env: &TestEnv,
    js: &async_nats::jetstream::Context,
    ack_wait: Duration,
) -> async_nats::jetstream::consumer::PullConsumer {
    let (stream, mut config) =
        tillstream_runtime::nats::consumer_config(&env.namespace, "projector-main").unwrap();
    config.ack_wait = ack_wait;
    js.get_stream(stream)
        .await
        .unwrap()
        .create_consumer(config)
        .await
        .unwrap()
}

fn order_paid(order_id: Uuid) -> EventEnvelope {
    envelope(
        "order",
        order_id,
        2,
        "OrderPaid",
        json!({"payment_reference": "p", "amount_cents": 2500}),
    )
}

fn order_placed(order_id: Uuid, user_id: Uuid) -> EventEnvelope {
    envelope(
        "order",
        order_id,
        1,
        "OrderPlaced",
        json!({
            "user_id": user_id.to_string(),
            "currency": "EUR",
            "total_cents": 2500,
            "items": [
                {"sku": "A", "name": "a", "quantity": 2, "unit_price_cents": 500, "line_total_cents": 1000},
                {"sku": "B", "name": "b", "quantity": 1, "unit_price_cents": 1500, "line_total_cents": 1500}
            ]
        }),
    )
}

#[tokio::test]
async fn events_are_applied_once_and_gaps_wait() {
    let env = TestEnv::new();
    let (_, pool) = env.database("reads").await;
    migrate(&pool).await.unwrap();
    let client = async_nats::connect(nats_url()).await.unwrap();
    let projector = Projector::new(pool.clone(), client, env.namespace.clone(), 1);

    let (order_id, user_id) = (Uuid::now_v7(), Uuid::now_v7());
    let placed = order_placed(order_id, user_id);
    assert_eq!(
        projector.apply(&placed).await.unwrap(),
        ApplyOutcome::Applied
    );
    assert_eq!(
        projector.apply(&placed).await.unwrap(),
        ApplyOutcome::Duplicate,
        "a redelivery changes nothing"
    );

    let rows: Vec<(String, i32, i64)> =
        sqlx::query_as("SELECT sku, quantity, line_total_cents FROM order_items WHERE order_id = $1 ORDER BY line_no")
            .bind(order_id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows, vec![("A".into(), 2, 1000), ("B".into(), 1, 1500)]);
    let total: i64 = sqlx::query_scalar("SELECT total_cents FROM orders WHERE id = $1")
        .bind(order_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(total, 2500);

    // Sequence 3 before 2 is a gap: nothing applied, the checkpoint stays.
    let mut later = placed.clone();
    later.sequence = 3;
    assert_eq!(
        projector.apply(&later).await.unwrap(),
        ApplyOutcome::Gap { expected: 2 }
    );
    // An aggregate whose first event is missing is a gap too.
    let mut orphan = order_placed(Uuid::now_v7(), user_id);
    orphan.sequence = 2;
    assert_eq!(
        projector.apply(&orphan).await.unwrap(),
        ApplyOutcome::Gap { expected: 1 }
    );
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(orders, 1);

    // An undecodable payload is an error, and its transaction leaves nothing behind.
    let broken = envelope(
        "order",
        Uuid::now_v7(),
        1,
        "OrderPlaced",
        json!({"user_id": 42}),
    );
    assert!(projector.apply(&broken).await.is_err());
    let checkpoints: i64 = sqlx::query_scalar("SELECT count(*) FROM projection_checkpoints")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        checkpoints, 1,
        "the failed event's checkpoint was rolled back"
    );

    env.cleanup().await;
}

#[tokio::test]
async fn order_events_keep_history_and_customer_figures() {
    let env = TestEnv::new();
    let (_, pool) = env.database("reads").await;
    migrate(&pool).await.unwrap();
    let client = async_nats::connect(nats_url()).await.unwrap();
    let projector = Projector::new(pool.clone(), client, env.namespace.clone(), 1);

    let (order_id, user_id) = (Uuid::now_v7(), Uuid::now_v7());
    let registered = envelope(
        "user",
        user_id,
        1,
        "UserRegistered",
        json!({"email": "a@b.co", "username": "a", "full_name": "A", "role": "customer"}),
    );
    let mut paid = envelope(
        "order",
        order_id,
        2,
        "OrderPaid",
        json!({"payment_reference": "p", "amount_cents": 2500}),
    );
    paid.metadata = EventMetadata::new(
        "corr-9",
        Actor::user(user_id.to_string(), tillstream_events::Role::Customer),
    );
    let cancelled = envelope(
        "order",
        order_id,
        3,
        "OrderCancelled",
        json!({"reason": "no", "refund_due_cents": 2500}),
    );
    for event in [
        registered,
        order_placed(order_id, user_id),
        paid.clone(),
        cancelled,
    ] {
        assert_eq!(
            projector.apply(&event).await.unwrap(),
            ApplyOutcome::Applied
        );
    }
    assert_eq!(
        projector.apply(&paid).await.unwrap(),
        ApplyOutcome::Duplicate,
        "figures count each event once"
    );

    let (count, spent): (i64, i64) =
        sqlx::query_as("SELECT order_count, total_spent_cents FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((count, spent), (1, 0), "one order, fully refunded");
    let stats: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT orders_placed, orders_paid, orders_cancelled, refunds_due_cents FROM user_order_stats WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stats, (1, 1, 1, 2500));
    let history: Vec<(i64, String, Option<String>, String)> = sqlx::query_as(
        "SELECT sequence, event_type, actor_id, correlation_id FROM order_history WHERE order_id = $1 ORDER BY sequence",
    )
    .bind(order_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    let types: Vec<&str> = history.iter().map(|h| h.1.as_str()).collect();
    assert_eq!(types, vec!["OrderPlaced", "OrderPaid", "OrderCancelled"]);
    assert_eq!(history[1].2.as_deref(), Some(user_id.to_string().as_str()));
    assert_eq!(history[1].3, "corr-9");
    env.cleanup().await;
}

#[tokio::test]
async fn poison_events_are_dead_lettered_and_the_projector_moves_on_and_redrives() {
    let env = TestEnv::new();
    let (_, pool) = env.database("reads").await;
    migrate(&pool).await.unwrap();
    let (client, js) = env.jetstream().await;
    // An event whose predecessor never comes is retried for twice the ack wait (the
    // predecessor could be out with a dead projector) before it is dead-lettered.
    projector_consumer(&env, &js, Duration::from_secs(1)).await;
    let fast = RetryPolicy {
        max_deliveries: 2,
        first_delay: std::time::Duration::from_millis(20),
    };
    let shutdown = tillstream_runtime::Shutdown::new();
    let projector = Projector::new(pool.clone(), client.clone(), env.namespace.clone(), 1)
        .with_retry_policy(fast);
    let running = tokio::spawn(projector.run(shutdown.clone()));
    let publish = |event: EventEnvelope| {
        let js = js.clone();
        let subject = env
            .namespace
            .event_subject(&event.aggregate_type, &event.aggregate_id);
        async move {
            js.publish(subject, serde_json::to_vec(&event).unwrap().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };

    // A foreign message and an event whose predecessor never came...
    let (order_id, user_id) = (Uuid::now_v7(), Uuid::now_v7());
    js.publish(
        env.namespace.event_subject("order", "garbage"),
        "not json".into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    publish(order_paid(order_id)).await;
    // ...do not stop a healthy event behind them.
    let other = Uuid::now_v7();
    publish(order_placed(other, user_id)).await;
    tillstream_testkit::eventually(
        std::time::Duration::from_secs(30),
        "two dead letters and the healthy order",
        || async {
            let letters = dead_letters::waiting(&pool).await.unwrap();
            let healthy: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE id = $1")
                .bind(other)
                .fetch_one(&pool)
                .await
                .unwrap();
            (letters.len() == 2 && healthy == 1).then_some(())
        },
    )
    .await;
    let letters = dead_letters::waiting(&pool).await.unwrap();
    assert!(
        letters[0].error.contains("not an event envelope"),
        "{}",
        letters[0].error
    );
    assert_eq!(letters[1].sequence, Some(2));
    assert!(
        letters[1].error.contains("sequence 1"),
        "{}",
        letters[1].error
    );
    let dlq = js
        .get_stream(env.namespace.stream("DLQ"))
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(dlq, 2, "dead letters are published on events.dlq.*");

    // The missing event arrives; re-driving then applies the waiting one in order.
    publish(order_placed(order_id, user_id)).await;
    tillstream_testkit::eventually(
        std::time::Duration::from_secs(30),
        "the placed order",
        || async {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
                    .bind(order_id)
                    .fetch_optional(&pool)
                    .await
                    .unwrap();
            status.is_some().then_some(())
        },
    )
    .await;
    let redriver = Projector::new(pool.clone(), client, env.namespace.clone(), 1);
    let report = dead_letters::redrive(&redriver, &pool, None).await.unwrap();
    assert_eq!(
        (report.applied, report.still_failing),
        (1, 1),
        "the payment applies; garbage stays garbage"
    );
    let status: String = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
        .bind(order_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "PAID");
    assert_eq!(dead_letters::waiting(&pool).await.unwrap().len(), 1);

    shutdown.cancel();
    running.await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn an_event_waiting_for_one_a_dead_projector_held_is_applied_once_that_comes_back() {
    let env = TestEnv::new();
    let (_, pool) = env.database("reads").await;
    migrate(&pool).await.unwrap();
    let (client, js) = env.jetstream().await;
    // Long enough that the next projector is consuming before the held event comes back.
    let ack_wait = Duration::from_secs(5);
    let consumer = projector_consumer(&env, &js, ack_wait).await;
    let (order_id, user_id) = (Uuid::now_v7(), Uuid::now_v7());
    publish_all(&env, &js, vec![order_placed(order_id, user_id)]).await;
    // A projector is handed the order's first event and dies before applying it: JetStream
    // hands the event out again once the ack wait has passed.
    let mut handed = consumer.fetch().max_messages(1).messages().await.unwrap();
    let held = handed.next().await.unwrap().unwrap();
    assert_eq!(held.info().unwrap().stream_sequence, 1);
    drop((held, handed));
    publish_all(&env, &js, vec![order_paid(order_id)]).await;

    // The next projector gets the payment first. Two deliveries 20 ms apart would have
    // dead-lettered it long before the placing comes back; it is retried until then.
    let fast = RetryPolicy {
        max_deliveries: 2,
        first_delay: Duration::from_millis(20),
    };
    let shutdown = tillstream_runtime::Shutdown::new();
    let projector =
        Projector::new(pool.clone(), client, env.namespace.clone(), 1).with_retry_policy(fast);
    let running = tokio::spawn(projector.run(shutdown.clone()));
    tillstream_testkit::eventually(Duration::from_secs(30), "the order paid", || async {
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
            .bind(order_id)
            .fetch_optional(&pool)
            .await
            .unwrap();
        (status.as_deref() == Some("PAID")).then_some(())
    })
    .await;
    shutdown.cancel();
    running.await.unwrap();
    assert!(dead_letters::waiting(&pool).await.unwrap().is_empty());
    // It did wait: the placing was delivered twice, the payment more than twice.
    let mut consumer = consumer;
    let deliveries = consumer.info().await.unwrap().delivered.consumer_sequence;
    assert!(deliveries > 4, "{deliveries} deliveries");
    env.cleanup().await;
}

#[tokio::test]
async fn a_backlog_is_applied_in_batches_without_one_bad_event_spoiling_the_rest() {
    let env = TestEnv::new();
    let (_, pool) = env.database("reads").await;
    migrate(&pool).await.unwrap();
    let (client, js) = env.jetstream().await;

    // The backlog is published before the projector starts: 100 orders placed then paid,
    // with an undecodable payment in the middle.
    let user_id = Uuid::now_v7();
    let orders: Vec<Uuid> = (0..100).map(|_| Uuid::now_v7()).collect();
    let mut backlog = Vec::new();
    for (i, order_id) in orders.iter().enumerate() {
        let mut events = vec![order_placed(*order_id, user_id)];
        let payment = if i == 50 {
            json!({"payment_reference": 7})
        } else {
            json!({"payment_reference": "p", "amount_cents": 2500})
        };
        events.push(envelope("order", *order_id, 2, "OrderPaid", payment));
        backlog.extend(events);
    }
    publish_all(&env, &js, backlog).await;

    let fast = RetryPolicy {
        max_deliveries: 2,
        first_delay: std::time::Duration::from_millis(20),
    };
    let shutdown = tillstream_runtime::Shutdown::new();
    let projector =
        Projector::new(pool.clone(), client, env.namespace.clone(), 1).with_retry_policy(fast);
    let running = tokio::spawn(projector.run(shutdown.clone()));
    let paid = tillstream_testkit::eventually(
        std::time::Duration::from_secs(30),
        "99 paid orders",
        || async {
            let paid: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'PAID'")
                .fetch_one(&pool)
                .await
                .unwrap();
            let dead = dead_letters::waiting(&pool).await.unwrap().len();
            (paid == 99 && dead == 1).then_some(paid)
        },
    )
    .await;
    assert_eq!(paid, 99);
    let placed: String = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
        .bind(orders[50])
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(placed, "PLACED", "the bad payment changed nothing");
    let items: i64 = sqlx::query_scalar("SELECT count(*) FROM order_items")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(items, 200, "every order's lines, once");
    shutdown.cancel();
    running.await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn two_projectors_share_one_stream_and_keep_each_aggregates_order() {
    let env = TestEnv::new();
    let (_, pool) = env.database("reads").await;
    migrate(&pool).await.unwrap();
    let (client, js) = env.jetstream().await;

    let shutdown = tillstream_runtime::Shutdown::new();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let projector = Projector::new(pool.clone(), client.clone(), env.namespace.clone(), 1);
            tokio::spawn(projector.run(shutdown.clone()))
        })
        .collect();

    // 40 orders, each placed, paid, shipped and delivered, interleaved on the stream.
    let user_id = Uuid::now_v7();
    let orders: Vec<Uuid> = (0..40).map(|_| Uuid::now_v7()).collect();
    let steps = [
        (
            "OrderPaid",
            json!({"payment_reference": "p", "amount_cents": 2500}),
        ),
        (
            "OrderShipped",
            json!({"carrier": "DHL", "tracking_number": "T"}),
        ),
        ("OrderDelivered", json!({})),
    ];
    let mut backlog = Vec::new();
    for round in 0..4 {
        for order_id in &orders {
            let event = match round {
                0 => order_placed(*order_id, user_id),
                n => envelope(
                    "order",
                    *order_id,
                    n + 1,
                    steps[n as usize - 1].0,
                    steps[n as usize - 1].1.clone(),
                ),
            };
            backlog.push(event);
        }
    }
    publish_all(&env, &js, backlog).await;
    tillstream_testkit::eventually(
        std::time::Duration::from_secs(60),
        "40 delivered orders",
        || async {
            let delivered: i64 =
                sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'DELIVERED'")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            (delivered == 40).then_some(())
        },
    )
    .await;
    let histories: Vec<(Uuid, Vec<i64>)> =
        sqlx::query_as("SELECT order_id, array_agg(sequence ORDER BY sequence) FROM order_history GROUP BY order_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(histories.len(), 40);
    assert!(
        histories.iter().all(|(_, seqs)| seqs == &vec![1, 2, 3, 4]),
        "each order's events once, in order"
    );
    assert!(dead_letters::waiting(&pool).await.unwrap().is_empty());
    shutdown.cancel();
    for worker in workers {
        worker.await.unwrap();
    }
    env.cleanup().await;
}

/// The sum of every aggregate's checkpoint: how many events a database has applied.
async fn applied_events(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar::<_, Option<i64>>("SELECT sum(sequence)::bigint FROM projection_checkpoints")
        .fetch_one(pool)
        .await
        .unwrap()
        .unwrap_or(0)
}

async fn checkpoints(pool: &sqlx::PgPool) -> Vec<(String, String, i64)> {
    sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, sequence FROM projection_checkpoints ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_mixed_backlog_applied_a_batch_at_a_time_equals_event_by_event() {
    let env = TestEnv::new();
    let (_, live) = env.database("live").await;
    migrate(&live).await.unwrap();
    let (_, reference) = env.database("reference").await;
    migrate(&reference).await.unwrap();
    let (client, js) = env.jetstream().await;

    // Customers registering, changing profile and role, and their orders through every
    // state, interleaved; one payment that does not decode; and some events delivered twice
    // (a republish without the relay's message id, so the stream keeps both copies).
    let mut events = tillstream_testkit::workload::Workload {
        users: 40,
        orders_per_user: 3,
        seed: 7,
    }
    .events();
    let poison = events
        .iter()
        .position(|e| e.event_type == "OrderPaid")
        .unwrap();
    events[poison].payload = json!({"payment_reference": 7});
    let poisoned_order = events[poison].aggregate_id.clone();
    let repeats: Vec<EventEnvelope> = events.iter().step_by(17).cloned().collect();
    let mut log = events.clone();
    for (i, repeat) in repeats.into_iter().enumerate() {
        log.insert((i * 31 + 5).min(log.len()), repeat);
    }
    publish_all(&env, &js, log.clone()).await;

    // The reference: the same log, one event and one transaction at a time.
    let one_by_one = Projector::new(reference.clone(), client.clone(), env.namespace.clone(), 1);
    let mut failed = 0;
    for event in &log {
        match one_by_one.apply(event).await {
            Ok(ApplyOutcome::Gap { .. }) | Err(_) => failed += 1,
            Ok(_) => {}
        }
    }
    let poisoned_later = log
        .iter()
        .filter(|e| e.aggregate_id == poisoned_order && e.sequence > events[poison].sequence)
        .count();
    assert_eq!(
        failed,
        1 + poisoned_later,
        "only the bad payment and what follows it in its own order fail"
    );

    // The live projector takes the backlog in large batches.
    let fast = RetryPolicy {
        max_deliveries: 2,
        first_delay: std::time::Duration::from_millis(20),
    };
    let shutdown = tillstream_runtime::Shutdown::new();
    let projector =
        Projector::new(live.clone(), client, env.namespace.clone(), 1).with_retry_policy(fast);
    let running = tokio::spawn(projector.run(shutdown.clone()));
    let expected = applied_events(&reference).await;
    tillstream_testkit::eventually(
        std::time::Duration::from_secs(60),
        "the backlog applied and its failures dead-lettered",
        || async {
            let dead = dead_letters::waiting(&live).await.unwrap().len();
            (applied_events(&live).await == expected && dead == failed).then_some(())
        },
    )
    .await;
    shutdown.cancel();
    running.await.unwrap();

    assert_eq!(checkpoints(&live).await, checkpoints(&reference).await);
    let (live_sum, reference_sum) = (
        tillstream_projections::checksum::checksum(&live)
            .await
            .unwrap(),
        tillstream_projections::checksum::checksum(&reference)
            .await
            .unwrap(),
    );
    assert_eq!(
        live_sum.differences(&reference_sum),
        Vec::<String>::new(),
        "batches give what single events give"
    );
    let dead: Vec<i64> = dead_letters::waiting(&live)
        .await
        .unwrap()
        .iter()
        .filter_map(|d| d.sequence)
        .collect();
    assert_eq!(dead.len(), failed, "{dead:?}");
    env.cleanup().await;
}

#[tokio::test]
async fn events_applied_before_a_crash_are_skipped_when_delivered_again() {
    let env = TestEnv::new();
    let (_, pool) = env.database("reads").await;
    migrate(&pool).await.unwrap();
    let (client, js) = env.jetstream().await;
    let events = tillstream_testkit::workload::Workload {
        users: 10,
        orders_per_user: 2,
        seed: 3,
    }
    .events();
    // The state a crash between commit and ack leaves: the first half is in the read
    // models, and JetStream still holds all of it for delivery.
    let projector = Projector::new(pool.clone(), client.clone(), env.namespace.clone(), 1);
    let half = events.len() / 2;
    for event in &events[..half] {
        assert_eq!(projector.apply(event).await.unwrap(), ApplyOutcome::Applied);
    }
    let before = tillstream_projections::checksum::checksum(&pool)
        .await
        .unwrap();
    tillstream_testkit::workload::publish(&js, &env.namespace, &events, 64)
        .await
        .unwrap();

    let checker = Projector::new(pool.clone(), client.clone(), env.namespace.clone(), 1);
    let shutdown = tillstream_runtime::Shutdown::new();
    let running = tokio::spawn(projector.run(shutdown.clone()));
    let total: i64 = {
        let mut last = std::collections::HashMap::new();
        for e in &events {
            last.insert(
                (e.aggregate_type.clone(), e.aggregate_id.clone()),
                e.sequence as i64,
            );
        }
        last.values().sum()
    };
    tillstream_testkit::eventually(
        std::time::Duration::from_secs(30),
        "every event applied",
        || async { (applied_events(&pool).await == total).then_some(()) },
    )
    .await;
    shutdown.cancel();
    running.await.unwrap();

    // Apply the first half again by hand: all duplicates, and the tables are what one
    // application of everything gives.
    for event in &events[..half] {
        assert_eq!(checker.apply(event).await.unwrap(), ApplyOutcome::Duplicate);
    }
    let (_, reference) = env.database("reference").await;
    migrate(&reference).await.unwrap();
    let one_by_one = Projector::new(reference.clone(), client, env.namespace.clone(), 1);
    for event in &events {
        assert_eq!(
            one_by_one.apply(event).await.unwrap(),
            ApplyOutcome::Applied
        );
    }
    let after = tillstream_projections::checksum::checksum(&pool)
        .await
        .unwrap();
    assert_ne!(before, after, "the second half was applied");
    assert_eq!(
        after.differences(
            &tillstream_projections::checksum::checksum(&reference)
                .await
                .unwrap()
        ),
        Vec::<String>::new(),
        "nothing of the first half was applied twice"
    );
    assert!(dead_letters::waiting(&pool).await.unwrap().is_empty());
    env.cleanup().await;
}

/// A projector on a fresh read model, and a watch listening to it (awaited), until the
/// returned shutdown.
async fn listened_projector(
    env: &TestEnv,
) -> (
    Projector,
    tillstream_projections::queries::Reads,
    tillstream_projections::ReadModelWatch,
    tillstream_runtime::Shutdown,
) {
    let (_, pool) = env.database("reads").await;
    migrate(&pool).await.unwrap();
    let client = async_nats::connect(nats_url()).await.unwrap();
    let projector = Projector::new(pool.clone(), client, env.namespace.clone(), 1);
    let shutdown = tillstream_runtime::Shutdown::new();
    let reads = tillstream_projections::queries::Reads::new(pool);
    let watch = tillstream_projections::ReadModelWatch::default();
    watch.spawn_listener(&reads, shutdown.clone());
    tillstream_testkit::eventually(std::time::Duration::from_secs(10), "listening", || async {
        watch.is_listening().then_some(())
    })
    .await;
    (projector, reads, watch, shutdown)
}

#[tokio::test]
async fn a_watch_wakes_when_the_projector_commits_its_aggregate() {
    let env = TestEnv::new();
    let (projector, _, watch, shutdown) = listened_projector(&env).await;

    let (order_id, user_id) = (Uuid::now_v7(), Uuid::now_v7());
    let watched = watch.watch("order", &order_id.to_string());
    let changed = watched.changed();
    assert_eq!(
        projector
            .apply(&order_placed(order_id, user_id))
            .await
            .unwrap(),
        ApplyOutcome::Applied
    );
    // No poll anywhere: only the notification can complete this.
    tokio::time::timeout(std::time::Duration::from_secs(10), changed)
        .await
        .expect("the commit's notification wakes the watch");
    shutdown.cancel();
    env.cleanup().await;
}

#[tokio::test]
async fn a_cached_order_is_dropped_when_the_projector_applies_a_newer_version() {
    let env = TestEnv::new();
    let (projector, reads, watch, shutdown) = listened_projector(&env).await;
    let cache = watch.orders();
    assert!(
        cache.is_serving(),
        "the cache serves once the watch listens"
    );

    let (order_id, user_id) = (Uuid::now_v7(), Uuid::now_v7());
    projector
        .apply(&order_placed(order_id, user_id))
        .await
        .unwrap();
    let ticket = cache.ticket();
    let placed = reads.order(order_id).await.unwrap().expect("placed");
    cache.put(ticket, order_id, 1, std::sync::Arc::new(placed.clone()));
    assert_eq!(cache.get(&order_id, None).unwrap().order.status, "PLACED");

    let paid = envelope(
        "order",
        order_id,
        2,
        "OrderPaid",
        json!({"payment_reference": "p", "amount_cents": 2500}),
    );
    assert_eq!(projector.apply(&paid).await.unwrap(), ApplyOutcome::Applied);
    tillstream_testkit::eventually(
        std::time::Duration::from_secs(10),
        "the notification drops version 1",
        || async { cache.get(&order_id, None).is_none().then_some(()) },
    )
    .await;
    // A read that fetched version 1 before the commit cannot put it back.
    cache.put(ticket, order_id, 1, std::sync::Arc::new(placed.clone()));
    cache.put(cache.ticket(), order_id, 1, std::sync::Arc::new(placed));
    assert!(cache.get(&order_id, None).is_none());
    let ticket = cache.ticket();
    let now = reads.order(order_id).await.unwrap().expect("paid");
    cache.put(
        ticket,
        order_id,
        now.order.version,
        std::sync::Arc::new(now),
    );
    assert_eq!(cache.get(&order_id, Some(2)).unwrap().order.status, "PAID");
    shutdown.cancel();
    env.cleanup().await;
}

#[tokio::test]
async fn an_event_the_database_refuses_fails_alone_in_a_batch_of_many_aggregates() {
    let env = TestEnv::new();
    let (_, pool) = env.database("reads").await;
    migrate(&pool).await.unwrap();
    let (client, js) = env.jetstream().await;

    // 60 orders of 60 customers in one backlog; one order's note holds a NUL character,
    // which decodes but which `jsonb` refuses, so the batch's multi-row history insert fails
    // and the batch must be applied again event by event.
    let orders: Vec<(Uuid, Uuid)> = (0..60).map(|_| (Uuid::now_v7(), Uuid::now_v7())).collect();
    let mut backlog = Vec::new();
    for (i, (order_id, user_id)) in orders.iter().enumerate() {
        let mut events = vec![order_placed(*order_id, *user_id)];
        if i == 30 {
            events[0].payload["note"] = json!("a\u{0}b");
        }
        events.push(envelope(
            "order",
            *order_id,
            2,
            "OrderPaid",
            json!({"payment_reference": "p", "amount_cents": 2500}),
        ));
        backlog.extend(events);
    }
    publish_all(&env, &js, backlog).await;

    let shutdown = tillstream_runtime::Shutdown::new();
    let projector = Projector::new(pool.clone(), client, env.namespace.clone(), 1)
        .with_retry_policy(RetryPolicy {
            max_deliveries: 2,
            first_delay: std::time::Duration::from_millis(20),
        });
    let running = tokio::spawn(projector.run(shutdown.clone()));
    tillstream_testkit::eventually(
        std::time::Duration::from_secs(30),
        "59 paid orders",
        || async {
            let paid: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'PAID'")
                .fetch_one(&pool)
                .await
                .unwrap();
            (paid == 59).then_some(())
        },
    )
    .await;
    let refused = orders[30].0.to_string();
    let refused_checkpoint: Option<i64> =
        sqlx::query_scalar("SELECT sequence FROM projection_checkpoints WHERE aggregate_id = $1")
            .bind(&refused)
            .fetch_optional(&pool)
            .await
            .unwrap();
    assert_eq!(
        refused_checkpoint, None,
        "the refused order changed nothing"
    );
    let (items, history, placed): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM order_items), (SELECT count(*) FROM order_history), \
             (SELECT coalesce(sum(orders_placed), 0)::bigint FROM user_order_stats)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (items, history, placed),
        (118, 118, 59),
        "every other order once, with both its events"
    );
    shutdown.cancel();
    running.await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn a_projector_stopped_in_a_backlog_applies_what_it_was_handed_before_letting_go() {
    let env = TestEnv::new();
    let (_, pool) = env.database("reads").await;
    migrate(&pool).await.unwrap();
    let (client, js) = env.jetstream().await;
    // A delivery let go of unacknowledged would not come back within the test.
    let mut consumer = projector_consumer(&env, &js, Duration::from_secs(3600)).await;
    let user_id = Uuid::now_v7();
    let backlog: Vec<_> = (0..2000)
        .map(|_| order_placed(Uuid::now_v7(), user_id))
        .collect();
    publish_all(&env, &js, backlog).await;

    // Stopped once it has applied something, with more of the backlog delivered to it.
    let shutdown = tillstream_runtime::Shutdown::new();
    let projector = Projector::new(pool.clone(), client.clone(), env.namespace.clone(), 1);
    let running = tokio::spawn(projector.run(shutdown.clone()));
    tillstream_testkit::eventually(Duration::from_secs(30), "a first batch", || async {
        (applied_events(&pool).await > 0).then_some(())
    })
    .await;
    shutdown.cancel();
    running.await.unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(
        info.num_ack_pending,
        0,
        "deliveries left unacknowledged: {} delivered, {} applied",
        info.delivered.stream_sequence,
        applied_events(&pool).await
    );

    // The next projector takes up the rest at once, not after the ack wait.
    let shutdown = tillstream_runtime::Shutdown::new();
    let projector = Projector::new(pool.clone(), client, env.namespace.clone(), 1);
    let running = tokio::spawn(projector.run(shutdown.clone()));
    tillstream_testkit::eventually(Duration::from_secs(60), "the whole backlog", || async {
        (applied_events(&pool).await == 2000).then_some(())
    })
    .await;
    shutdown.cancel();
    running.await.unwrap();
    env.cleanup().await;
}
