//! Idle resident memory of each split service binary (issue #7: "idle RSS per service ≤
//! 30 MB"): the six processes of the split deployment (`tillstream-user`,
//! `tillstream-order`, a `tillstream-relay` per event store, `tillstream-projector`,
//! `tillstream-gateway`) started the way `services/tillstream/tests/support/split.rs` does,
//! against fresh databases and namespace, with `VmRSS` read once they have settled after
//! start, and again after a customer's orders went through all of them.
//!
//! The binaries are found next to this one, or in `TILLSTREAM_BIN_DIR`. Settings are the
//! services' defaults (pool size 10, as in `deploy/k8s`), not the tests' smaller ones.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use tillstream_proto::order::v1::order_service_client::OrderServiceClient;
use tillstream_proto::user::v1::{
    LoginRequest, RegisterUserRequest, user_service_client::UserServiceClient,
};
use tillstream_testkit::TestEnv;
use tillstream_testkit::process::{ChildProcess, free_addr};

use crate::load::platform::{
    ADMIN_EMAIL, ADMIN_PASSWORD, allocator_env, binary, kib_to_mib, proc_file, status_field,
};
use crate::load::seed::{self, Customer};

/// The target: 30 MB (decimal), 28.6 MiB.
const TARGET_MB: f64 = 30.0;
const MIB_IN_MB: f64 = 1.048_576;
/// How long each process gets to become ready, and the traffic to become visible.
const READY: Duration = Duration::from_secs(60);
const VISIBLE: Duration = Duration::from_secs(120);
const PASSWORD: &str = "a bench customer's password";

#[derive(clap::Args)]
pub struct IdleRssArgs {
    /// Seconds the processes are left alone before each reading (after start, after the
    /// traffic).
    #[arg(long, default_value_t = 10)]
    settle: u64,
    /// Orders placed by one customer over gRPC between the two readings.
    #[arg(long, default_value_t = 200)]
    orders: usize,
}

/// One running process of the split deployment and the URL that says it is ready.
struct Service {
    process: ChildProcess,
    ready: String,
}

struct Split {
    user_grpc: SocketAddr,
    order_grpc: SocketAddr,
    gateway_http: SocketAddr,
    /// In start order; the user service first (it generates the signing keys and
    /// bootstraps the admin the others rely on).
    services: Vec<Service>,
}

pub async fn run(args: IdleRssArgs) -> anyhow::Result<Value> {
    let env = TestEnv::new();
    let outcome = match Split::configure(&env) {
        Ok(mut split) => {
            let outcome = measure(&mut split, &env, &args).await;
            split.stop().await;
            outcome
        }
        Err(error) => Err(error),
    };
    env.cleanup().await;
    outcome
}

async fn measure(split: &mut Split, env: &TestEnv, args: &IdleRssArgs) -> anyhow::Result<Value> {
    let settle = Duration::from_secs(args.settle);
    eprintln!("starting the six split processes");
    split.start().await?;
    eprintln!("all ready; idle for {} s", args.settle);
    tokio::time::sleep(settle).await;
    let after_start = split.readings()?;
    eprintln!("one customer, {} orders over gRPC", args.orders);
    let started = Instant::now();
    traffic(split, env, args.orders).await?;
    let traffic_seconds = started.elapsed().as_secs_f64();
    eprintln!("visible in the gateway; idle for {} s", args.settle);
    tokio::time::sleep(settle).await;
    let after_traffic = split.readings()?;

    let mut services = serde_json::Map::new();
    eprintln!(
        "{:<14} {:>12} {:>14}   target ≤ {TARGET_MB} MB ({:.1} MiB)",
        "service",
        "after start",
        "after traffic",
        TARGET_MB / MIB_IN_MB
    );
    for ((name, start), (_, traffic)) in after_start.iter().zip(&after_traffic) {
        let met = start.rss_mib.max(traffic.rss_mib) * MIB_IN_MB <= TARGET_MB;
        eprintln!(
            "{name:<14} {:>8.1} MiB {:>10.1} MiB   {}",
            start.rss_mib,
            traffic.rss_mib,
            if met { "met" } else { "NOT met" }
        );
        services.insert(
            (*name).to_owned(),
            json!({
                "idle_after_start_mib": start.rss_mib,
                "idle_after_traffic_mib": traffic.rss_mib,
                "target_mib": round1(TARGET_MB / MIB_IN_MB),
                "met": met,
                "detail": { "idle_after_start": start.to_json(), "idle_after_traffic": traffic.to_json() },
            }),
        );
    }
    Ok(json!({
        "parameters": {
            "settle_seconds": args.settle,
            "orders": args.orders,
            "customers": 1,
            "db_pool_size": "service default (10)",
        },
        "target": "idle RSS per service ≤ 30 MB (28.6 MiB), after start and idle again after traffic",
        "all_met": services.values().all(|s| s["met"] == json!(true)),
        "traffic_seconds": round1(traffic_seconds),
        "services": services,
    }))
}

impl Split {
    /// The six processes against `env`'s databases and namespace, configured as
    /// `SplitPlatform::start_with_env` does (shared settings as environment variables,
    /// per-process ones as flags), not yet started.
    fn configure(env: &TestEnv) -> anyhow::Result<Self> {
        let (users_db, orders_db, reads_db) = (
            env.database_url("users"),
            env.database_url("orders"),
            env.database_url("reads"),
        );
        let (user_grpc, order_grpc, gateway_http) = (free_addr(), free_addr(), free_addr());
        let logs = env.data_dir.join("logs");
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("creating the log folder {}", logs.display()))?;
        let data_dir = env.data_dir.display().to_string();
        let service = |name: &str, program: &str| -> anyhow::Result<(ChildProcess, SocketAddr)> {
            let path = binary(program).context(
                "the split binaries are needed: cargo build --release -p tillstream-user \
                 -p tillstream-order -p tillstream-relay -p tillstream-projections \
                 -p tillstream-gateway --bins",
            )?;
            let ops = free_addr();
            let process = ChildProcess::new(name, path, &logs)
                .env("TILLSTREAM_NATS_URL", tillstream_testkit::nats_url())
                .env("TILLSTREAM_NAMESPACE", env.namespace.prefix())
                .env("TILLSTREAM_DATA_DIR", data_dir.clone())
                .envs(allocator_env());
            Ok((process, ops))
        };
        let ready = |ops: SocketAddr| format!("http://{ops}/readyz");

        let (user, user_ops) = service("user", "tillstream-user")?;
        let user = user
            .arg(format!("--database-url={users_db}"))
            .arg(format!("--reads-database-url={reads_db}"))
            .arg(format!("--grpc-addr={user_grpc}"))
            .arg(format!("--ops-addr={user_ops}"))
            .env("TILLSTREAM_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("TILLSTREAM_ADMIN_PASSWORD", ADMIN_PASSWORD);
        let (order, order_ops) = service("order", "tillstream-order")?;
        let order = order
            .arg(format!("--database-url={orders_db}"))
            .arg(format!("--reads-database-url={reads_db}"))
            .arg(format!("--grpc-addr={order_grpc}"))
            .arg(format!("--ops-addr={order_ops}"));
        let relay = |name: &str, database: &str| -> anyhow::Result<Service> {
            let (relay, ops) = service(name, "tillstream-relay")?;
            Ok(Service {
                process: relay
                    .arg(format!("--database-url={database}"))
                    .arg("--name=jetstream")
                    .arg(format!("--ops-addr={ops}")),
                ready: ready(ops),
            })
        };
        let (projector, projector_ops) = service("projector", "tillstream-projector")?;
        let projector = projector
            .arg(format!("--database-url={reads_db}"))
            .arg(format!("--ops-addr={projector_ops}"));
        let (gateway, _) = service("gateway", "tillstream-gateway")?;
        let gateway = gateway
            .arg(format!("--database-url={reads_db}"))
            .arg(format!("--http-addr={gateway_http}"))
            .arg(format!("--user-grpc-url=http://{user_grpc}"))
            .arg(format!("--order-grpc-url=http://{order_grpc}"));
        Ok(Split {
            user_grpc,
            order_grpc,
            gateway_http,
            services: vec![
                Service {
                    process: user,
                    ready: ready(user_ops),
                },
                Service {
                    process: order,
                    ready: ready(order_ops),
                },
                relay("relay-users", &users_db)?,
                relay("relay-orders", &orders_db)?,
                Service {
                    process: projector,
                    ready: ready(projector_ops),
                },
                Service {
                    process: gateway,
                    ready: format!("http://{gateway_http}/readyz"),
                },
            ],
        })
    }

    /// Starts the user service and waits until it is ready, then the others together.
    async fn start(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let (first, others) = self
            .services
            .split_first_mut()
            .context("no services configured")?;
        first.process.start();
        first.wait_ready(&http).await?;
        for service in others.iter_mut() {
            service.process.start();
        }
        for service in others.iter_mut() {
            service.wait_ready(&http).await?;
        }
        Ok(())
    }

    /// Each process's memory now, by name, in start order.
    fn readings(&self) -> anyhow::Result<Vec<(&str, Memory)>> {
        self.services
            .iter()
            .map(|service| {
                let name = service.process.name();
                let memory = service
                    .process
                    .pid()
                    .and_then(Memory::of)
                    .with_context(|| {
                        format!(
                            "no memory figures for {name} (has it exited?); its log ends:\n{}",
                            service.process.log_tail(30)
                        )
                    })?;
                Ok((name, memory))
            })
            .collect()
    }

    /// SIGTERM to every process, up to 15 s for them to exit, then SIGKILL to any left.
    async fn stop(&mut self) {
        for service in &mut self.services {
            service.process.terminate();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && self.services.iter_mut().any(|s| s.process.is_running())
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for service in &mut self.services {
            service.process.kill();
        }
    }
}

impl Service {
    /// Awaits the ready URL's 200; an error naming the process, with its log's end, when
    /// it exits first or [`READY`] passes.
    async fn wait_ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            anyhow::ensure!(
                self.process.is_running(),
                "{} exited before it was ready; its log ends:\n{}",
                self.process.name(),
                self.process.log_tail(30)
            );
            if let Ok(response) = http.get(&self.ready).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            anyhow::ensure!(
                started.elapsed() < READY,
                "{} not ready at {} after {READY:?}; its log ends:\n{}",
                self.process.name(),
                self.ready,
                self.process.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One customer registered and logged in, `orders` orders placed for it over gRPC, and
/// awaited through the gateway (GraphQL `me { orderCount }`), so every process has done
/// work: both command services, both relays, the projector and the gateway.
async fn traffic(split: &Split, env: &TestEnv, orders: usize) -> anyhow::Result<()> {
    let mut users = UserServiceClient::connect(format!("http://{}", split.user_grpc))
        .await
        .context("connecting to the user service")?;
    let email = "idle-rss@bench.local";
    let id = users
        .register_user(RegisterUserRequest {
            email: email.into(),
            username: "idlerss".into(),
            password: PASSWORD.into(),
            full_name: "Idle RSS Customer".into(),
            idempotency_key: String::new(),
        })
        .await
        .context("registering a customer")?
        .into_inner()
        .id;
    let reads = env.connect("reads");
    let registered = seed::await_count(&reads, "SELECT count(*) FROM users", 2).await;
    reads.close().await;
    registered.context("waiting for the customer in the read model")?;
    let token = users
        .login(LoginRequest {
            email: email.into(),
            password: PASSWORD.into(),
        })
        .await
        .context("logging in")?
        .into_inner()
        .access_token;
    let customer = Customer {
        id,
        token,
        orders: Vec::new(),
    };
    let mut client = OrderServiceClient::connect(format!("http://{}", split.order_grpc))
        .await
        .context("connecting to the order service")?;
    for n in 0..orders {
        seed::place_order(&mut client, &customer)
            .await
            .with_context(|| format!("placing order {n}"))?;
    }

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = format!("http://{}/graphql", split.gateway_http);
    let started = Instant::now();
    loop {
        let body: Value = http
            .post(&url)
            .bearer_auth(&customer.token)
            .json(&json!({ "query": "{ me { orderCount } }" }))
            .send()
            .await
            .context("GraphQL me")?
            .error_for_status()
            .context("GraphQL me")?
            .json()
            .await
            .context("GraphQL me: not JSON")?;
        let count = body["data"]["me"]["orderCount"].as_u64();
        if count.is_some_and(|count| count >= orders as u64) {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < VISIBLE,
            "the gateway shows {count:?} of {orders} orders after {VISIBLE:?} (last answer: {body})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A process's memory from `/proc/<pid>/status`, in MiB, and its thread count; and from
/// `/proc/<pid>/smaps_rollup`, how much of its anonymous memory is in huge pages.
struct Memory {
    rss_mib: f64,
    anon_mib: Option<f64>,
    file_mib: Option<f64>,
    huge_pages_mib: Option<f64>,
    /// Whether the kernel may give it transparent huge pages now (`PR_SET_THP_DISABLE`
    /// unset; see `tillstream_runtime::rt::huge_pages`).
    huge_pages_allowed: Option<bool>,
    threads: Option<u64>,
}

impl Memory {
    fn of(pid: u32) -> Option<Memory> {
        let status = proc_file(pid, "status")?;
        Some(Memory {
            rss_mib: status_field(&status, "VmRSS:").map(kib_to_mib)?,
            anon_mib: status_field(&status, "RssAnon:").map(kib_to_mib),
            file_mib: status_field(&status, "RssFile:").map(kib_to_mib),
            huge_pages_mib: proc_file(pid, "smaps_rollup")
                .and_then(|rollup| status_field(&rollup, "AnonHugePages:"))
                .map(kib_to_mib),
            huge_pages_allowed: status_field(&status, "THP_enabled:").map(|v| v == 1.0),
            threads: status_field(&status, "Threads:").map(|n| n as u64),
        })
    }

    fn to_json(&self) -> Value {
        json!({
            "rss_mib": self.rss_mib,
            "rss_anon_mib": self.anon_mib,
            "rss_file_mib": self.file_mib,
            "anon_huge_pages_mib": self.huge_pages_mib,
            "huge_pages_allowed": self.huge_pages_allowed,
            "threads": self.threads,
        })
    }
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}
