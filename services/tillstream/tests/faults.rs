//! Fault tests against real processes: `kill -9` at the dangerous instants, then proof that
//! nothing was lost or repeated.
//!
//! - the relay dies between JetStream's acks and its checkpoint commit;
//! - the projector dies between its read-model commit and its JetStream acks;
//! - NATS (a private `nats-server`) dies while the relays are publishing under a stream
//!   of commands, and comes back on the same store.
//!
//! Crashes at an exact point come from failpoints (`TILLSTREAM_FAILPOINTS`, see
//! `tillstream_runtime::failpoint`): the process sends itself SIGKILL there. Afterwards
//! every test checks that JetStream holds each committed event exactly once (message
//! count, distinct `Nats-Msg-Id`, both equal to the event-store rows) and that the live
//! read models equal a rebuild of the log from scratch by a fresh projector into a fresh
//! database (a checksum of every read-model table). Each prints one summary line.
//! docs/reliability.md says what this proves and how to run it.

mod support;

use std::io::Write;
use std::time::Duration;

use async_nats::jetstream;
use support::consistency::{LogAudit, audit_log, await_log, await_projected, compare_with_rebuild};
use support::split::{Part, SplitPlatform};
use support::{Clients, DEADLINE, authorized, place};
use tillstream_projections::checksum::checksum;
use tillstream_proto::order::v1 as order_pb;
use tillstream_testkit::nats_server::PrivateNats;
use tillstream_testkit::process::killed_by_sigkill;
use tillstream_testkit::{TestEnv, eventually, nats_url};

/// What a fault test did, printed as one line on stderr (not captured by the test harness).
fn summary(test: &str, audit: &LogAudit, kills: u32, extra: &str, mismatches: usize) {
    let _ = writeln!(
        std::io::stderr(),
        "faults: {test}: events={} messages={} kills={kills} {extra} mismatches={mismatches}",
        audit.stored,
        audit.messages,
    );
}

/// Registers `n` customers; (id, token) each.
async fn customers(clients: &Clients, tag: &str, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(clients.customer(&format!("{tag}{i}")).await);
    }
    out
}

/// Places `orders` two-item orders (2550 cents each) for the customer and pays every
/// second one: the read model's order counts and money spent are what a double
/// application would show.
async fn place_and_pay(clients: &Clients, (user_id, token): &(String, String), orders: usize) {
    let mut service = clients.orders().await;
    for i in 0..orders {
        let id = service
            .place_order(authorized(place(user_id), token))
            .await
            .expect("order placed")
            .into_inner()
            .id;
        if i % 2 == 0 {
            service
                .pay_order(authorized(
                    order_pb::PayOrderRequest {
                        order_id: id,
                        payment_reference: format!("psp-{i}"),
                        amount_cents: 2550,
                        ..Default::default()
                    },
                    token,
                ))
                .await
                .expect("order paid");
        }
    }
}

async fn jetstream_at(url: &str) -> (async_nats::Client, jetstream::Context) {
    let client = async_nats::connect(url).await.expect("NATS answers");
    (client.clone(), jetstream::new(client))
}

/// Checks the log and the read models after the faults, prints the summary, and fails
/// on any mismatch.
async fn verify(test: &str, platform: &SplitPlatform, kills: u32, extra: &str) {
    let (client, js) = jetstream_at(&platform.nats_url).await;
    let audit = await_log(&js, &platform.env).await;
    await_projected(&platform.env, audit.stored).await;
    let (differences, live) = compare_with_rebuild(&platform.env, client, &audit).await;
    summary(
        test,
        &audit,
        kills,
        extra,
        audit.mismatches() + differences.len(),
    );
    assert!(
        audit.exactly_once(),
        "JetStream holds every event exactly once: {audit:?}"
    );
    assert!(
        differences.is_empty(),
        "live read models differ from a rebuild in {differences:?}; live: {live}"
    );
}

#[tokio::test]
async fn relay_killed_between_publish_and_checkpoint_republishes_into_dedupe() {
    // The order relay is not running yet: the orders below wait in the event store, so its
    // first batch holds all of them.
    let mut platform = SplitPlatform::start(
        nats_url(),
        &[Part::User, Part::Order, Part::UserRelay, Part::Projector],
    )
    .await;
    let clients = platform.clients();
    let buyers = customers(&clients, "relaykill", 2).await;
    for buyer in &buyers {
        place_and_pay(&clients, buyer, 4).await;
    }
    let orders_db = platform.env.connect("orders");
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&orders_db)
        .await
        .expect("event store answers");

    let relay = platform.part(Part::OrderRelay);
    relay.start_with(&[("TILLSTREAM_FAILPOINTS", "relay.after_publish")]);
    let status = relay.wait_exit(DEADLINE).await;
    assert!(
        killed_by_sigkill(&status),
        "the relay died at its failpoint: {status}"
    );
    // The dangerous state: every event of the batch is in JetStream, no checkpoint says so.
    let checkpoints: i64 =
        sqlx::query_scalar("SELECT count(*) FROM relay_checkpoints WHERE relay = 'jetstream'")
            .fetch_one(&orders_db)
            .await
            .expect("event store answers");
    assert_eq!(checkpoints, 0, "the batch was never checkpointed");
    let (_, js) = jetstream_at(&platform.nats_url).await;
    let published = audit_log(&js, &platform.env)
        .await
        .envelopes
        .iter()
        .filter(|e| e.aggregate_type == "order")
        .count() as u64;
    // Normally the whole backlog is one batch; a transaction elsewhere in the cluster that
    // holds back the relay's horizon can make it a part.
    assert!(
        published >= 1 && published <= waiting as u64,
        "the batch ({published} of {waiting} waiting) reached JetStream before the kill"
    );

    // More commands while the relay is down; then it comes back and republishes.
    place_and_pay(&clients, &buyers[0], 2).await;
    platform.start_part(Part::OrderRelay, &[]).await;
    let republished = platform
        .await_metric(
            Part::OrderRelay,
            "tillstream_relay_republished_total",
            published as f64,
        )
        .await;
    assert_eq!(
        republished, published as f64,
        "exactly the unacknowledged batch was sent again, and JetStream dropped it"
    );
    verify(
        "relay killed between publish and checkpoint",
        &platform,
        1,
        &format!("republished={republished}"),
    )
    .await;
    platform.stop().await;
}

#[tokio::test]
async fn projector_killed_between_apply_and_ack_applies_each_event_once() {
    let mut platform = SplitPlatform::start(
        nats_url(),
        &[
            Part::User,
            Part::Order,
            Part::UserRelay,
            Part::OrderRelay,
            Part::Projector,
        ],
    )
    .await;
    let (_, js) = jetstream_at(&platform.nats_url).await;
    let durable = platform.env.namespace.consumer("projector-main");
    shorten_ack_wait(&js, &platform.env, &durable).await;
    let clients = platform.clients();
    let buyers = customers(&clients, "projkill", 2).await;
    place_and_pay(&clients, &buyers[0], 2).await;

    // While the projector is down a backlog forms; it comes back with the failpoint armed,
    // commits its first batch and dies before acknowledging it.
    platform.part(Part::Projector).kill();
    for buyer in &buyers {
        place_and_pay(&clients, buyer, 4).await;
    }
    let backlog = await_log(&js, &platform.env).await;
    let projector = platform.part(Part::Projector);
    projector.start_with(&[("TILLSTREAM_FAILPOINTS", "projector.before_ack")]);
    let status = projector.wait_exit(DEADLINE).await;
    assert!(
        killed_by_sigkill(&status),
        "the projector died at its failpoint: {status}"
    );
    let unacked = consumer_info(&js, &platform.env, &durable)
        .await
        .num_ack_pending;
    assert!(
        unacked > 0,
        "events applied but not acknowledged are pending"
    );

    // Back without the failpoint: JetStream redelivers what was applied, the checkpoints
    // turn it away.
    platform.start_part(Part::Projector, &[]).await;
    let duplicates = platform
        .await_metric(
            Part::Projector,
            "tillstream_projection_duplicates_total",
            1.0,
        )
        .await;
    eventually(DEADLINE, "every event acknowledged", || async {
        let info = consumer_info(&js, &platform.env, &durable).await;
        (info.num_ack_pending == 0 && info.num_pending == 0).then_some(())
    })
    .await;
    await_projected(&platform.env, backlog.stored).await;
    let reads = platform.env.connect("reads");
    // The first customer placed 2 + 4 orders and paid 1 + 2; the second 4 and 2.
    for ((user_id, _), (orders, paid)) in buyers.iter().zip([(6i64, 3i64), (4, 2)]) {
        let counts: (i64, i64) =
            sqlx::query_as("SELECT order_count, total_spent_cents FROM users WHERE id = $1::uuid")
                .bind(user_id)
                .fetch_one(&reads)
                .await
                .expect("read model answers");
        assert_eq!(counts, (orders, paid * 2550), "counted once each");
    }
    verify(
        "projector killed between apply and ack",
        &platform,
        1,
        &format!("unacked={unacked} duplicates_skipped={duplicates}"),
    )
    .await;

    // The comparison would have seen a doubled effect: one extra order counted is a
    // difference in `users`.
    sqlx::query("UPDATE users SET order_count = order_count + 1 WHERE id = $1::uuid")
        .bind(&buyers[0].0)
        .execute(&reads)
        .await
        .expect("read model answers");
    let live = checksum(&reads).await.expect("live checksum");
    let rebuilt = checksum(&platform.env.connect("rebuild"))
        .await
        .expect("rebuild checksum");
    let differences = live.differences(&rebuilt);
    assert_eq!(differences.len(), 1, "{differences:?}");
    assert!(differences[0].starts_with("users "), "{differences:?}");
    platform.stop().await;
}

async fn consumer_info(
    js: &jetstream::Context,
    env: &TestEnv,
    durable: &str,
) -> jetstream::consumer::Info {
    js.get_stream(env.namespace.events_stream())
        .await
        .expect("EVENTS stream")
        .consumer_info(durable)
        .await
        .expect("consumer info")
}

/// Awaits the projector's durable consumer and makes JetStream redeliver unacknowledged
/// events after 1 s instead of 30, so the redelivery after a crash is seen in seconds. The
/// path under test (redelivery, skip, ack) is the same.
async fn shorten_ack_wait(js: &jetstream::Context, env: &TestEnv, durable: &str) {
    let stream = js
        .get_stream(env.namespace.events_stream())
        .await
        .expect("EVENTS stream");
    let mut config = eventually(DEADLINE, "the projector's consumer", || async {
        stream.consumer_info(durable).await.ok().map(|i| i.config)
    })
    .await;
    config.ack_wait = Duration::from_secs(1);
    stream
        .update_consumer(config)
        .await
        .expect("ack wait updated");
}

#[tokio::test]
async fn nats_killed_while_relays_publish_loses_and_repeats_nothing() {
    let env = TestEnv::new();
    let mut nats = PrivateNats::start(&env.data_dir.join("nats")).await;
    let platform = SplitPlatform::start_in(
        env,
        nats.url(),
        &[
            Part::User,
            Part::Order,
            Part::UserRelay,
            Part::OrderRelay,
            Part::Projector,
        ],
    )
    .await;
    let clients = platform.clients();
    let buyers = customers(&clients, "natskill", 3).await;

    // A stream of commands from three customers at once, while NATS is killed twice.
    let load: Vec<_> = buyers
        .iter()
        .cloned()
        .map(|buyer| {
            let clients = clients.clone();
            tokio::spawn(async move { place_and_pay(&clients, &buyer, 8).await })
        })
        .collect();
    let (_, js) = jetstream_at(&nats.url()).await;
    let before = message_count(&js, &platform.env).await;
    let mut kills = 0;
    let mut under_load = 0;
    for step in [6, 20] {
        eventually(DEADLINE, "the relays publishing", || async {
            (message_count(&js, &platform.env).await >= before + step).then_some(())
        })
        .await;
        if load.iter().any(|task| !task.is_finished()) {
            under_load += 1;
        }
        nats.kill();
        kills += 1;
        nats.restart().await;
    }
    assert!(
        under_load >= 1,
        "NATS died at least once while commands flowed"
    );
    for task in load {
        task.await.expect("commands succeed while NATS is down");
    }
    let relay_errors = platform
        .metric(Part::UserRelay, "tillstream_relay_errors_total")
        .await
        + platform
            .metric(Part::OrderRelay, "tillstream_relay_errors_total")
            .await;
    verify(
        "NATS killed while relays publish",
        &platform,
        kills,
        &format!("kills_under_load={under_load} relay_errors={relay_errors}"),
    )
    .await;
    platform.stop().await;
}

/// Messages in the EVENTS stream (0 while NATS is coming back).
async fn message_count(js: &jetstream::Context, env: &TestEnv) -> u64 {
    match js.get_stream(env.namespace.events_stream()).await {
        Ok(mut stream) => stream.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Places orders in a loop until `stop`, for one customer: the acknowledged order ids, and
/// how many attempts failed with a status a client retries (the service was restarting).
async fn steady_orders(
    clients: Clients,
    (user_id, token): (String, String),
    stop: tokio_util::sync::CancellationToken,
) -> (Vec<String>, u32) {
    let mut service = clients.orders().await;
    let (mut acked, mut retryable) = (Vec::new(), 0);
    while !stop.is_cancelled() {
        match service
            .place_order(authorized(place(&user_id), &token))
            .await
        {
            Ok(reply) => acked.push(reply.into_inner().id),
            Err(status) => {
                assert!(
                    matches!(
                        status.code(),
                        tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
                    ),
                    "only a restarting service's statuses, got {status:?}"
                );
                retryable += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    (acked, retryable)
}

#[tokio::test]
async fn sigterm_under_load_drains_and_loses_nothing() {
    let mut platform = SplitPlatform::start(nats_url(), &Part::ALL).await;
    let clients = platform.clients();
    let buyers = customers(&clients, "drain", 3).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let load: Vec<_> = buyers
        .into_iter()
        .map(|buyer| tokio::spawn(steady_orders(clients.clone(), buyer, stop.clone())))
        .collect();
    let orders_db = platform.env.connect("orders");
    let placed = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE event_type = 'OrderPlaced'")
            .fetch_one(&orders_db)
            .await
            .expect("event store answers")
    };
    let mut terminations = 0;
    for part in [
        Part::Order,
        Part::OrderRelay,
        Part::Projector,
        Part::Gateway,
        Part::User,
    ] {
        let before = placed().await;
        eventually(
            DEADLINE,
            "orders flowing before the next SIGTERM",
            || async { (placed().await >= before + 5).then_some(()) },
        )
        .await;
        let process = platform.part(part);
        process.terminate();
        let status = process.wait_exit(DEADLINE).await;
        assert!(
            status.success(),
            "{part:?} stops cleanly on SIGTERM, got {status}; its log ends:\n{}",
            process.log_tail(30)
        );
        terminations += 1;
        platform.start_part(part, &[]).await;
    }
    stop.cancel();
    let (mut acked, mut retryable) = (Vec::new(), 0);
    for task in load {
        let (ids, failed) = task.await.expect("load task");
        acked.extend(ids);
        retryable += failed;
    }
    let stored: std::collections::BTreeSet<String> =
        sqlx::query_scalar("SELECT aggregate_id FROM events WHERE event_type = 'OrderPlaced'")
            .fetch_all(&orders_db)
            .await
            .expect("event store answers")
            .into_iter()
            .collect();
    let lost = acked.iter().filter(|id| !stored.contains(*id)).count();
    assert_eq!(lost, 0, "every acknowledged order is in the store");
    verify(
        "SIGTERM under load",
        &platform,
        0,
        &format!(
            "terminations={terminations} acked={} retryable_failures={retryable} lost={lost}",
            acked.len()
        ),
    )
    .await;
    platform.stop().await;
}
