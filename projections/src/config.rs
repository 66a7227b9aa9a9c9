//! Settings of the projector: command-line flags, each with an environment variable.

use std::net::SocketAddr;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Database of the read models (created if missing).
    #[arg(
        long = "database-url",
        env = "TILLSTREAM_READS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/tillstream_reads"
    )]
    pub database_url: String,
    /// NATS server URL.
    #[arg(
        long = "nats-url",
        env = "TILLSTREAM_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// Prefix of every stream and subject (empty: the public names).
    #[arg(long = "namespace", env = "TILLSTREAM_NAMESPACE", default_value = "")]
    pub namespace: String,
    /// Replicas of each stream (1 on one machine, 3 in a cluster).
    #[arg(
        long = "stream-replicas",
        env = "TILLSTREAM_STREAM_REPLICAS",
        default_value_t = 1
    )]
    pub stream_replicas: usize,
    /// /healthz, /readyz, /metrics listen address.
    #[arg(
        long = "ops-addr",
        env = "TILLSTREAM_PROJECTOR_OPS_ADDR",
        default_value = "127.0.0.1:9104"
    )]
    pub ops_addr: SocketAddr,
}
