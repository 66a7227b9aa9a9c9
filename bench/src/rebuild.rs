//! Rebuild throughput.

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull::OrderedConfig;
use futures::StreamExt;
use serde_json::json;
use tillstream_projections::rebuild::{self, Phase, Progress};
use tillstream_projections::{Projector, migrate};
use tillstream_runtime::Shutdown;
use tillstream_testkit::TestEnv;
use tillstream_testkit::workload::{self, Workload};

use crate::spread;

#[derive(clap::Args)]
pub struct Args {
    /// Customers in the synthetic log (each registers, some change profile or role).
    #[arg(long, default_value_t = 30_000)]
    users: usize,
    /// Orders per customer (1–5 events each: placed, paid, shipped, delivered, cancelled).
    #[arg(long, default_value_t = 3)]
    orders_per_user: usize,
    /// Rebuilds (and baseline reads) to measure; the spread shows the noise.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// How long the event-by-event projector baseline runs.
    #[arg(long, default_value_t = 20)]
    projector_seconds: u64,
}

pub async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let env = TestEnv::new();
    let result = measure(&env, &args).await;
    env.cleanup().await;
    result
}

async fn measure(env: &TestEnv, args: &Args) -> anyhow::Result<serde_json::Value> {
    let (client, js) = env.jetstream().await;
    let events = Workload {
        users: args.users,
        orders_per_user: args.orders_per_user,
        seed: 42,
    }
    .events();
    let n = events.len();
    eprintln!("publishing {n} events");
    let started = Instant::now();
    workload::publish(&js, &env.namespace, &events, 512)
        .await
        .map_err(anyhow::Error::msg)?;
    let publish_rate = n as f64 / started.elapsed().as_secs_f64();
    drop(events);

    // Baseline 1: reading the stream, nothing else.
    let stream = js.get_stream(env.namespace.events_stream()).await?;
    let mut read_rates = Vec::new();
    for _ in 0..args.runs {
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: env.namespace.events_wildcard(),
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let started = Instant::now();
        let mut read = 0;
        while read < n {
            match tokio::time::timeout(Duration::from_secs(30), messages.next()).await {
                Ok(Some(Ok(_))) => read += 1,
                other => anyhow::bail!("stream read stopped after {read}: {other:?}"),
            }
        }
        read_rates.push(n as f64 / started.elapsed().as_secs_f64());
    }
    eprintln!("stream read: {read_rates:?} msgs/s");

    // Baseline 2: the live projector catching up event by event (batched transactions).
    let (_, projected) = env.database("projected").await;
    migrate(&projected).await?;
    let shutdown = Shutdown::new();
    let projector = Projector::new(projected.clone(), client.clone(), env.namespace.clone(), 1);
    let running = tokio::spawn(projector.run(shutdown.clone()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.projector_seconds);
    let mut applied = 0i64;
    while Instant::now() < deadline && (applied as usize) < n {
        tokio::time::sleep(Duration::from_millis(500)).await;
        applied = sqlx::query_scalar::<_, Option<i64>>(
            "SELECT sum(sequence)::bigint FROM projection_checkpoints",
        )
        .fetch_one(&projected)
        .await?
        .unwrap_or(0);
    }
    let projector_rate = applied as f64 / started.elapsed().as_secs_f64();
    shutdown.cancel();
    running.await?;
    eprintln!("projector: {projector_rate:.0} events/s");

    // The rebuild, several times on the same database (each swaps in a fresh copy).
    let (_, reads) = env.database("reads").await;
    migrate(&reads).await?;
    let mut bulk_rates = Vec::new();
    let mut total_rates = Vec::new();
    let mut swaps = Vec::new();
    let mut phases = Vec::new();
    for run in 0..args.runs {
        let timeline = Timeline::default();
        let report = rebuild::rebuild(
            &reads,
            client.clone(),
            &env.namespace,
            "main",
            false,
            &timeline,
        )
        .await?;
        phases.push(timeline.seconds());
        anyhow::ensure!(report.applied as usize == n, "rebuild applied {report:?}");
        eprintln!("rebuild {run}: {report:?}");
        bulk_rates.push(report.bulk_events_per_second);
        total_rates.push(n as f64 / report.total.as_secs_f64());
        swaps.push(report.swap.as_secs_f64() * 1000.0);
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let rebuild_rate = median(&total_rates);
    Ok(json!({
        "events": n,
        "parameters": { "users": args.users, "orders_per_user": args.orders_per_user, "runs": args.runs },
        "target_events_per_second": 100_000,
        "rebuild_events_per_second": spread(total_rates.clone()),
        "rebuild_bulk_phase_events_per_second": spread(bulk_rates),
        "rebuild_swap_lock_ms": spread(swaps),
        "rebuild_phase_seconds": phases,
        "baselines": {
            "stream_read_only_msgs_per_second": spread(read_rates.clone()),
            "projector_event_by_event_events_per_second": projector_rate.round(),
            "jetstream_publish_msgs_per_second": publish_rate.round(),
        },
        "ratios": {
            "rebuild_over_stream_read": round2(rebuild_rate / median(&read_rates)),
            "rebuild_over_projector": round2(rebuild_rate / projector_rate.max(1.0)),
        },
        "meets_target": rebuild_rate >= 100_000.0,
    }))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// When each phase of a rebuild began, to see where its time goes.
#[derive(Default)]
struct Timeline {
    started: std::sync::OnceLock<Instant>,
    seen: std::sync::Mutex<Vec<(Phase, Instant)>>,
}

impl Progress for Timeline {
    fn update(&self, phase: Phase, _: u64, _: u64) {
        self.started.get_or_init(Instant::now);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.last().map(|(p, _)| *p) != Some(phase) {
            seen.push((phase, Instant::now()));
        }
    }
}

impl Timeline {
    /// Seconds spent in each phase, from the first report to the last.
    fn seconds(&self) -> serde_json::Value {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let end = Instant::now();
        let mut out = serde_json::Map::new();
        for (i, (phase, at)) in seen.iter().enumerate() {
            let until = seen.get(i + 1).map(|(_, t)| *t).unwrap_or(end);
            out.insert(
                format!("{phase:?}").to_lowercase(),
                json!(round2((until - *at).as_secs_f64())),
            );
        }
        serde_json::Value::Object(out)
    }
}
