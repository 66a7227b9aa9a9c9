//! Commits that are ready at the same time share one statement (the event store's group
//! commit), and one commit that cannot be written does not take the others of its group
//! down with it.
//!
//! Its own test binary: it reads the process-wide metrics recorder, which no other test may
//! move meanwhile.

mod support;

use std::collections::BTreeSet;

use support::{DEADLINE, TestPlatform, authorized, local_metric, place};
use tillstream_proto::order::v1 as order_pb;
use tillstream_runtime::PgPool;
use tillstream_testkit::eventually;

/// Commits handed to the order service's committer and not yet answered.
const PENDING: &str = "tillstream_commits_pending{aggregate=\"order\"}";
/// Statements the order service's committer has started.
const STATEMENTS: &str = "tillstream_commit_group_size_count{aggregate=\"order\"}";

/// Places orders (one per idempotency key) while the events table is locked, so that no
/// statement can finish, phase by phase: each phase's orders are all waiting in the
/// committer, and as many statements as can run (two) have started, before the next phase
/// is placed. Then unlocks, and returns the answers (order ids) in the keys' order.
async fn place_while_locked(
    platform: &TestPlatform,
    events: &PgPool,
    user_id: &str,
    token: &str,
    phases: &[&[String]],
) -> Vec<String> {
    let (pending, statements) = (local_metric(PENDING), local_metric(STATEMENTS));
    let mut lock = events.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let orders = platform.orders().await;
    let mut placing = Vec::new();
    for (phase, keys) in phases.iter().enumerate() {
        for key in keys.iter() {
            let mut orders = orders.clone();
            let request = authorized(
                order_pb::PlaceOrderRequest {
                    idempotency_key: key.clone(),
                    ..place(user_id)
                },
                token,
            );
            placing.push(tokio::spawn(async move {
                orders.place_order(request).await.map(|r| r.into_inner())
            }));
        }
        let (waiting, started) = (
            pending + placing.len() as f64,
            statements + (phase + 1).min(2) as f64,
        );
        eventually(
            DEADLINE,
            "the phase's orders waiting in the committer",
            || async {
                (local_metric(PENDING) >= waiting && local_metric(STATEMENTS) >= started)
                    .then_some(())
            },
        )
        .await;
    }
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
    let placed = place_while_locked(&platform, &events, &user_id, &token, &[&keys]).await;
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

    // Two orders take both statements, one at a time; then ten orders and three retries of
    // one more under a single key wait together, and go in one group once the table is
    // unlocked. The copies of the key collide within it, which rolls the group back; each
    // of its commits is then tried alone.
    let split_before = local_metric("tillstream_commit_groups_split_total");
    let (first, second) = (["first".to_owned()], ["second".to_owned()]);
    let mut keys: Vec<String> = (0..10).map(|i| format!("alone-{i}")).collect();
    keys.extend(std::iter::repeat_n("retried".to_owned(), 3));
    let answers = place_while_locked(
        &platform,
        &events,
        &user_id,
        &token,
        &[&first, &second, &keys],
    )
    .await;
    let retried: BTreeSet<&String> = answers[12..].iter().collect();
    assert_eq!(retried.len(), 1, "one answer for one key: {answers:?}");
    assert_eq!(
        answers.iter().collect::<BTreeSet<_>>().len(),
        13,
        "two orders, ten more and the retried one"
    );
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&events)
        .await
        .unwrap();
    assert_eq!(total, 20 + 13, "no order written twice or lost");
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = ANY($1)")
            .bind(&answers)
            .fetch_one(&events)
            .await
            .unwrap();
    assert_eq!(recorded, 13, "every answer is an order that was written");
    assert!(
        local_metric("tillstream_commit_groups_split_total") >= split_before + 1.0,
        "the group holding the key three times was not split"
    );
    platform.stop().await;
}
