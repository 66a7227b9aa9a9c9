//! The platform under load: the all-in-one `tillstream up` binary as a child process, on
//! fresh databases and a fresh NATS namespace, so its memory can be read from `/proc` and
//! its CPU is not mixed with the load generator's runtime.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tillstream_testkit::process::{ChildProcess, free_addr};
use tillstream_testkit::{TestEnv, nats_url, postgres_url};

pub const ADMIN_EMAIL: &str = "admin@bench.local";
pub const ADMIN_PASSWORD: &str = "an admin password for the bench";

/// The `MIMALLOC_*` variables of the bench's own environment (mimalloc's options, such as
/// `MIMALLOC_ALLOW_THP=0`), passed on to the services it starts, whose environment is
/// otherwise cleared. The results record them ([`crate::machine::describe`]).
pub fn allocator_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(name, _)| name.starts_with("MIMALLOC_"))
        .collect()
}

pub struct RunningPlatform {
    pub env: TestEnv,
    pub gateway: SocketAddr,
    pub user_grpc: SocketAddr,
    pub order_grpc: SocketAddr,
    process: ChildProcess,
}

impl RunningPlatform {
    /// Starts `tillstream up` (found next to this binary, or in `TILLSTREAM_BIN_DIR`) and
    /// waits until the gateway is ready. The gateway's per-client rate limit is off: the
    /// virtual users share a few customers' tokens.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    /// [`RunningPlatform::start`], with `extra` flags after the bench's own.
    pub async fn start_with(extra: &[String]) -> anyhow::Result<Self> {
        let env = TestEnv::new();
        for db in ["users", "orders", "reads"] {
            env.database_url(db); // registered for cleanup; the platform creates them
        }
        let (gateway, user_grpc, order_grpc) = (free_addr(), free_addr(), free_addr());
        let ops_base = free_port_run(6).context("no six consecutive free ports")?;
        let mut process = ChildProcess::new("tillstream", binary("tillstream")?, &env.data_dir)
            .arg("up")
            .arg("--no-demo")
            .arg(format!("--postgres-url={}", postgres_url()))
            .arg(format!("--database-prefix={}", env.id))
            .arg(format!("--nats-url={}", nats_url()))
            .arg(format!("--namespace={}", env.namespace.prefix()))
            .arg(format!("--data-dir={}", env.data_dir.display()))
            .arg(format!("--gateway-http-addr={gateway}"))
            .arg(format!("--user-grpc-addr={user_grpc}"))
            .arg(format!("--order-grpc-addr={order_grpc}"))
            .arg(format!("--ops-base-port={ops_base}"))
            .arg("--rate-limit-per-second=0")
            .arg(format!("--admin-email={ADMIN_EMAIL}"))
            .args(extra.iter().cloned())
            .env("TILLSTREAM_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .envs(allocator_env())
            .ready_url(format!("http://{gateway}/readyz"));
        process.start();
        process.wait_ready(Duration::from_secs(120)).await;
        Ok(RunningPlatform {
            env,
            gateway,
            user_grpc,
            order_grpc,
            process,
        })
    }

    /// Resident memory of the platform process, in MiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_mib(&self) -> Option<f64> {
        rss_mib(self.process.pid()?)
    }

    /// Waits until the order read model holds every order in the event store (after a
    /// write-heavy phase, so the next one does not measure its backlog): the seconds it
    /// took.
    pub async fn settle(&self) -> anyhow::Result<f64> {
        let started = std::time::Instant::now();
        let store = self.env.connect("orders");
        let reads = self.env.connect("reads");
        let deadline = started + Duration::from_secs(300);
        let outcome = loop {
            let stored: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM events WHERE aggregate_type = $1 AND sequence = 1",
            )
            .bind(tillstream_events::order::AGGREGATE_TYPE)
            .fetch_one(&store)
            .await?;
            let read: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
                .fetch_one(&reads)
                .await?;
            if read >= stored {
                break Ok(started.elapsed().as_secs_f64());
            }
            if std::time::Instant::now() > deadline {
                break Err(anyhow::anyhow!(
                    "read model has {read} of {stored} orders after 300 s"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        store.close().await;
        reads.close().await;
        outcome
    }

    /// Open TCP connections to the gateway and the two gRPC services (from
    /// `/proc/net/tcp` and `tcp6`): the clients the platform is serving, busy or idle.
    pub fn client_connections(&self) -> usize {
        let ports = [self.gateway, self.user_grpc, self.order_grpc].map(|a| a.port());
        ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|table| std::fs::read_to_string(table).ok())
            .map(|table| established_to(&table, &ports))
            .sum()
    }

    /// Waits until the platform's clients have closed their connections (those of a
    /// dropped [`super::scenarios::Target`] close at once), for at most `limit`: the
    /// connections still open then.
    pub async fn clients_gone(&self, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let open = self.client_connections();
            if open == 0 || tokio::time::Instant::now() >= deadline {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The end of the platform's log, to explain errors.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// Stops the platform and removes its databases, streams and data folder.
    pub async fn stop(mut self) {
        self.process.terminate();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.process.is_running() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.process.kill();
        self.env.cleanup().await;
    }
}

/// Established connections of a `/proc/net/tcp` table whose local port is one of `ports`.
fn established_to(table: &str, ports: &[u16]) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|local| local.rsplit(':').next())
                .and_then(|port| u16::from_str_radix(port, 16).ok());
            fields.get(3) == Some(&"01") && local_port.is_some_and(|port| ports.contains(&port))
        })
        .count()
}

/// `VmRSS` of a process, in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    status_field(&proc_file(pid, "status")?, "VmRSS:").map(kib_to_mib)
}

/// `/proc/<pid>/<file>` (`status`, `smaps_rollup`), read once for any number of
/// [`status_field`]s.
pub fn proc_file(pid: u32, file: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()
}

/// The number of field `name` (with its colon) of a `/proc/<pid>/status` or `smaps_rollup`
/// text: kB for the memory fields, a count for `Threads:`, 0 or 1 for `THP_enabled:`.
pub fn status_field(status: &str, name: &str) -> Option<f64> {
    status
        .lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// kB to MiB, to one decimal.
pub fn kib_to_mib(kib: f64) -> f64 {
    (kib / 1024.0 * 10.0).round() / 10.0
}

/// A workspace binary: from `TILLSTREAM_BIN_DIR`, else next to this one (the same
/// profile's target folder: build both with `cargo build --release -p tillstream -p
/// tillstream-bench`).
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let dir = match std::env::var("TILLSTREAM_BIN_DIR") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => std::env::current_exe()?
            .parent()
            .context("this binary has no folder")?
            .to_path_buf(),
    };
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} missing: build it with `cargo build --release -p tillstream -p tillstream-bench`",
        path.display()
    );
    Ok(path)
}

/// The first of `n` consecutive free ports (the ops endpoints of `tillstream up`).
fn free_port_run(n: u16) -> Option<u16> {
    (0..200).find_map(|attempt| {
        let base = 20_000 + ((std::process::id() as u16).wrapping_mul(7) % 20_000) + attempt * 13;
        let all_free = (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        all_free.then_some(base)
    })
}

#[cfg(test)]
mod tests {
    use super::established_to;

    #[test]
    fn connections_are_counted_by_local_port_and_state() {
        // 127.0.0.1:8080 listening (0A), two clients connected to it (01) whose own sides
        // (local port 50000, 50001) are not counted, and one closing (06).
        let table = "  sl  local_address rem_address   st tx_queue rx_queue
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000
   2: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000
   3: 0100007F:1F90 0100007F:C351 01 00000000:00000000 00:00000000 00000000
   4: 0100007F:C351 0100007F:1F90 01 00000000:00000000 00:00000000 00000000
   5: 0100007F:1F90 0100007F:C352 06 00000000:00000000 00:00000000 00000000
";
        assert_eq!(established_to(table, &[8080]), 2);
        assert_eq!(established_to(table, &[8080, 50000]), 3);
        assert_eq!(established_to(table, &[9090]), 0);
    }
}
