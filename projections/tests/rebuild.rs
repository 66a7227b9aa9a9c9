//! Blue-green rebuilds against the real Postgres and JetStream, with a live projector
//! running beside them.

use std::time::Duration;

use async_nats::jetstream;
use sqlx::PgPool;
use tillstream_projections::rebuild::{self, Quiet, RebuildError};
use tillstream_projections::{Projector, checksum, migrate};
use tillstream_runtime::{Shutdown, nats};
use tillstream_testkit::workload::{self, Workload};
use tillstream_testkit::{TestEnv, eventually, nats_url};

const DEADLINE: Duration = Duration::from_secs(60);

async fn checksums(pool: &PgPool) -> checksum::ReadModelChecksum {
    checksum::checksum(pool).await.unwrap()
}

/// The indexes and constraints of the read-model tables, as Postgres would recreate them.
async fn structure(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' \
         UNION ALL SELECT conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid) \
           FROM pg_constraint WHERE connamespace = 'public'::regnamespace \
         UNION ALL SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '') \
           FROM information_schema.columns WHERE table_schema = 'public' \
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Waits until the read models hold `events` events (the checkpoints' sequences add up).
async fn applied(pool: &PgPool, events: usize) {
    eventually(DEADLINE, "every event applied", || async {
        let sum: Option<i64> =
            sqlx::query_scalar("SELECT sum(sequence)::bigint FROM projection_checkpoints")
                .fetch_one(pool)
                .await
                .ok()
                .flatten();
        (sum == Some(events as i64)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_rebuild_replaces_the_read_models_with_the_fold_of_the_log_while_the_projector_runs() {
    let env = TestEnv::new();
    let (_, live) = env.database("reads").await;
    let (_, reference) = env.database("reference").await;
    migrate(&live).await.unwrap();
    migrate(&reference).await.unwrap();
    let client = async_nats::connect(nats_url()).await.unwrap();
    let js = jetstream::new(client.clone());
    nats::ensure_streams(&js, &env.namespace, 1).await.unwrap();

    let log = Workload {
        users: 60,
        orders_per_user: 4,
        seed: 7,
    }
    .events();
    let (first, second) = log.split_at(log.len() * 2 / 3);
    workload::publish(&js, &env.namespace, first, 256)
        .await
        .unwrap();
    let shutdown = Shutdown::new();
    let projector = Projector::new(live.clone(), client.clone(), env.namespace.clone(), 1);
    let running = tokio::spawn(projector.run(shutdown.clone()));
    applied(&live, first.len()).await;

    // The live read model drifts (say, a bug fixed since, or a hand edit).
    sqlx::query("UPDATE users SET order_count = 999")
        .execute(&live)
        .await
        .unwrap();

    let shape = structure(&live).await;

    // A reader caches a row of the live tables; the swap notifies that every row changed.
    let reads = tillstream_projections::queries::Reads::new(live.clone());
    let watch = tillstream_projections::ReadModelWatch::default();
    watch.spawn_listener(&reads, shutdown.clone());
    let cache = watch.orders();
    tillstream_testkit::eventually(Duration::from_secs(10), "serving", || async {
        cache.is_serving().then_some(())
    })
    .await;
    let order_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM orders LIMIT 1")
        .fetch_one(&live)
        .await
        .unwrap();
    let row = reads.order(order_id).await.unwrap().expect("an order");
    // Kept under an id no event names, so only the swap's reset can drop it.
    let cached_id = uuid::Uuid::now_v7();
    cache.put(
        cache.ticket(),
        cached_id,
        row.order.version,
        std::sync::Arc::new(row),
    );
    assert!(cache.get(&cached_id, None).is_some());

    // Events keep arriving while the rebuild runs.
    let publishing = {
        let (js, namespace, rest) = (js.clone(), env.namespace.clone(), second.to_vec());
        tokio::spawn(async move { workload::publish(&js, &namespace, &rest, 16).await })
    };
    let report = rebuild::rebuild(&live, client.clone(), &env.namespace, "main", false, &Quiet)
        .await
        .unwrap();
    publishing.await.unwrap().unwrap();
    tillstream_testkit::eventually(
        Duration::from_secs(10),
        "the swap empties readers' caches",
        || async { cache.get(&cached_id, None).is_none().then_some(()) },
    )
    .await;
    assert!(report.applied >= first.len() as u64, "{report:?}");
    assert_eq!(report.unapplied, 0);

    // The live projector goes on in the new tables.
    applied(&live, log.len()).await;
    shutdown.cancel();
    running.await.unwrap();

    // The reference: every event applied one by one, the way the projector does.
    let applier = Projector::new(reference.clone(), client, env.namespace.clone(), 1);
    for event in &log {
        applier.apply(event).await.unwrap();
    }
    assert_eq!(checksums(&live).await, checksums(&reference).await);
    assert_eq!(
        structure(&live).await,
        shape,
        "same columns, constraints and indexes"
    );
    let drifted: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE order_count = 999")
        .fetch_one(&live)
        .await
        .unwrap();
    assert_eq!(drifted, 0, "the drift is gone");
    let leftovers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rebuild_%'")
            .fetch_one(&live)
            .await
            .unwrap();
    assert_eq!(leftovers, 0, "no shadow or retired schema is left behind");
    env.cleanup().await;
}

#[tokio::test]
async fn a_log_with_an_event_that_cannot_be_applied_leaves_the_live_tables_alone() {
    let env = TestEnv::new();
    let (_, live) = env.database("reads").await;
    migrate(&live).await.unwrap();
    let client = async_nats::connect(nats_url()).await.unwrap();
    let js = jetstream::new(client.clone());
    nats::ensure_streams(&js, &env.namespace, 1).await.unwrap();
    let log = Workload {
        users: 5,
        orders_per_user: 2,
        seed: 11,
    }
    .events();
    workload::publish(&js, &env.namespace, &log, 64)
        .await
        .unwrap();
    // A foreign message on an event subject.
    js.publish(
        env.namespace.event_subject("order", "not-a-uuid"),
        "{\"hello\": 1}".into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO user_order_stats (user_id, orders_placed) VALUES (gen_random_uuid(), 42)",
    )
    .execute(&live)
    .await
    .unwrap();
    let before = checksums(&live).await;

    let refused =
        rebuild::rebuild(&live, client.clone(), &env.namespace, "main", false, &Quiet).await;
    assert!(
        matches!(refused, Err(RebuildError::Unapplied { count: 1, .. })),
        "{refused:?}"
    );
    assert_eq!(checksums(&live).await, before, "live tables untouched");
    assert!(matches!(
        rebuild::rebuild(&live, client.clone(), &env.namespace, "nope", false, &Quiet).await,
        Err(RebuildError::UnknownProjection(_))
    ));

    let report = rebuild::rebuild(&live, client, &env.namespace, "main", true, &Quiet)
        .await
        .unwrap();
    assert_eq!(report.unapplied, 1);
    assert_eq!(report.applied, log.len() as u64);
    let stats: i64 =
        sqlx::query_scalar("SELECT count(*) FROM user_order_stats WHERE orders_placed = 42")
            .fetch_one(&live)
            .await
            .unwrap();
    assert_eq!(stats, 0);
    env.cleanup().await;
}
