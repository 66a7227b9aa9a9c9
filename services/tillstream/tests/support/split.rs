//! The platform as separate processes on loopback, the way it is deployed: the five
//! service binaries (`tillstream-user`, `tillstream-order`, a `tillstream-relay` per event
//! store, `tillstream-projector`, `tillstream-gateway`) against one test's databases and
//! namespace, each a child of the test that can be killed with SIGKILL and started again
//! (on the same ports and databases), optionally with a failpoint armed.
//!
//! Per-process settings go in as flags, what all share (NATS, namespace, data folder) as
//! environment variables, so both configuration paths are exercised.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tillstream_testkit::process::{ChildProcess, free_addr, service_binary};
use tillstream_testkit::{TestEnv, eventually};

use super::{ADMIN_EMAIL, ADMIN_PASSWORD, Clients, metric_in};

/// One process of the split deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    User,
    Order,
    UserRelay,
    OrderRelay,
    Projector,
    Gateway,
}

impl Part {
    /// Everything but the gateway: the command side, the log and the read models.
    pub const BACKEND: [Part; 5] = [
        Part::User,
        Part::Order,
        Part::UserRelay,
        Part::OrderRelay,
        Part::Projector,
    ];

    pub const ALL: [Part; 6] = [
        Part::User,
        Part::Order,
        Part::UserRelay,
        Part::OrderRelay,
        Part::Projector,
        Part::Gateway,
    ];
}

/// How long a process gets to become ready (several start at once on two cores).
const READY: Duration = Duration::from_secs(60);

pub struct SplitPlatform {
    pub env: TestEnv,
    pub nats_url: String,
    pub user_grpc: SocketAddr,
    pub order_grpc: SocketAddr,
    pub gateway_http: SocketAddr,
    ops: BTreeMap<Part, SocketAddr>,
    parts: BTreeMap<Part, ChildProcess>,
}

impl SplitPlatform {
    /// Configures every part against fresh databases and namespace on the NATS server at
    /// `nats_url`, then starts those in `running` (the user service first: it generates
    /// the signing keys the others read) and waits until each is ready.
    pub async fn start(nats_url: String, running: &[Part]) -> Self {
        Self::start_in(TestEnv::new(), nats_url, running).await
    }

    /// Like [`SplitPlatform::start`], in an environment the test made (whose data folder
    /// already holds, say, a private NATS server's store).
    pub async fn start_in(env: TestEnv, nats_url: String, running: &[Part]) -> Self {
        Self::start_with_env(env, nats_url, &[], running).await
    }

    /// Like [`SplitPlatform::start_in`], with `shared` in every process's environment
    /// (`TILLSTREAM_STREAM_REPLICAS=3` against a cluster, say).
    pub async fn start_with_env(
        env: TestEnv,
        nats_url: String,
        shared: &[(&str, &str)],
        running: &[Part],
    ) -> Self {
        let (users_db, orders_db, reads_db) = (
            env.database_url("users"),
            env.database_url("orders"),
            env.database_url("reads"),
        );
        let (user_grpc, order_grpc, gateway_http) = (free_addr(), free_addr(), free_addr());
        let ops: BTreeMap<Part, SocketAddr> =
            Part::ALL.iter().map(|&part| (part, free_addr())).collect();
        let logs = env.data_dir.join("logs");
        let data_dir = env.data_dir.display().to_string();
        let process = |part: Part, binary: &str| {
            let ready = match part {
                Part::Gateway => format!("http://{gateway_http}/readyz"),
                _ => format!("http://{}/readyz", ops[&part]),
            };
            let name = format!("{part:?}").to_lowercase();
            let mut process = ChildProcess::new(&name, service_binary(binary), &logs)
                .env("TILLSTREAM_NATS_URL", nats_url.clone())
                .env("TILLSTREAM_NAMESPACE", env.namespace.prefix())
                .env("TILLSTREAM_DATA_DIR", data_dir.clone())
                .env("TILLSTREAM_DB_POOL_SIZE", "4")
                .ready_url(ready);
            for (key, value) in shared {
                process = process.env(key, *value);
            }
            process
        };
        let relay = |part: Part, database: &str| {
            process(part, "tillstream-relay")
                .arg(format!("--database-url={database}"))
                .arg("--name=jetstream")
                .arg(format!("--ops-addr={}", ops[&part]))
        };
        let mut parts = BTreeMap::new();
        parts.insert(
            Part::User,
            process(Part::User, "tillstream-user")
                .arg(format!("--database-url={users_db}"))
                .arg(format!("--reads-database-url={reads_db}"))
                .arg(format!("--grpc-addr={user_grpc}"))
                .arg(format!("--ops-addr={}", ops[&Part::User]))
                .env("TILLSTREAM_ADMIN_EMAIL", ADMIN_EMAIL)
                .env("TILLSTREAM_ADMIN_PASSWORD", ADMIN_PASSWORD),
        );
        parts.insert(
            Part::Order,
            process(Part::Order, "tillstream-order")
                .arg(format!("--database-url={orders_db}"))
                .arg(format!("--reads-database-url={reads_db}"))
                .arg(format!("--grpc-addr={order_grpc}"))
                .arg(format!("--ops-addr={}", ops[&Part::Order])),
        );
        parts.insert(Part::UserRelay, relay(Part::UserRelay, &users_db));
        parts.insert(Part::OrderRelay, relay(Part::OrderRelay, &orders_db));
        parts.insert(
            Part::Projector,
            process(Part::Projector, "tillstream-projector")
                .arg(format!("--database-url={reads_db}"))
                .arg(format!("--ops-addr={}", ops[&Part::Projector])),
        );
        parts.insert(
            Part::Gateway,
            process(Part::Gateway, "tillstream-gateway")
                .arg(format!("--database-url={reads_db}"))
                .arg(format!("--http-addr={gateway_http}"))
                .arg(format!("--user-grpc-url=http://{user_grpc}"))
                .arg(format!("--order-grpc-url=http://{order_grpc}")),
        );
        let mut platform = SplitPlatform {
            env,
            nats_url,
            user_grpc,
            order_grpc,
            gateway_http,
            ops,
            parts,
        };
        if running.contains(&Part::User) {
            platform.start_part(Part::User, &[]).await;
        }
        let others: Vec<Part> = running
            .iter()
            .copied()
            .filter(|&p| p != Part::User)
            .collect();
        for &part in &others {
            platform.part(part).start();
        }
        for &part in &others {
            platform.part(part).wait_ready(READY).await;
        }
        platform
    }

    /// The process of `part`.
    pub fn part(&mut self, part: Part) -> &mut ChildProcess {
        self.parts.get_mut(&part).expect("every part is configured")
    }

    /// Starts `part` with `extra_env` for this run (a failpoint, say) and waits until it is
    /// ready.
    pub async fn start_part(&mut self, part: Part, extra_env: &[(&str, &str)]) {
        let process = self.part(part);
        process.start_with(extra_env);
        process.wait_ready(READY).await;
    }

    /// Kills `part` with SIGKILL, starts it again without any extra environment, and
    /// waits until it is ready.
    pub async fn restart(&mut self, part: Part) {
        self.part(part).restart(READY).await;
    }

    pub fn clients(&self) -> Clients {
        Clients {
            user_grpc: self.user_grpc,
            order_grpc: self.order_grpc,
            reads: self.env.connect("reads"),
        }
    }

    /// The sum over all label sets of the Prometheus metric `name` on `part`'s `/metrics`
    /// (0 when the process has not recorded it).
    pub async fn metric(&self, part: Part, name: &str) -> f64 {
        metric_in(&self.metrics_text(part).await, name)
    }

    /// What `part`'s `/metrics` answers.
    pub async fn metrics_text(&self, part: Part) -> String {
        let url = format!("http://{}/metrics", self.ops[&part]);
        reqwest::get(&url)
            .await
            .and_then(|r| r.error_for_status())
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text")
    }

    /// Awaits `metric` on `part` reaching at least `at_least`, for at most `deadline`.
    pub async fn await_metric(
        &self,
        part: Part,
        name: &str,
        at_least: f64,
        deadline: Duration,
    ) -> f64 {
        eventually(deadline, name, || async {
            let value = self.metric(part, name).await;
            (value >= at_least).then_some(value)
        })
        .await
    }

    /// Kills every process and removes the test's databases, streams and files.
    pub async fn stop(self) {
        let SplitPlatform { env, parts, .. } = self;
        drop(parts); // each process is killed as its handle drops
        env.cleanup().await;
    }
}
