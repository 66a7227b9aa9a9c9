//! What the figures were measured on.

use tillstream_testkit::{nats_url, postgres_url};

pub async fn describe() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|m| m.trim().to_owned());
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok());
    // Whether connections to Postgres are encrypted: the platform's and pgbench's are made
    // as this one is (`runtime::postgres::connect_options`: no TLS on loopback unless the
    // URL asks), and TLS on loopback cost pgbench a fifth of its throughput here and
    // PlaceOrder 10–22 % (docs/performance.md, "TLS to Postgres on loopback, measured").
    let connected = match tillstream_runtime::postgres::connect_options(&postgres_url()) {
        Ok(options) => sqlx::PgPool::connect_with(options).await.ok(),
        Err(_) => None,
    };
    let (postgres, postgres_tls) = match connected {
        Some(pool) => (
            sqlx::query_scalar::<_, String>("SHOW server_version")
                .fetch_one(&pool)
                .await
                .ok(),
            sqlx::query_scalar::<_, bool>(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            )
            .fetch_one(&pool)
            .await
            .ok(),
        ),
        None => (None, None),
    };
    let nats = match async_nats::connect(nats_url()).await {
        Ok(client) => Some(client.server_info().version),
        Err(_) => None,
    };
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu_model": model,
        "memory_gib": memory_kib.map(|k| (k as f64 / 1024.0 / 1024.0).round()),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()),
        "postgres": postgres,
        "postgres_tls": postgres_tls,
        "nats_server": nats,
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        // `[madvise]` here lets the services' allocator map its heap in 2 MiB pages
        // (docs/performance.md, "Idle memory and huge pages")
        "transparent_huge_pages": std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok().map(|s| s.trim().to_owned()),
        "allocator_env": crate::load::platform::allocator_env()
            .into_iter()
            .map(|(name, value)| (name, serde_json::Value::String(value)))
            .collect::<serde_json::Map<_, _>>(),
        "note": "load generator, Postgres and NATS share the machine",
    })
}
