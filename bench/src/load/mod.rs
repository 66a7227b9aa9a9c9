//! The load generator: the platform started as a child process on fresh databases and
//! namespace, seeded with customers and orders, then loaded by virtual users over
//! GraphQL, REST or gRPC (see [`scenarios`]), or by orders placed at a fixed rate and read
//! back ([`visibility`]).

pub mod driver;
pub mod open_loop;
pub mod platform;
pub mod scenarios;
pub mod seed;
pub mod visibility;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tillstream_proto::order::v1::order_service_client::OrderServiceClient;

use driver::Shape;
use platform::RunningPlatform;
use scenarios::{Scenario, Target};

/// How many customers and orders the platform is seeded with.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct SeedArgs {
    /// Customers registered before the load (the virtual users share them).
    #[arg(long, default_value_t = 50)]
    pub customers: usize,
    /// Orders placed for each customer before the load.
    #[arg(long, default_value_t = 20)]
    pub orders_per_customer: usize,
}

#[derive(clap::Args)]
pub struct LoadArgs {
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Concurrent virtual users (each holds one connection).
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Seconds over which the users start; requests during the ramp are not measured.
    #[arg(long, default_value_t = 5)]
    ramp: u64,
    /// Seconds measured after the ramp.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Mean pause of each user between requests, in milliseconds (0: flat out).
    #[arg(long, default_value_t = 0)]
    think_ms: u64,
    /// Seconds the platform is left idle after the load, its clients gone, before its
    /// memory is read again (`idle_after_load`).
    #[arg(long, default_value_t = 5)]
    idle_secs: u64,
    #[command(flatten)]
    seed: SeedArgs,
}

#[derive(clap::Args)]
pub struct VisibilityArgs {
    /// Orders placed per second (open loop).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds of placing.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    #[command(flatten)]
    seed: SeedArgs,
}

/// The platform, seeded, and the virtual users' view of it.
pub async fn prepare(
    seed_args: SeedArgs,
    connections: usize,
) -> anyhow::Result<(RunningPlatform, Arc<Target>, serde_json::Value)> {
    eprintln!("starting tillstream up");
    let platform = RunningPlatform::start().await?;
    // Idle: ready, a moment to settle, no request served yet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = platform.rss_mib();
    match seeded(&platform, seed_args, connections).await {
        Ok(target) => {
            let memory =
                json!({ "idle_after_start_mib": idle_rss, "after_seed_mib": platform.rss_mib() });
            Ok((platform, target, memory))
        }
        Err(error) => {
            eprintln!("platform log ends:\n{}", platform.log_tail(30));
            platform.stop().await;
            Err(error)
        }
    }
}

async fn seeded(
    platform: &RunningPlatform,
    seed_args: SeedArgs,
    connections: usize,
) -> anyhow::Result<Arc<Target>> {
    eprintln!(
        "seeding {} customers × {} orders",
        seed_args.customers, seed_args.orders_per_customer
    );
    let customers = seed::seed(
        platform,
        seed_args.customers.max(1),
        seed_args.orders_per_customer.max(1),
    )
    .await?;
    let mut orders = Vec::new();
    for _ in 0..connections.clamp(1, 64) {
        orders.push(OrderServiceClient::connect(format!("http://{}", platform.order_grpc)).await?);
    }
    Ok(Arc::new(Target {
        http: Target::http_client(connections)?,
        graphql_url: format!("http://{}/graphql", platform.gateway),
        rest_url: format!("http://{}/api/v1", platform.gateway),
        customers,
        orders,
    }))
}

pub async fn run_load(args: LoadArgs) -> anyhow::Result<serde_json::Value> {
    let (platform, target, memory) = prepare(args.seed, args.users).await?;
    let shape = Shape {
        users: args.users,
        ramp: Duration::from_secs(args.ramp),
        duration: Duration::from_secs(args.duration),
        think: Duration::from_millis(args.think_ms),
    };
    // The virtual users' connections close when `run` returns.
    let measured = scenarios::run(target, args.scenario, shape).await;
    let rss_after = platform.rss_mib();
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let rss_idle = platform.rss_mib();
    platform.stop().await;
    let mut result = measured?.to_json();
    result["seed"] = json!({ "customers": args.seed.customers, "orders_per_customer": args.seed.orders_per_customer });
    result["platform_rss_mib"] = json!({
        "before_load": memory,
        "after_load": rss_after,
        "idle_after_load": rss_idle,
        "idle_secs": args.idle_secs,
    });
    Ok(result)
}

pub async fn run_visibility(args: VisibilityArgs) -> anyhow::Result<serde_json::Value> {
    let (platform, target, _) = prepare(args.seed, 64).await?;
    let result = visibility::measure(target, args.rate, Duration::from_secs(args.duration)).await;
    platform.stop().await;
    result
}

/// `tillstream-bench serve`: a fresh platform until Ctrl-C or SIGTERM, then cleaned away.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Flags added to `tillstream up`'s, after `--` (for example `-- --idle-timeout-secs 10`).
    #[arg(last = true)]
    pub up: Vec<String>,
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Watched before the platform starts, so a SIGTERM during the start is not the
    // default action (this process gone, the platform and its databases left behind).
    let stop = tillstream_runtime::shutdown::on_signal();
    let platform = RunningPlatform::start_with(&args.up).await?;
    println!("gateway   http://{}", platform.gateway);
    println!(
        "gRPC      users {}   orders {}",
        platform.user_grpc, platform.order_grpc
    );
    println!("Ctrl-C (or SIGTERM) stops it and removes its databases and streams");
    stop.cancelled().await;
    println!("memory    {:?} MiB", platform.rss_mib());
    platform.stop().await;
    Ok(())
}
