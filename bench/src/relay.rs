//! Relay throughput.

use std::time::{Duration, Instant};

use serde_json::json;
use tillstream_events::EventEnvelope;
use tillstream_relay::Relay;
use tillstream_runtime::{Shutdown, event_store};
use tillstream_testkit::TestEnv;
use tillstream_testkit::workload::{self, Workload};

use crate::spread;

#[derive(clap::Args)]
pub struct Args {
    /// Customers in the synthetic log.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    #[arg(long, default_value_t = 3)]
    orders_per_user: usize,
    /// Runs of each measurement (each on fresh databases and streams).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The relay's batch size (its default is 500).
    #[arg(long, default_value_t = 500)]
    batch_size: i64,
}

pub async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let events = Workload {
        users: args.users,
        orders_per_user: args.orders_per_user,
        seed: 42,
    }
    .events();
    let n = events.len();
    let mut relay_rates = Vec::new();
    let mut publish_rates = Vec::new();
    let mut insert_rates = Vec::new();
    for run in 0..args.runs {
        let env = TestEnv::new();
        let measured = measure(&env, &events, args.batch_size).await;
        env.cleanup().await;
        let (insert, relay, publish) = measured?;
        eprintln!(
            "run {run}: insert {insert:.0}/s, relay {relay:.0}/s, raw publish {publish:.0}/s"
        );
        insert_rates.push(insert);
        relay_rates.push(relay);
        publish_rates.push(publish);
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    Ok(json!({
        "events": n,
        "parameters": { "users": args.users, "orders_per_user": args.orders_per_user, "runs": args.runs, "batch_size": args.batch_size },
        "relay_events_per_second": spread(relay_rates.clone()),
        "baselines": {
            "jetstream_publish_msgs_per_second": spread(publish_rates.clone()),
            "event_store_bulk_insert_rows_per_second": spread(insert_rates),
        },
        "ratios": {
            "relay_over_raw_publish": ((median(&relay_rates) / median(&publish_rates).max(1.0)) * 100.0).round() / 100.0,
        },
    }))
}

/// (rows inserted/s, relay events/s, raw publish msgs/s) on fresh resources.
async fn measure(
    env: &TestEnv,
    events: &[EventEnvelope],
    batch_size: i64,
) -> anyhow::Result<(f64, f64, f64)> {
    let n = events.len();
    let (_, pool) = env.database("orders").await;
    event_store::migrate(&pool).await?;
    let (client, js) = env.jetstream().await;

    // The commands' rows, committed in transactions of 1000 as a busy store would have them.
    let started = Instant::now();
    for chunk in events.chunks(1000) {
        let tagged: Vec<serde_json::Value> = chunk
            .iter()
            .map(|e| json!({ e.event_type.as_str(): e.payload }))
            .collect();
        let metadata: Vec<serde_json::Value> =
            chunk.iter().map(|e| json!(e.metadata.to_map())).collect();
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[])",
        )
        .bind(chunk.iter().map(|e| e.aggregate_type.as_str()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|e| e.aggregate_id.as_str()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|e| e.sequence as i64).collect::<Vec<_>>())
        .bind(chunk.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|e| e.event_version.as_str()).collect::<Vec<_>>())
        .bind(tagged)
        .bind(metadata)
        .execute(&pool)
        .await?;
    }
    let insert_rate = n as f64 / started.elapsed().as_secs_f64();

    let shutdown = Shutdown::new();
    let relay = Relay::new(
        pool.clone(),
        client.clone(),
        env.namespace.clone(),
        "bench".into(),
        batch_size,
        1,
    );
    let started = Instant::now();
    let running = tokio::spawn(relay.run(shutdown.clone()));
    let mut stream = js.get_stream(env.namespace.events_stream()).await?;
    loop {
        let published = stream.info().await?.state.messages as usize;
        if published >= n {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "relay published {published} of {n} in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let relay_rate = n as f64 / started.elapsed().as_secs_f64();
    shutdown.cancel();
    running.await?;

    // Baseline: the same messages straight to JetStream, as many acks in flight.
    let baseline = TestEnv::new();
    let (_, baseline_js) = baseline.jetstream().await;
    let started = Instant::now();
    let published = workload::publish(
        &baseline_js,
        &baseline.namespace,
        events,
        batch_size as usize,
    )
    .await;
    let publish_rate = n as f64 / started.elapsed().as_secs_f64();
    baseline.cleanup().await;
    published.map_err(anyhow::Error::msg)?;
    Ok((insert_rate, relay_rate, publish_rate))
}
