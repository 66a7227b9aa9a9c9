//! Building and running a relay process.

use std::net::SocketAddr;

use tillstream_events::Namespace;
use tillstream_runtime::event_store;
use tillstream_runtime::grpc_host::{self, HostError};
use tillstream_runtime::nats::NatsReady;
use tillstream_runtime::ops::{self, Readiness};
use tillstream_runtime::postgres::{self, PostgresReady};
use tillstream_runtime::{Shutdown, StartError, resources};
use tokio::net::TcpListener;

use crate::{Config, Relay};

pub struct App {
    relay: Relay,
    nats: async_nats::Client,
    namespace: Namespace,
    ops: TcpListener,
    readiness: Readiness,
}

impl App {
    /// Connects (NATS lazily: the relay starts, and catches up, while NATS is down) and
    /// applies the event-store schema, so a relay may start before its command service.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        postgres::ensure_database(&config.database_url).await?;
        let pool = postgres::pool(&config.database_url, 3)?;
        event_store::migrate(&pool).await?;
        let client = config.nats.connect("tillstream-relay", false).await?;
        let namespace = Namespace::new(config.nats.namespace)?;
        let readiness = Readiness::default()
            .with(PostgresReady {
                name: "postgres",
                pool: pool.clone(),
            })
            .with(NatsReady(client.clone()));
        Ok(App {
            nats: client.clone(),
            namespace: namespace.clone(),
            relay: Relay::new(
                pool,
                client,
                namespace,
                config.name,
                config.batch_size,
                config.nats.stream_replicas,
            ),
            ops: grpc_host::bind(config.ops_addr).await?,
            readiness,
        })
    }

    pub fn ops_addr(&self) -> SocketAddr {
        self.ops
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub async fn run(self, shutdown: Shutdown) -> Result<(), HostError> {
        resources::report(self.nats, &self.namespace, "relay", shutdown.clone());
        let ops_server = ops::serve(self.ops, ops::router(self.readiness), shutdown.clone());
        let (_, ops_result) = tokio::join!(self.relay.run(shutdown), ops_server);
        ops_result.map_err(HostError::Ops)
    }
}
