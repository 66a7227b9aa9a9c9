//! The relay against the machine's real Postgres and NATS JetStream.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use tillstream_events::EventEnvelope;
use tillstream_relay::Relay;
use tillstream_runtime::{Shutdown, event_store, nats};
use tillstream_testkit::{CuttableProxy, TestEnv, eventually, nats_url};

const DEADLINE: Duration = Duration::from_secs(30);

/// Inserts an event row the way postgres-es does (it does not name the relay's columns).
/// At the current version of `OrderPlaced`, so the relay passes the payload through as it is.
async fn insert_event(executor: impl sqlx::PgExecutor<'_>, aggregate_id: &str, sequence: i64) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('order', $1, $2, 'OrderPlaced', '2', $3, $4)",
    )
    .bind(aggregate_id)
    .bind(sequence)
    .bind(serde_json::json!({"OrderPlaced": {"seq": sequence}}))
    .bind(serde_json::json!({"correlation_id": "test"}))
    .execute(executor)
    .await
    .expect("insert event");
}

/// Every message of the namespace's EVENTS stream, decoded, in stream order.
async fn stream_contents(js: &jetstream::Context, env: &TestEnv) -> Vec<(String, EventEnvelope)> {
    let Ok(stream) = js.get_stream(env.namespace.events_stream()).await else {
        return Vec::new();
    };
    let count = stream.cached_info().state.messages;
    let mut out = Vec::new();
    for seq in 1..=count {
        let Ok(raw) = stream.get_raw_message(seq).await else {
            continue;
        };
        let id = raw
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.to_string())
            .unwrap_or_default();
        out.push((id, serde_json::from_slice(&raw.payload).expect("envelope")));
    }
    out
}

async fn message_count(js: &jetstream::Context, env: &TestEnv) -> u64 {
    match js.get_stream(env.namespace.events_stream()).await {
        Ok(mut stream) => stream.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

#[tokio::test]
async fn relay_catches_up_after_nats_was_unreachable() {
    let env = TestEnv::new();
    let (_, pool) = env.database("orders").await;
    event_store::migrate(&pool).await.unwrap();
    let direct = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    nats::ensure_streams(&direct, &env.namespace, 1)
        .await
        .unwrap();

    let nats_addr = nats_url().trim_start_matches("nats://").parse().unwrap();
    let proxy = CuttableProxy::start(nats_addr).await.unwrap();
    let relayed = nats::connect(
        &format!("nats://{}", proxy.addr()),
        &nats::NatsCredentials::default(),
        "relay-under-test",
        false,
    )
    .await
    .unwrap();
    let shutdown = Shutdown::new();
    let relay = Relay::new(
        pool.clone(),
        relayed.clone(),
        env.namespace.clone(),
        "test".into(),
        100,
        1,
    );
    let running = tokio::spawn(relay.run(shutdown.clone()));

    // A first event flows while NATS is reachable.
    insert_event(&pool, "o-1", 1).await;
    eventually(DEADLINE, "the first event on the stream", || async {
        (message_count(&direct, &env).await == 1).then_some(())
    })
    .await;

    // NATS becomes unreachable for the relay; commands keep committing.
    proxy.cut();
    eventually(DEADLINE, "the relay's NATS connection to drop", || async {
        (relayed.connection_state() != async_nats::connection::State::Connected).then_some(())
    })
    .await;
    for seq in 2..=4 {
        insert_event(&pool, "o-1", seq).await;
    }
    insert_event(&pool, "o-2", 1).await;
    assert_eq!(
        message_count(&direct, &env).await,
        1,
        "nothing passes the cut link"
    );

    // NATS comes back: every event committed meanwhile is published, once, in order.
    proxy.restore();
    eventually(DEADLINE, "all five events on the stream", || async {
        (message_count(&direct, &env).await == 5).then_some(())
    })
    .await;
    let contents = stream_contents(&direct, &env).await;
    let o1: Vec<u64> = contents
        .iter()
        .filter(|(_, e)| e.aggregate_id == "o-1")
        .map(|(_, e)| e.sequence)
        .collect();
    assert_eq!(o1, vec![1, 2, 3, 4], "per-aggregate order is kept");
    assert_eq!(contents[0].0, "order:o-1:1");
    assert_eq!(
        contents[0].1.payload,
        serde_json::json!({"seq": 1}),
        "wire payload is unwrapped"
    );
    // Messages the client buffered while cut may reach the stream before the relay's retry
    // has checkpointed them: the checkpoint follows, counting each event once.
    eventually(DEADLINE, "the checkpoint past all five", || async {
        let published: i64 =
            sqlx::query_scalar("SELECT published FROM relay_checkpoints WHERE relay = 'test'")
                .fetch_one(&pool)
                .await
                .ok()?;
        (published >= 5).then_some(published)
    })
    .await;
    let published: i64 =
        sqlx::query_scalar("SELECT published FROM relay_checkpoints WHERE relay = 'test'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(published, 5, "each event counted once");

    shutdown.cancel();
    running.await.unwrap();

    // A relay that lost its checkpoint republishes; JetStream's dedupe keeps one copy.
    sqlx::query("DELETE FROM relay_checkpoints")
        .execute(&pool)
        .await
        .unwrap();
    let client = async_nats::connect(nats_url()).await.unwrap();
    let again = Relay::new(
        pool.clone(),
        client,
        env.namespace.clone(),
        "test".into(),
        100,
        1,
    );
    assert_eq!(again.publish_batch().await.unwrap(), 5);
    assert_eq!(
        message_count(&direct, &env).await,
        5,
        "republished events are deduplicated"
    );

    env.cleanup().await;
}

#[tokio::test]
async fn an_event_committed_late_with_an_earlier_position_is_not_skipped() {
    let env = TestEnv::new();
    let (_, pool) = env.database("orders").await;
    event_store::migrate(&pool).await.unwrap();
    let (client, direct) = env.jetstream().await;
    let relay = Relay::new(
        pool.clone(),
        client,
        env.namespace.clone(),
        "test".into(),
        100,
        1,
    );

    // Transaction A takes the earlier position but commits last.
    let mut slow = pool.begin().await.unwrap();
    insert_event(&mut *slow, "slow", 1).await;
    insert_event(&pool, "fast", 1).await; // B: later position, committed at once
    assert_eq!(
        relay.publish_batch().await.unwrap(),
        0,
        "B waits behind the open A"
    );

    slow.commit().await.unwrap();
    let total = AtomicUsize::new(0);
    eventually(DEADLINE, "both events published", || async {
        let published = relay.publish_batch().await.unwrap();
        (total.fetch_add(published, Ordering::SeqCst) + published == 2).then_some(())
    })
    .await;
    let order: Vec<String> = stream_contents(&direct, &env)
        .await
        .into_iter()
        .map(|(_, e)| e.aggregate_id)
        .collect();
    assert_eq!(
        order,
        vec!["slow", "fast"],
        "published in commit-safe order"
    );

    // Nothing is left behind and nothing is published twice.
    assert_eq!(relay.publish_batch().await.unwrap(), 0);
    assert_eq!(message_count(&direct, &env).await, 2);

    env.cleanup().await;
}

#[tokio::test]
async fn transaction_ids_are_ordered_as_numbers_not_as_text() {
    let env = TestEnv::new();
    let (_, pool) = env.database("orders").await;
    event_store::migrate(&pool).await.unwrap();
    let (client, direct) = env.jetstream().await;
    // Two finished transactions whose ids sort differently as text ("100" < "99").
    for (aggregate_id, txid) in [("ninety-nine", "99"), ("hundred", "100")] {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, txid) \
             VALUES ('order', $1, 1, 'OrderPlaced', '2', '{\"OrderPlaced\": {}}', '{\"correlation_id\": \"t\"}', $2::text::xid8)",
        )
        .bind(aggregate_id)
        .bind(txid)
        .execute(&pool)
        .await
        .unwrap();
    }
    let relay = Relay::new(
        pool.clone(),
        client,
        env.namespace.clone(),
        "test".into(),
        1,
        1,
    );
    while relay.publish_batch().await.unwrap() > 0 {}
    let order: Vec<String> = stream_contents(&direct, &env)
        .await
        .into_iter()
        .map(|(_, e)| e.aggregate_id)
        .collect();
    assert_eq!(order, vec!["ninety-nine", "hundred"], "nothing skipped");
    env.cleanup().await;
}

#[tokio::test]
async fn two_relays_on_one_store_publish_each_event_once_in_order() {
    let env = TestEnv::new();
    let (_, pool) = env.database("orders").await;
    event_store::migrate(&pool).await.unwrap();
    let (client, direct) = env.jetstream().await;

    let shutdown = Shutdown::new();
    let mut relays = Vec::new();
    for _ in 0..2 {
        let relay = Relay::new(
            pool.clone(),
            client.clone(),
            env.namespace.clone(),
            "shared".into(),
            7,
            1,
        );
        relays.push(tokio::spawn(relay.run(shutdown.clone())));
    }
    // Writers commit concurrently while both relays run.
    let writers: Vec<_> = (0..5)
        .map(|a| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for seq in 1..=20 {
                    insert_event(&pool, &format!("agg-{a}"), seq).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    eventually(DEADLINE, "all 100 events on the stream", || async {
        (message_count(&direct, &env).await >= 100).then_some(())
    })
    .await;
    let contents = stream_contents(&direct, &env).await;
    assert_eq!(contents.len(), 100, "no event twice");
    for a in 0..5 {
        let sequences: Vec<u64> = contents
            .iter()
            .filter(|(_, e)| e.aggregate_id == format!("agg-{a}"))
            .map(|(_, e)| e.sequence)
            .collect();
        assert_eq!(sequences, (1..=20).collect::<Vec<_>>(), "agg-{a} in order");
    }
    shutdown.cancel();
    for relay in relays {
        relay.await.unwrap();
    }
    env.cleanup().await;
}

#[tokio::test]
async fn many_writers_committing_out_of_position_order_lose_nothing() {
    let env = TestEnv::new();
    let (_, pool) = env.database("orders").await;
    event_store::migrate(&pool).await.unwrap();
    let (client, direct) = env.jetstream().await;
    let shutdown = Shutdown::new();
    let relay = Relay::new(
        pool.clone(),
        client,
        env.namespace.clone(),
        "test".into(),
        50,
        1,
    );
    let running = tokio::spawn(relay.run(shutdown.clone()));

    // Eight writers; each transaction takes its position, then holds it open for a varying
    // while before committing, so later positions regularly commit first.
    let writers: Vec<_> = (0..8u64)
        .map(|w| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for seq in 1..=25i64 {
                    let mut tx = pool.begin().await.unwrap();
                    insert_event(&mut *tx, &format!("w{w}"), seq).await;
                    let hold = (w * 7 + seq as u64 * 13) % 20;
                    tokio::time::sleep(Duration::from_millis(hold)).await;
                    tx.commit().await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    eventually(DEADLINE, "all 200 events on the stream", || async {
        (message_count(&direct, &env).await >= 200).then_some(())
    })
    .await;
    let contents = stream_contents(&direct, &env).await;
    assert_eq!(contents.len(), 200, "each event exactly once");
    for w in 0..8 {
        let sequences: Vec<u64> = contents
            .iter()
            .filter(|(_, e)| e.aggregate_id == format!("w{w}"))
            .map(|(_, e)| e.sequence)
            .collect();
        assert_eq!(
            sequences,
            (1..=25).collect::<Vec<_>>(),
            "writer {w}'s events in order"
        );
    }
    shutdown.cancel();
    running.await.unwrap();
    env.cleanup().await;
}

/// Awaits `relay` publishing a batch of one event. An event is published once no older
/// transaction is running anywhere on the server (other tests' included), so a batch is
/// awaited, not expected at once.
async fn publishes_one(relay: &Relay, what: &str) {
    eventually(DEADLINE, what, || async {
        (relay.publish_batch().await.ok()? == 1).then_some(())
    })
    .await
}

/// The relay that leads keeps the lead from batch to batch; another on the same checkpoint
/// publishes nothing meanwhile, and takes over once the leader stops or loses its session.
#[tokio::test]
async fn a_standby_relay_takes_over_when_the_leader_stops_or_its_session_ends() {
    let env = TestEnv::new();
    let (_, pool) = env.database("orders").await;
    event_store::migrate(&pool).await.unwrap();
    let (client, direct) = env.jetstream().await;
    let relay = |name: &str| {
        Relay::new(
            pool.clone(),
            client.clone(),
            env.namespace.clone(),
            name.into(),
            100,
            1,
        )
    };

    let leader = relay("shared");
    let standby = relay("shared");
    insert_event(&pool, "a", 1).await;
    publishes_one(&leader, "the first relay to lead").await;
    insert_event(&pool, "a", 2).await;
    eventually(DEADLINE, "the second event to be final", || async {
        let final_events: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE txid < pg_snapshot_xmin(pg_current_snapshot())",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        (final_events == 2).then_some(())
    })
    .await;
    assert_eq!(
        standby.publish_batch().await.unwrap(),
        0,
        "the standby publishes nothing while the leader's session holds the lock"
    );
    publishes_one(&leader, "the leader to go on").await;

    // The leader's session ends (its backend killed): the standby takes over from the
    // checkpoint, and the old leader, failing once, stands by in its turn.
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l \
         WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(killed, 1, "one session held the relay's lock");
    insert_event(&pool, "a", 3).await;
    publishes_one(&standby, "the standby to take over").await;
    // Its connection is gone: the next batch fails on it, or finds it broken and
    // reconnects; either way it stands by then.
    let after = leader.publish_batch().await;
    assert!(matches!(after, Err(_) | Ok(0)), "{after:?}");
    assert_eq!(leader.publish_batch().await.unwrap(), 0, "and it stands by");

    // The new leader stops, closing its session: the other leads again.
    let shutdown = Shutdown::new();
    shutdown.cancel();
    standby.run(shutdown).await;
    insert_event(&pool, "a", 4).await;
    publishes_one(&leader, "the first relay to lead again").await;

    let sequences: Vec<u64> = stream_contents(&direct, &env)
        .await
        .into_iter()
        .map(|(_, e)| e.sequence)
        .collect();
    assert_eq!(sequences, vec![1, 2, 3, 4], "each event once, in order");
    env.cleanup().await;
}
