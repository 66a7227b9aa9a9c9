//! Building and running a projector process.

use std::net::SocketAddr;

use tillstream_events::Namespace;
use tillstream_runtime::grpc_host::{self, HostError};
use tillstream_runtime::nats::NatsReady;
use tillstream_runtime::ops::{self, Readiness};
use tillstream_runtime::postgres::{self, PostgresReady};
use tillstream_runtime::{Shutdown, StartError, resources};
use tokio::net::TcpListener;

use crate::{Config, Projector};

pub struct App {
    projector: Projector,
    nats: async_nats::Client,
    namespace: Namespace,
    ops: TcpListener,
    readiness: Readiness,
}

/// Applies the read-model schema to `pool`'s database.
pub async fn migrate(pool: &sqlx::PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    migrator().run(pool).await
}

/// The read-model migrations.
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator
}

impl App {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        postgres::ensure_database(&config.database_url).await?;
        let pool = postgres::pool(&config.database_url, 5)?;
        migrate(&pool).await?;
        let client = config.nats.connect("tillstream-projector", false).await?;
        let readiness = Readiness::default()
            .with(PostgresReady {
                name: "postgres",
                pool: pool.clone(),
            })
            .with(NatsReady(client.clone()));
        let namespace = Namespace::new(config.nats.namespace)?;
        Ok(App {
            nats: client.clone(),
            namespace: namespace.clone(),
            projector: Projector::new(pool, client, namespace, config.nats.stream_replicas),
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
        resources::report(self.nats, &self.namespace, "projector", shutdown.clone());
        let ops_server = ops::serve(self.ops, ops::router(self.readiness), shutdown.clone());
        let (_, ops_result) = tokio::join!(self.projector.run(shutdown), ops_server);
        ops_result.map_err(HostError::Ops)
    }
}
