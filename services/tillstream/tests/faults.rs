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
use tillstream_testkit::nats_server::{NatsCluster, PrivateNats};
use tillstream_testkit::postgres_server::PrivatePostgres;
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

/// Checks the log and the read models after the faults, prints the summary (with
/// `known_mismatches` the test found itself added in), and fails on any mismatch.
async fn verify(
    test: &str,
    platform: &SplitPlatform,
    kills: u32,
    extra: &str,
    known_mismatches: usize,
) {
    let (client, js) = jetstream_at(&platform.nats_url).await;
    let audit = await_log(&js, &platform.env).await;
    await_projected(&platform.env, audit.stored).await;
    let (differences, live) = compare_with_rebuild(&platform.env, client, &audit).await;
    summary(
        test,
        &audit,
        kills,
        extra,
        audit.mismatches() + differences.len() + known_mismatches,
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
            DEADLINE,
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
        0,
    )
    .await;
    platform.stop().await;
}

#[tokio::test]
async fn projector_killed_between_apply_and_ack_applies_each_event_once() {
    let mut platform = SplitPlatform::start(nats_url(), &Part::BACKEND).await;
    let (_, js) = jetstream_at(&platform.nats_url).await;
    let durable = platform.env.namespace.consumer("projector-main");
    shorten_ack_wait(&js, &platform.env, &durable).await;
    let clients = platform.clients();
    let buyers = customers(&clients, "projkill", 2).await;
    place_and_pay(&clients, &buyers[0], 2).await;

    // While the projector is down a backlog forms; it comes back with the failpoint armed,
    // commits the first batch that changes the read models and dies before acknowledging
    // it. (Its first batch may change nothing: the events the first projector was handed
    // come back only after the ack wait, and those after them wait for them.)
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

    // Back without the failpoint: JetStream redelivers what was applied (1 s after the
    // kill, the ack wait), and the checkpoints turn it away.
    let killed = consumer_info(&js, &platform.env, &durable).await;
    platform.start_part(Part::Projector, &[]).await;
    let duplicates = await_skipped_redelivery(&platform, &js, &durable, &killed).await;
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
        0,
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

/// Awaits the restarted projector counting a redelivered event as a duplicate. On timeout
/// it panics with the consumer's state when the projector died (`killed`) and now, and the
/// projector's metrics: they tell a redelivery that never came from one that came and was
/// not counted.
async fn await_skipped_redelivery(
    platform: &SplitPlatform,
    js: &jetstream::Context,
    durable: &str,
    killed: &jetstream::consumer::Info,
) -> f64 {
    // The timeout ends the wait first (await_metric's own deadline is longer), so the
    // panic below can say more than await_metric's would.
    let skipped = platform.await_metric(
        Part::Projector,
        "tillstream_projection_duplicates_total",
        1.0,
        DEADLINE * 2,
    );
    if let Ok(duplicates) = tokio::time::timeout(DEADLINE, skipped).await {
        return duplicates;
    }
    let now = consumer_info(js, &platform.env, durable).await;
    let metrics = platform.metrics_text(Part::Projector).await;
    let projection: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("tillstream_projection"))
        .collect();
    panic!(
        "no redelivered event skipped within {DEADLINE:?}\n\
         consumer when the projector died: {}\n\
         consumer now: {}\n\
         projector metrics:\n{}",
        consumer_state(killed),
        consumer_state(&now),
        projection.join("\n"),
    );
}

fn consumer_state(info: &jetstream::consumer::Info) -> String {
    format!(
        "delivered={:?} ack_floor={:?} ack_pending={} redelivered={} waiting={} pending={} ack_wait={:?}",
        info.delivered,
        info.ack_floor,
        info.num_ack_pending,
        info.num_redelivered,
        info.num_waiting,
        info.num_pending,
        info.config.ack_wait,
    )
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
    let platform = SplitPlatform::start_in(env, nats.url(), &Part::BACKEND).await;
    let clients = platform.clients();
    let buyers = customers(&clients, "natskill", 3).await;

    // A stream of commands from three customers at once, while NATS is killed twice: 20
    // orders each (90 events), so the first kill, after 6 messages, comes under load.
    let load: Vec<_> = buyers
        .iter()
        .cloned()
        .map(|buyer| {
            let clients = clients.clone();
            tokio::spawn(async move { place_and_pay(&clients, &buyer, 20).await })
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
        0,
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
        // Its last words, logged just before it exits: the lines still queued for the log
        // writer thread are written out at exit.
        let last_words = match part {
            Part::Projector => Some("projector stopped"),
            Part::OrderRelay => Some("relay stopped"),
            _ => None,
        };
        if let Some(line) = last_words {
            let tail = process.log_tail(10);
            assert!(
                tail.contains(line),
                "{part:?} logged {line:?}; its log ends:\n{tail}"
            );
        }
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
        0,
    )
    .await;
    platform.stop().await;
}

/// What a client of the chaos load saw: the commands it sent (one idempotency key each),
/// the answers that acknowledged them (key, order id), and the attempts that failed with a
/// status a client retries (with the same key).
#[derive(Default)]
struct LoadOutcome {
    sent: usize,
    acked: Vec<(String, String)>,
    retryable: u32,
}

/// Whether a failed attempt is what a client retries while a process restarts: the server
/// unreachable or gone mid-call (tonic makes such a status itself, with the transport error
/// as its source), or a concurrency conflict.
fn retryable_grpc(status: &tonic::Status) -> bool {
    let client_made = std::error::Error::source(status).is_some();
    match status.code() {
        tonic::Code::Unavailable
        | tonic::Code::Cancelled
        | tonic::Code::Aborted
        | tonic::Code::DeadlineExceeded => true,
        tonic::Code::Unknown | tonic::Code::Internal => client_made,
        _ => false,
    }
}

/// Places orders over gRPC until `stop`, each with its own idempotency key, retrying a
/// failed attempt with the same key until it is acknowledged (also after `stop`, within
/// the deadline: every command sent ends acknowledged).
async fn keyed_grpc_orders(
    clients: Clients,
    (user_id, token): (String, String),
    tag: String,
    stop: tokio_util::sync::CancellationToken,
) -> LoadOutcome {
    let mut service = clients.orders().await;
    let mut outcome = LoadOutcome::default();
    while !stop.is_cancelled() {
        let key = format!("{tag}-{}", outcome.sent);
        outcome.sent += 1;
        let started = std::time::Instant::now();
        loop {
            let mut request = place(&user_id);
            request.idempotency_key = key.clone();
            match service.place_order(authorized(request, &token)).await {
                Ok(reply) => {
                    outcome.acked.push((key, reply.into_inner().id));
                    break;
                }
                Err(status) => {
                    assert!(
                        retryable_grpc(&status),
                        "only a restarting service's statuses, got {status:?}"
                    );
                    assert!(started.elapsed() < DEADLINE * 2, "{key} never acknowledged");
                    outcome.retryable += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await; // client back-off
                }
            }
        }
    }
    outcome
}

/// The same through the gateway's REST mirror (`POST /api/v1/orders`): a refused
/// connection (the gateway restarting) or 502/503/504 (a command service restarting) is
/// retried with the same key.
async fn keyed_rest_orders(
    gateway: std::net::SocketAddr,
    (user_id, token): (String, String),
    tag: String,
    stop: tokio_util::sync::CancellationToken,
) -> LoadOutcome {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client");
    let url = format!("http://{gateway}/api/v1/orders");
    let mut outcome = LoadOutcome::default();
    while !stop.is_cancelled() {
        let key = format!("{tag}-{}", outcome.sent);
        outcome.sent += 1;
        let body = serde_json::json!({
            "user_id": user_id,
            "currency": "EUR",
            "items": [{ "sku": "TEA-1", "name": "Green tea", "quantity": 2, "unit_price_cents": 650 }],
            "idempotency_key": key,
        });
        let started = std::time::Instant::now();
        loop {
            let answer = http.post(&url).bearer_auth(&token).json(&body).send().await;
            match answer {
                Ok(response) if response.status().is_success() => {
                    // The gateway may die between the status line and the body: then the
                    // command is not acknowledged, and is retried like any other failure.
                    if let Ok(reply) = response.json::<serde_json::Value>().await {
                        let id = reply["id"].as_str().expect("an order id").to_owned();
                        outcome.acked.push((key, id));
                        break;
                    }
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let text = response.text().await.unwrap_or_default();
                    assert!(
                        matches!(status, 409 | 502 | 503 | 504),
                        "only a restarting service's statuses, got {status}: {text}"
                    );
                }
                Err(error) => assert!(
                    error.is_connect()
                        || error.is_request()
                        || error.is_timeout()
                        || error.is_body(),
                    "only a restarting gateway's errors, got {error}"
                ),
            }
            assert!(started.elapsed() < DEADLINE * 2, "{key} never acknowledged");
            outcome.retryable += 1;
            tokio::time::sleep(Duration::from_millis(50)).await; // client back-off
        }
    }
    outcome
}

/// A small xorshift generator: the chaos test's random choices, replayable from the
/// printed seed without another dependency.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn chaos_setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v}: a number")))
        .unwrap_or(default)
}

/// What the chaos test kills: one of the platform's processes, or its (private) NATS server.
#[derive(Debug, Clone, Copy)]
enum Victim {
    Process(Part),
    Nats,
    Postgres,
}

impl Victim {
    fn name(self) -> String {
        match self {
            Victim::Process(part) => format!("{part:?}").to_lowercase(),
            Victim::Nats => "nats".to_owned(),
            Victim::Postgres => "postgres".to_owned(),
        }
    }
}

/// Chaos: under a steady load of orders (two customers over gRPC, one through the
/// gateway's REST mirror, every command with an idempotency key and retried with it),
/// `kill -9` a randomly chosen process (one of the six parts, or the test's own NATS or
/// PostgreSQL server) at a random point (after 1 to 8 more orders have been stored) and
/// start it again, `TILLSTREAM_CHAOS_KILLS` times (default 8, the short form: each once).
/// Then:
/// every acknowledged command is in the event store, no idempotency key has two effects,
/// JetStream holds every event exactly once, and the read models equal a rebuild.
/// `TILLSTREAM_CHAOS_SEED` replays a run's choices.
#[tokio::test]
async fn chaos_random_kills_under_load_lose_and_repeat_nothing() {
    let kills_wanted = chaos_setting("TILLSTREAM_CHAOS_KILLS", 8) as usize;
    let seed = chaos_setting(
        "TILLSTREAM_CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    )
    .max(1);
    let mut dice = Dice(seed);
    let env = TestEnv::new();
    let mut nats = PrivateNats::start(&env.data_dir.join("nats")).await;
    let mut postgres = PrivatePostgres::start(&env.data_dir.join("postgres")).await;
    let env = env.on_postgres(postgres.url());
    let mut platform = SplitPlatform::start_in(env, nats.url(), &Part::ALL).await;
    // Events a killed projector had been delivered come again after the ack wait: 1 s
    // here instead of 30, so the settling after the last kill takes seconds.
    let (_, js) = jetstream_at(&platform.nats_url).await;
    let durable = platform.env.namespace.consumer("projector-main");
    shorten_ack_wait(&js, &platform.env, &durable).await;
    let clients = platform.clients();
    let buyers = customers(&clients, "chaos", 3).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let mut load = Vec::new();
    for (i, buyer) in buyers.iter().take(2).enumerate() {
        load.push(tokio::spawn(keyed_grpc_orders(
            clients.clone(),
            buyer.clone(),
            format!("chaos-grpc{i}"),
            stop.clone(),
        )));
    }
    load.push(tokio::spawn(keyed_rest_orders(
        platform.gateway_http,
        buyers[2].clone(),
        "chaos-rest".to_owned(),
        stop.clone(),
    )));

    let orders_db = platform.env.connect("orders");
    let placed = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE event_type = 'OrderPlaced'")
            .fetch_one(&orders_db)
            .await
            .expect("event store answers")
    };
    // Each victim once in a shuffled order, then again, and so on.
    let mut victims: Vec<Victim> = Vec::new();
    while victims.len() < kills_wanted {
        let mut round: Vec<Victim> = Part::ALL.iter().map(|&p| Victim::Process(p)).collect();
        round.extend([Victim::Nats, Victim::Postgres]);
        while !round.is_empty() && victims.len() < kills_wanted {
            let pick = dice.roll(round.len() as u64) as usize;
            victims.push(round.swap_remove(pick));
        }
    }
    let mut kills = 0u32;
    for &victim in &victims {
        let before = placed().await;
        let more = 1 + dice.roll(8) as i64;
        eventually(DEADLINE, "orders flowing before the next kill", || async {
            (placed().await >= before + more).then_some(())
        })
        .await;
        match victim {
            Victim::Process(part) => {
                let status = platform.part(part).kill();
                assert!(
                    status.as_ref().is_some_and(killed_by_sigkill),
                    "{part:?} was running until the kill, but had ended: {status:?}"
                );
                platform.start_part(part, &[]).await;
            }
            Victim::Nats => {
                nats.kill();
                nats.restart().await;
            }
            Victim::Postgres => {
                postgres.kill();
                postgres.restart().await;
            }
        }
        kills += 1;
    }
    // Some more orders with everything back, then the load stops.
    let before = placed().await;
    eventually(DEADLINE, "orders flowing after the last kill", || async {
        (placed().await >= before + 3).then_some(())
    })
    .await;
    stop.cancel();
    let mut outcome = LoadOutcome::default();
    for task in load {
        let one = task.await.expect("load task");
        outcome.sent += one.sent;
        outcome.acked.extend(one.acked);
        outcome.retryable += one.retryable;
    }

    let stored: std::collections::BTreeSet<String> =
        sqlx::query_scalar("SELECT aggregate_id FROM events WHERE event_type = 'OrderPlaced'")
            .fetch_all(&orders_db)
            .await
            .expect("event store answers")
            .into_iter()
            .collect();
    let lost: Vec<&(String, String)> = outcome
        .acked
        .iter()
        .filter(|(_, id)| !stored.contains(id))
        .collect();
    let doubled: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT metadata->>'idempotency_key', count(*) FROM events \
         WHERE event_type = 'OrderPlaced' GROUP BY 1 HAVING count(*) > 1",
    )
    .fetch_all(&orders_db)
    .await
    .expect("event store answers");
    let keyed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'OrderPlaced' \
         AND metadata->>'idempotency_key' IS NOT NULL",
    )
    .fetch_one(&orders_db)
    .await
    .expect("event store answers");
    assert_eq!(
        keyed as usize,
        stored.len(),
        "every order carries its idempotency key"
    );
    let _ = writeln!(
        std::io::stderr(),
        "chaos: seed={seed} victims={}",
        victims
            .iter()
            .map(|v| v.name())
            .collect::<Vec<_>>()
            .join(",")
    );
    verify(
        "chaos",
        &platform,
        kills,
        &format!(
            "sent={} acked={} retryable_failures={} orders_stored={} lost={} doubled_keys={}",
            outcome.sent,
            outcome.acked.len(),
            outcome.retryable,
            stored.len(),
            lost.len(),
            doubled.len()
        ),
        lost.len() + doubled.len(),
    )
    .await;
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    assert!(doubled.is_empty(), "keys with two effects: {doubled:?}");
    assert_eq!(
        outcome.acked.len(),
        outcome.sent,
        "every command sent was acknowledged in the end"
    );
    assert_eq!(
        stored.len(),
        outcome.sent,
        "one order per command sent, none extra"
    );
    platform.stop().await;
}

/// The EVENTS stream's leader (server name) and its copy count, as the cluster reports
/// them (None while a node is down and the client reconnects, or during an election).
async fn stream_leader(js: &jetstream::Context, env: &TestEnv) -> Option<(String, usize)> {
    let mut stream = js.get_stream(env.namespace.events_stream()).await.ok()?;
    let info = stream.info().await.ok()?;
    let cluster = info.cluster.clone()?;
    Some((cluster.leader?, info.config.num_replicas))
}
/// A three-node JetStream cluster (private `nats-server`s on free loopback ports, EVENTS at
/// 3 replicas; the processes know only node 1's URL and learn the others from it) loses a
/// node under a steady load of orders, twice: first the stream's leader, then, after it
/// rejoined, a follower (node 1 unless it leads). Publishing goes on once the leader has
/// moved; the stopped node rejoins and its own copy of the stream catches up; at the end
/// all three copies are the same and hold every event exactly once, and the read models
/// equal a rebuild.
#[tokio::test]
async fn cluster_node_stopped_under_load_loses_and_repeats_nothing() {
    let env = TestEnv::new();
    let mut cluster = NatsCluster::start(&env.data_dir.join("nats-cluster")).await;
    let url = cluster.url(0);
    let platform = SplitPlatform::start_with_env(
        env,
        url.clone(),
        &[("TILLSTREAM_STREAM_REPLICAS", "3")],
        &Part::BACKEND,
    )
    .await;
    let stream_name = platform.env.namespace.events_stream();
    let (_, js) = jetstream_at(&url).await;
    let (_, replicas) = eventually(DEADLINE, "EVENTS with a leader", || async {
        stream_leader(&js, &platform.env).await
    })
    .await;
    assert_eq!(replicas, 3, "EVENTS is replicated to every node");

    let clients = platform.clients();
    let buyers = customers(&clients, "cluster", 2).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let load: Vec<_> = buyers
        .iter()
        .enumerate()
        .map(|(i, buyer)| {
            tokio::spawn(keyed_grpc_orders(
                clients.clone(),
                buyer.clone(),
                format!("cluster{i}"),
                stop.clone(),
            ))
        })
        .collect();

    let mut stopped = Vec::new();
    for round in ["leader", "follower"] {
        let before = message_count(&js, &platform.env).await;
        eventually(DEADLINE, "events flowing before the stop", || async {
            (message_count(&js, &platform.env).await >= before + 10).then_some(())
        })
        .await;
        let (leader, _) = eventually(DEADLINE, "the stream's leader", || async {
            stream_leader(&js, &platform.env).await
        })
        .await;
        let leader_index = cluster.index_of(&leader).expect("a node of the cluster");
        // The follower is node 1 when it does not lead: the one URL every client was
        // given, so they must move to a node they learned from the cluster.
        let victim = match round {
            "leader" => leader_index,
            _ if leader_index != 0 => 0,
            _ => 1,
        };
        let victim_name = cluster.name(victim).to_owned();
        cluster.kill(victim);
        // Publishing goes on with two nodes, under a leader that is not the stopped node.
        let at_stop = message_count(&js, &platform.env).await;
        let new_leader = eventually(DEADLINE, "publishing after the stop", || async {
            let (leader, _) = stream_leader(&js, &platform.env).await?;
            let grown = message_count(&js, &platform.env).await >= at_stop + 10;
            (grown && leader != victim_name).then_some(leader)
        })
        .await;
        cluster.restart(victim).await;
        // The node rejoins and its copy catches up with the leader's while the load goes on.
        let leader_index = cluster
            .index_of(&new_leader)
            .expect("a node of the cluster");
        let target = eventually(DEADLINE, "the leader's copy", || async {
            cluster
                .node_stream_state(leader_index, &stream_name)
                .await
                .map(|s| s.last_sequence)
        })
        .await;
        assert!(target > at_stop, "the leader's copy grew after the stop");
        eventually(DEADLINE, "the restarted node catching up", || async {
            let rejoined = cluster.node_stream_state(victim, &stream_name).await?;
            (rejoined.last_sequence >= target).then_some(())
        })
        .await;
        stopped.push(format!("{round}={victim_name}->{new_leader}"));
    }
    stop.cancel();
    let (mut sent, mut acked, mut retryable) = (0, 0, 0);
    for task in load {
        let outcome = task.await.expect("load task");
        sent += outcome.sent;
        acked += outcome.acked.len();
        retryable += outcome.retryable;
    }
    // With the load stopped and the relays caught up, every node holds the same copy.
    let audit = await_log(&js, &platform.env).await;
    let copies = eventually(DEADLINE, "three equal copies of the stream", || async {
        let mut copies = Vec::new();
        for i in 0..3 {
            copies.push(cluster.node_stream_state(i, &stream_name).await?);
        }
        (copies.iter().all(|c| c == &copies[0]) && copies[0].messages == audit.stored as u64)
            .then_some(copies)
    })
    .await;
    verify(
        "3-node cluster, a node stopped under load",
        &platform,
        2,
        &format!(
            "stops={} sent={sent} acked={acked} retryable_failures={retryable} copies={:?}",
            stopped.join(","),
            copies[0]
        ),
        0,
    )
    .await;
    assert_eq!(acked, sent, "every command acknowledged in the end");
    platform.stop().await;
}
