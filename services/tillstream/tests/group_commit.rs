//! Commits that are ready at the same time share one statement (the event store's group
//! commit), and one commit that cannot be written does not take the others of its group
//! down with it.
//!
//! Its own test binary: it reads the process-wide metrics recorder, which no other test may
//! move meanwhile.

mod support;

use std::collections::BTreeSet;

use support::{DEADLINE, TestPlatform, authorized, place};
use tillstream_proto::order::v1 as order_pb;
use tillstream_runtime::PgPool;
use tillstream_testkit::eventually;

/// Commits handed to the order service's committer and not yet answered.
fn pending_order_commits() -> f64 {
    let Some(metrics) = tillstream_runtime::ops::prometheus() else {
        return 0.0;
    };
    metrics
        .render()
        .lines()
        .find_map(|line| line.strip_prefix("tillstream_commits_pending{aggregate=\"order\"} "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Places `keys.len()` orders at once (one per idempotency key) while the events table is
/// locked, so that every one of them has reached the committer before any statement can
/// finish; then unlocks, and returns the answers (order ids) in the keys' order.
async fn place_while_locked(
    platform: &TestPlatform,
    events: &PgPool,
    user_id: &str,
    token: &str,
    keys: &[String],
) -> Vec<String> {
    let before = pending_order_commits();
    let mut lock = events.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let orders = platform.orders().await;
    let placing: Vec<_> = keys
        .iter()
        .map(|key| {
            let mut orders = orders.clone();
            let request = authorized(
                order_pb::PlaceOrderRequest {
                    idempotency_key: key.clone(),
                    ..place(user_id)
                },
                token,
            );
            tokio::spawn(async move { orders.place_order(request).await.map(|r| r.into_inner()) })
        })
        .collect();
    let all = before + keys.len() as f64;
    eventually(DEADLINE, "every order waiting in the committer", || async {
        (pending_order_commits() >= all).then_some(())
    })
    .await;
    lock.commit().await.unwrap();
    let mut answers = Vec::new();
    for placed in placing {
        answers.push(placed.await.unwrap().expect("the order is placed").id);
    }
    answers
}

#[tokio::test]
async fn commits_ready_together_share_a_statement_and_fail_alone() {
    let platform = TestPlatform::start().await;
    let (user_id, token) = platform.customer("grouped").await;
    let events = platform.env.connect("orders");

    // Twenty orders while no statement can finish: at most two groups were under way when
    // the lock came, and every later one waits for them; then they go together.
    let keys: Vec<String> = (0..20).map(|i| format!("together-{i}")).collect();
    let placed = place_while_locked(&platform, &events, &user_id, &token, &keys).await;
    assert_eq!(placed.iter().collect::<BTreeSet<_>>().len(), 20);
    let (rows, transactions): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT txid) FROM events WHERE aggregate_id = ANY($1)",
    )
    .bind(&placed)
    .fetch_one(&events)
    .await
    .unwrap();
    assert_eq!(rows, 20, "one event per order");
    assert!(
        transactions <= 3,
        "twenty commits ready together took {transactions} transactions"
    );

    // Ten orders and three retries of one more under a single key: the retries collide,
    // which rolls back whatever group they are in; each commit of it is then tried alone.
    let mut keys: Vec<String> = (0..10).map(|i| format!("alone-{i}")).collect();
    keys.extend(std::iter::repeat_n("retried".to_owned(), 3));
    let answers = place_while_locked(&platform, &events, &user_id, &token, &keys).await;
    let retried: BTreeSet<&String> = answers[10..].iter().collect();
    assert_eq!(retried.len(), 1, "one answer for one key: {answers:?}");
    assert_eq!(
        answers.iter().collect::<BTreeSet<_>>().len(),
        11,
        "ten orders and the retried one"
    );
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&events)
        .await
        .unwrap();
    assert_eq!(total, 20 + 11, "no order written twice or lost");
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = ANY($1)")
            .bind(&answers)
            .fetch_one(&events)
            .await
            .unwrap();
    assert_eq!(recorded, 11, "every answer is an order that was written");
    platform.stop().await;
}
