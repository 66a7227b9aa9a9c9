//! Same-run baselines: what this machine does with no tillstream code in the way.
//!
//! - an axum hello-world endpoint, served by this binary and loaded by the same loop and
//!   connection count as the GraphQL scenarios: the ceiling of HTTP on this box;
//! - `pgbench` inserting one row per transaction (durable: `synchronous_commit` on, the
//!   server default) into a scratch database on the same Postgres, at the same client
//!   count as the PlaceOrder scenario: the ceiling of a durable write.

use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tillstream_testkit::TestEnv;

use crate::load::driver::{self, Measured, Shape, round2};

/// Serves `GET /` → `Hello, World!` on a free loopback port and loads it with `shape`.
pub async fn hello_world(shape: Shape) -> anyhow::Result<Measured> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "Hello, World!" }));
    // Stock `axum::serve`, with connections without delay as the gateway's (whose own
    // serve loop, `runtime::http_server`, adds only an idle timer: Fix 22 measured no cost).
    let listener = tillstream_runtime::ops::without_delay(listener);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let http = crate::load::scenarios::Target::http_client(shape.users)?;
    let measured = driver::drive("axum-hello-world", shape, move |_, _| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let response = http.get(&url).send().await.map_err(|e| e.to_string())?;
            let status = response.status();
            response.bytes().await.map_err(|e| e.to_string())?;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("http {}", status.as_u16()))
            }
        }
    })
    .await;
    server.abort();
    measured
}

/// `pgbench` with `clients` connections, each inserting one row per transaction for
/// `duration`, in a scratch database of `env` (dropped with it).
pub async fn pgbench_insert(
    env: &TestEnv,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<serde_json::Value> {
    let (url, pool) = env.database("pgbench").await;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_insert \
         (id bigserial PRIMARY KEY, payload text NOT NULL, at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&pool)
    .await?;
    let synchronous_commit: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&pool)
        .await?;
    let fsync: String = sqlx::query_scalar("SHOW fsync").fetch_one(&pool).await?;
    pool.close().await;
    let script = env.data_dir.join("insert.sql");
    std::fs::create_dir_all(&env.data_dir)?;
    std::fs::write(
        &script,
        "INSERT INTO bench_insert (payload) VALUES ('{\"sku\":\"TEA-1\",\"quantity\":3}');\n",
    )?;
    let seconds = duration.as_secs().max(1).to_string();
    let clients_arg = clients.to_string();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(clients)
        .to_string();
    // On the platform's footing: without TLS where its own connections go without it.
    let without_tls = matches!(
        tillstream_runtime::postgres::connect_options(&url)?.get_ssl_mode(),
        sqlx::postgres::PgSslMode::Disable
    );
    let scratch = url.clone();
    let output = tokio::task::spawn_blocking(move || {
        let mut pgbench = std::process::Command::new("pgbench");
        if without_tls {
            pgbench.env("PGSSLMODE", "disable");
        }
        pgbench
            .args([
                "-n",
                "-c",
                &clients_arg,
                "-j",
                &threads,
                "-T",
                &seconds,
                "-f",
            ])
            .arg(&script)
            .arg(&scratch)
            .output()
    })
    .await?
    .context("running pgbench (is it installed? /usr/bin/pgbench)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed: {}{}",
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    let field = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let tps = field("tps = ").context("pgbench printed no tps")?;
    let latency = field("latency average = ");
    eprintln!("pgbench durable insert, {clients} clients: {tps:.0} tps");
    // Its rows would otherwise be vacuumed (autovacuum's insert threshold) while the next
    // phase is measured.
    let pool = tillstream_runtime::postgres::pool(&url, 1)?;
    sqlx::query("DROP TABLE bench_insert")
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(json!({
        "clients": clients,
        "seconds": duration.as_secs(),
        "tps": tps.round(),
        "latency_average_ms": latency,
        "synchronous_commit": synchronous_commit,
        "fsync": fsync,
    }))
}

/// Has Postgres write out its dirty buffers (`CHECKPOINT`) and returns how long that took,
/// so a write phase starts as clean as the other and does not pay for the one before it.
/// Without the right to (superuser or `pg_checkpoint`), it says so and the phase runs as is.
pub async fn checkpoint() -> Option<f64> {
    let started = std::time::Instant::now();
    let pool = match tillstream_runtime::postgres::pool(&tillstream_testkit::postgres_url(), 1) {
        Ok(pool) => pool,
        Err(error) => {
            eprintln!("no CHECKPOINT before the write phase: {error}");
            return None;
        }
    };
    let done = sqlx::query("CHECKPOINT").execute(&pool).await;
    pool.close().await;
    match done {
        Ok(_) => Some(round2(started.elapsed().as_secs_f64())),
        Err(error) => {
            eprintln!("no CHECKPOINT before the write phase: {error}");
            None
        }
    }
}
