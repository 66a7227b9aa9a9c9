//! The performance suite: the baselines and the scenarios of issue #7, several times, in
//! one run on one platform, and each target judged on figures from that same run.
//!
//! One round is: axum hello world and GraphQL `order(id)` at the same connection count;
//! the mixed reads at many connections (with a think time per user); `pgbench` durable
//! inserts and gRPC PlaceOrder at the same client count, each after a `CHECKPOINT` (and
//! pgbench's table dropped after it, so autovacuum does not work on it during PlaceOrder);
//! command → visibility at a fixed offered rate. Rounds repeat so the spread (median, min,
//! max) shows the noise; targets are judged on the medians.

use std::time::Duration;

use serde_json::{Value, json};

use crate::baseline;
use crate::load::driver::{Measured, Shape, round2};
use crate::load::scenarios::{self, Scenario};
use crate::load::{self, SeedArgs, visibility};
use crate::spread;

#[derive(clap::Args)]
pub struct SuiteArgs {
    /// Rounds of every measurement (the spread between them is the noise).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds measured per scenario per round.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of ramp before each measurement (not measured).
    #[arg(long, default_value_t = 3)]
    ramp: u64,
    /// Connections for hello world and GraphQL order(id).
    #[arg(long, default_value_t = 100)]
    read_connections: usize,
    /// Connections (virtual users) for the mixed reads.
    #[arg(long, default_value_t = 1000)]
    mixed_users: usize,
    /// Mean think time of a mixed-read user between requests, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    mixed_think_ms: u64,
    /// Clients for pgbench and for gRPC PlaceOrder.
    #[arg(long, default_value_t = 16)]
    write_connections: usize,
    /// Orders per second offered for command → visibility.
    #[arg(long, default_value_t = 1000.0)]
    visibility_rate: f64,
    /// A second, lower rate for command → visibility that the whole pipeline keeps up with
    /// on the development machine, so its latency is the path's and not a queue's.
    #[arg(long, default_value_t = 300.0)]
    sustained_rate: f64,
    #[command(flatten)]
    seed: SeedArgs,
}

struct Round {
    hello: Measured,
    order: Measured,
    mixed: Measured,
    pgbench: Value,
    place: Measured,
    /// Seconds the `CHECKPOINT` before pgbench and before PlaceOrder took (`None`: not
    /// allowed), so each write phase starts with no dirty buffers of the phase before.
    checkpoints: [Option<f64>; 2],
    /// Seconds the order read model took to catch up after PlaceOrder flat out.
    settle_seconds: f64,
    visibility: Value,
    /// The same at `sustained_rate`.
    visibility_sustained: Value,
}

pub async fn run(args: SuiteArgs) -> anyhow::Result<Value> {
    let connections = args.read_connections.max(args.mixed_users);
    let (platform, target, memory) = load::prepare(args.seed, connections).await?;
    let shape = |users: usize, think_ms: u64| Shape {
        users,
        ramp: Duration::from_secs(args.ramp),
        duration: Duration::from_secs(args.duration),
        think: Duration::from_millis(think_ms),
    };
    let mut rounds = Vec::new();
    let mut failure = None;
    for round in 0..args.runs {
        eprintln!("--- round {} of {}", round + 1, args.runs);
        let measured = async {
            let hello = baseline::hello_world(shape(args.read_connections, 0)).await?;
            let order = scenarios::run(
                target.clone(),
                Scenario::GraphqlOrder,
                shape(args.read_connections, 0),
            )
            .await?;
            let mixed = scenarios::run(
                target.clone(),
                Scenario::Mixed,
                shape(args.mixed_users, args.mixed_think_ms),
            )
            .await?;
            let before_pgbench = baseline::checkpoint().await;
            let pgbench = baseline::pgbench_insert(
                &platform.env,
                args.write_connections,
                Duration::from_secs(args.duration),
            )
            .await?;
            let before_place = baseline::checkpoint().await;
            let place = scenarios::run(
                target.clone(),
                Scenario::GrpcPlaceOrder,
                shape(args.write_connections, 0),
            )
            .await?;
            let settle_seconds = platform.settle().await?;
            eprintln!("read model caught up {settle_seconds:.1} s after PlaceOrder");
            let visibility = visibility::measure(
                target.clone(),
                args.visibility_rate,
                Duration::from_secs(args.duration),
            )
            .await?;
            platform.settle().await?;
            let visibility_sustained = visibility::measure(
                target.clone(),
                args.sustained_rate,
                Duration::from_secs(args.duration),
            )
            .await?;
            platform.settle().await?;
            Ok::<_, anyhow::Error>(Round {
                hello,
                order,
                mixed,
                pgbench,
                place,
                checkpoints: [before_pgbench, before_place],
                settle_seconds,
                visibility,
                visibility_sustained,
            })
        }
        .await;
        match measured {
            Ok(r) => rounds.push(r),
            Err(error) => {
                eprintln!("platform log ends:\n{}", platform.log_tail(30));
                failure = Some(error);
                break;
            }
        }
    }
    // Idle again: what the platform holds after the load, first with the load generator's
    // connections still open (its HTTP pool keeps up to `connections` of them idle), then,
    // as `load` measures it, with its clients gone.
    tokio::time::sleep(Duration::from_secs(IDLE_SECS)).await;
    let (connected_mib, connections) = (platform.rss_mib(), platform.client_connections());
    drop(target);
    let left_open = platform.clients_gone(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(IDLE_SECS)).await;
    let after_load = AfterLoad {
        connected_mib,
        connections,
        left_open,
        idle_mib: platform.rss_mib(),
    };
    platform.stop().await;
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(summarize(&args, &rounds, memory, &after_load))
}

/// Seconds the platform is left without load before its memory is read.
const IDLE_SECS: u64 = 5;

/// The platform's memory after the load: with the load generator's connections open, and
/// once its clients are gone (the figure judged).
struct AfterLoad {
    connected_mib: Option<f64>,
    connections: usize,
    /// Client connections still open when the second reading was taken (0 unless the
    /// platform kept some past the 10 s waited for them).
    left_open: usize,
    idle_mib: Option<f64>,
}

fn summarize(args: &SuiteArgs, rounds: &[Round], memory: Value, after_load: &AfterLoad) -> Value {
    let rss_after = after_load.idle_mib;
    let med = |f: &dyn Fn(&Round) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let all = |f: &dyn Fn(&Round) -> f64| spread(rounds.iter().map(f).collect());
    let all2 = |f: &dyn Fn(&Round) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(|r| round2(f(r))).collect();
        v.sort_by(f64::total_cmp);
        json!({
            "median": v.get(v.len() / 2),
            "min": v.first(),
            "max": v.last(),
        })
    };
    let pg_tps = |r: &Round| r.pgbench["tps"].as_f64().unwrap_or(f64::NAN);
    let vis = |r: &Round, q: &str| {
        r.visibility["ack_to_visible_ms"][q]
            .as_f64()
            .unwrap_or(f64::NAN)
    };
    let vis_errors = |r: &Round| r.visibility["errors_total"].as_f64().unwrap_or(f64::NAN);
    let sustained = |r: &Round, q: &str| {
        r.visibility_sustained["ack_to_visible_ms"][q]
            .as_f64()
            .unwrap_or(f64::NAN)
    };
    let vis_rate = |r: &Round| {
        r.visibility["placed_orders_per_second"]
            .as_f64()
            .unwrap_or(0.0)
    };
    let order_ratio = med(&|r| r.order.throughput() / r.hello.throughput());
    let place_ratio = med(&|r| r.place.throughput() / pg_tps(r));
    let idle_rss = memory["idle_after_start_mib"].as_f64();
    let targets = vec![
        target(
            "GraphQL order(id) at 100 connections: ≥ 0.20 × axum hello world req/s",
            json!(round2(order_ratio)),
            order_ratio >= 0.20,
        ),
        target(
            "GraphQL order(id) at 100 connections: p99 ≤ 10 ms",
            json!(med(&|r| r.order.ms(0.99))),
            med(&|r| r.order.ms(0.99)) <= 10.0,
        ),
        target(
            "mixed reads at 1000 connections: p99 ≤ 50 ms, max ≤ 250 ms, 0 errors",
            json!({
                "p99_ms": med(&|r| r.mixed.ms(0.99)),
                "max_ms": med(&|r| r.mixed.max_ms()),
                "errors": rounds.iter().map(|r| r.mixed.error_count()).sum::<u64>(),
            }),
            med(&|r| r.mixed.ms(0.99)) <= 50.0
                && med(&|r| r.mixed.max_ms()) <= 250.0
                && rounds.iter().all(|r| r.mixed.error_count() == 0),
        ),
        target(
            "gRPC PlaceOrder: ≥ 0.33 × pgbench durable insert tps",
            json!(round2(place_ratio)),
            place_ratio >= 0.33,
        ),
        target(
            "gRPC PlaceOrder: p99 ≤ 20 ms",
            json!(med(&|r| r.place.ms(0.99))),
            med(&|r| r.place.ms(0.99)) <= 20.0,
        ),
        target(
            "ack → visible in GraphQL at 1k orders/s: p50 ≤ 5 ms, p99 ≤ 25 ms",
            json!({
                "placed_orders_per_second": med(&vis_rate),
                "p50_ms": med(&|r| vis(r, "p50")),
                "p99_ms": med(&|r| vis(r, "p99")),
            }),
            med(&vis_rate) >= 0.95 * args.visibility_rate
                && med(&|r| vis(r, "p50")) <= 5.0
                && med(&|r| vis(r, "p99")) <= 25.0
                && rounds.iter().all(|r| vis_errors(r) == 0.0),
        ),
        target(
            "idle RSS, all-in-one ≤ 100 MB (after start, and idle again after the load, its clients gone)",
            json!({ "after_start_mib": idle_rss, "after_load_mib": rss_after }),
            [idle_rss, rss_after]
                .iter()
                .all(|mib| mib.is_some_and(|mib| mib * 1.048_576 <= 100.0)),
        ),
    ];
    json!({
        "parameters": {
            "runs": args.runs, "duration_seconds": args.duration, "ramp_seconds": args.ramp,
            "read_connections": args.read_connections, "mixed_users": args.mixed_users,
            "mixed_think_ms_mean": args.mixed_think_ms, "write_connections": args.write_connections,
            "visibility_rate": args.visibility_rate,
            "sustained_rate": args.sustained_rate,
            "customers": args.seed.customers, "orders_per_customer": args.seed.orders_per_customer,
        },
        "targets": targets,
        "figures": {
            "axum_hello_world_per_second": all(&|r| r.hello.throughput()),
            "graphql_order_per_second": all(&|r| r.order.throughput()),
            "graphql_order_p99_ms": all2(&|r| r.order.ms(0.99)),
            "mixed_per_second": all(&|r| r.mixed.throughput()),
            "mixed_p99_ms": all2(&|r| r.mixed.ms(0.99)),
            "mixed_max_ms": all2(&|r| r.mixed.max_ms()),
            "pgbench_insert_tps": all(&pg_tps),
            "place_order_per_second": all(&|r| r.place.throughput()),
            "place_order_p99_ms": all2(&|r| r.place.ms(0.99)),
            "ack_to_visible_p50_ms": all2(&|r| vis(r, "p50")),
            "ack_to_visible_p99_ms": all2(&|r| vis(r, "p99")),
            "sustained_visibility_rate_per_second": all(&|r| r.visibility_sustained["offered_orders_per_second"].as_f64().unwrap_or(0.0)),
            "sustained_ack_to_visible_p50_ms": all2(&|r| sustained(r, "p50")),
            "sustained_ack_to_visible_p99_ms": all2(&|r| sustained(r, "p99")),
            "read_model_catch_up_after_place_order_seconds": all2(&|r| r.settle_seconds),
        },
        "ratios": {
            "graphql_order_over_hello_world": all2(&|r| r.order.throughput() / r.hello.throughput()),
            "place_order_over_pgbench_insert": all2(&|r| r.place.throughput() / pg_tps(r)),
        },
        "memory_mib": {
            "all_in_one": {
                "idle_after_start": idle_rss,
                "after_seed": memory["after_seed_mib"],
                "idle_after_load": rss_after,
                "idle_after_load_clients_connected": {
                    "mib": after_load.connected_mib,
                    "client_connections": after_load.connections,
                },
                "client_connections_left_open": after_load.left_open,
            },
            "per_service": "not measured by the suite (the split binaries are not started)",
        },
        "rounds": rounds.iter().map(|r| json!({
            "axum_hello_world": r.hello.to_json(),
            "graphql_order": r.order.to_json(),
            "mixed": r.mixed.to_json(),
            "pgbench_insert": r.pgbench,
            "grpc_place_order": r.place.to_json(),
            "checkpoint_seconds_before_pgbench_and_place_order": r.checkpoints,
            "read_model_catch_up_seconds": round2(r.settle_seconds),
            "visibility": r.visibility,
            "visibility_sustained": r.visibility_sustained,
        })).collect::<Vec<_>>(),
    })
}

fn target(name: &str, measured: Value, met: bool) -> Value {
    json!({ "target": name, "measured": measured, "met": met })
}
