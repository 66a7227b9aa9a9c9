//! The test harness shared by every integration test.
//!
//! - [`TestEnv`] names a fresh set of Postgres databases and a NATS namespace for one
//!   test, and removes them afterwards, so tests run in parallel on the machine's real
//!   Postgres and NATS without seeing each other.
//! - [`eventually`] awaits a condition with a deadline; tests never sleep a guess.
//! - [`CuttableProxy`] forwards TCP to a server and can cut the link, to make NATS (or
//!   Postgres) unreachable for one component without stopping the shared server.
//! - [`workload`] makes a synthetic log of customers and orders and publishes it.
//! - [`process`] runs the real service binaries as children of a test (start, await
//!   `/readyz`, `kill -9`, restart, logs on failure); [`nats_server::PrivateNats`] is a
//!   `nats-server` of the test's own that it may kill and restart on the same store, and
//!   [`postgres_server::PrivatePostgres`] the same for PostgreSQL
//!   ([`TestEnv::on_postgres`] puts a test's databases there).
//!
//! `TILLSTREAM_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) and
//! `TILLSTREAM_TEST_NATS_URL` (default `nats://127.0.0.1:4222`) point at the servers.

pub mod nats_server;
pub mod postgres_server;
pub mod process;
pub mod workload;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tillstream_events::Namespace;
use tillstream_runtime::postgres;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub fn postgres_url() -> String {
    std::env::var("TILLSTREAM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn nats_url() -> String {
    std::env::var("TILLSTREAM_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// One test's private resources: databases named `<id>_<suffix>` and the namespace `<id>`.
pub struct TestEnv {
    pub id: String,
    pub namespace: Namespace,
    pub data_dir: std::path::PathBuf,
    /// The server the databases live on (the machine's, unless [`TestEnv::on_postgres`]).
    postgres: String,
    databases: std::sync::Mutex<Vec<String>>,
}

impl TestEnv {
    pub fn new() -> Self {
        let id = format!("ts{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let data_dir = std::env::temp_dir().join(&id);
        TestEnv {
            namespace: Namespace::new(id.clone()).expect("generated namespaces are valid"),
            data_dir,
            id,
            postgres: postgres_url(),
            databases: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// This environment with its databases on the server at `url` (a private one).
    pub fn on_postgres(mut self, url: String) -> Self {
        self.postgres = url;
        self
    }

    /// The URL of this test's database `<id>_<suffix>` (created on first use by the apps,
    /// or by [`TestEnv::database`]). It is dropped by [`TestEnv::cleanup`].
    pub fn database_url(&self, suffix: &str) -> String {
        let name = format!("{}_{suffix}", self.id);
        self.databases
            .lock()
            .expect("not poisoned")
            .push(name.clone());
        postgres::with_database(&self.postgres, &name).expect("test Postgres URL is valid")
    }

    /// A pool on this test's database `<id>_<suffix>`, which something else created.
    pub fn connect(&self, suffix: &str) -> sqlx_pool::PgPool {
        let url = postgres::with_database(&self.postgres, &format!("{}_{suffix}", self.id))
            .expect("test Postgres URL is valid");
        postgres::pool(&url, 5).expect("pool")
    }

    /// Creates the database and returns a pool on it.
    pub async fn database(&self, suffix: &str) -> (String, sqlx_pool::PgPool) {
        let url = self.database_url(suffix);
        postgres::ensure_database(&url)
            .await
            .expect("create test database");
        let pool = postgres::pool(&url, 5).expect("pool");
        (url, pool)
    }

    /// A NATS client and JetStream context with this test's streams created.
    pub async fn jetstream(&self) -> (async_nats::Client, async_nats::jetstream::Context) {
        let client = async_nats::connect(nats_url()).await.expect("NATS answers");
        let js = async_nats::jetstream::new(client.clone());
        tillstream_runtime::nats::ensure_streams(&js, &self.namespace, 1)
            .await
            .expect("test streams");
        (client, js)
    }

    /// Drops the databases, deletes the namespace's streams and the data folder.
    pub async fn cleanup(self) {
        let names = self.databases.lock().expect("not poisoned").clone();
        for name in names {
            if let Ok(url) = postgres::with_database(&self.postgres, &name) {
                let _ = postgres::drop_database(&url).await;
            }
        }
        if let Ok(client) = async_nats::connect(nats_url()).await {
            let js = async_nats::jetstream::new(client);
            let _ = tillstream_runtime::nats::delete_streams(&js, &self.namespace).await;
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

/// Re-exported so tests need no direct sqlx dependency for pools.
pub mod sqlx_pool {
    pub use tillstream_runtime::postgres::PgPool;
}

/// Polls `check` until it returns `Some`, or panics after `deadline` naming `what`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// A TCP forwarder in front of a server. While cut, it drops every connection at once,
/// so the client sees the server as unreachable; restoring lets new connections through.
pub struct CuttableProxy {
    addr: SocketAddr,
    link: std::sync::Arc<std::sync::Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl CuttableProxy {
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let link = std::sync::Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let (accept_link, accept_stop) = (link.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = accept_stop.cancelled() => break,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                let token = accept_link.lock().expect("not poisoned").clone();
                if token.is_cancelled() {
                    continue; // cut: drop the connection at once
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Ok(CuttableProxy { addr, link, stop })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open connection and refuses new ones until [`CuttableProxy::restore`].
    pub fn cut(&self) {
        let token = self.link.lock().expect("not poisoned");
        token.cancel();
    }

    pub fn restore(&self) {
        *self.link.lock().expect("not poisoned") = CancellationToken::new();
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut();
    }
}
