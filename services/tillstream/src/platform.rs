//! Composition of every service into one process.

use std::net::SocketAddr;
use std::path::PathBuf;

use tillstream_runtime::{Shutdown, postgres};

/// Where everything lives. Databases are `<database_prefix>_users`, `_orders`, `_reads` on
/// the Postgres server of `postgres_url`.
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    pub postgres_url: String,
    pub database_prefix: String,
    pub nats_url: String,
    pub namespace: String,
    pub stream_replicas: usize,
    pub data_dir: PathBuf,
    pub user_grpc_addr: SocketAddr,
    pub order_grpc_addr: SocketAddr,
    pub gateway_http_addr: SocketAddr,
    /// Ops endpoints of user, order, user relay, order relay and projector, in that order.
    pub ops_addrs: [SocketAddr; 5],
    pub db_pool_size: u32,
}

impl PlatformConfig {
    /// Every listener on a random loopback port.
    pub fn on_random_ports(
        postgres_url: String,
        database_prefix: String,
        nats_url: String,
        namespace: String,
        data_dir: PathBuf,
    ) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        PlatformConfig {
            postgres_url,
            database_prefix,
            nats_url,
            namespace,
            stream_replicas: 1,
            data_dir,
            user_grpc_addr: any,
            order_grpc_addr: any,
            gateway_http_addr: any,
            ops_addrs: [any; 5],
            db_pool_size: 10,
        }
    }

    pub fn database_url(&self, service: &str) -> Result<String, postgres::PostgresError> {
        postgres::with_database(
            &self.postgres_url,
            &format!("{}_{service}", self.database_prefix),
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error(transparent)]
    Postgres(#[from] postgres::PostgresError),
    #[error("user service: {0}")]
    User(#[from] tillstream_user::app::AppError),
    #[error("order service: {0}")]
    Order(#[from] tillstream_order::app::AppError),
    #[error("relay: {0}")]
    Relay(#[from] tillstream_relay::app::AppError),
    #[error("projector: {0}")]
    Projector(#[from] tillstream_projections::app::AppError),
    #[error("gateway: {0}")]
    Gateway(#[from] tillstream_gateway::app::AppError),
}

/// Addresses a client needs.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub user_grpc: SocketAddr,
    pub order_grpc: SocketAddr,
    pub gateway_http: SocketAddr,
    pub ops: [SocketAddr; 5],
}

pub struct Platform {
    user: tillstream_user::App,
    order: tillstream_order::App,
    user_relay: tillstream_relay::App,
    order_relay: tillstream_relay::App,
    projector: tillstream_projections::App,
    gateway: tillstream_gateway::App,
}

impl Platform {
    /// Creates databases, applies migrations, generates development keys on first start and
    /// binds every listener. Streams are created by the relays and the projector as they start.
    pub async fn build(config: PlatformConfig) -> Result<Self, PlatformError> {
        let users_db = config.database_url("users")?;
        let orders_db = config.database_url("orders")?;
        let reads_db = config.database_url("reads")?;
        // The user service first: it generates the signing keys the others verify with.
        let user = tillstream_user::App::build(tillstream_user::Config {
            database_url: users_db.clone(),
            db_pool_size: config.db_pool_size,
            grpc_addr: config.user_grpc_addr,
            ops_addr: config.ops_addrs[0],
            data_dir: config.data_dir.clone(),
            token_lifetime_secs: 3600,
        })
        .await?;
        let order = tillstream_order::App::build(tillstream_order::Config {
            database_url: orders_db.clone(),
            db_pool_size: config.db_pool_size,
            grpc_addr: config.order_grpc_addr,
            ops_addr: config.ops_addrs[1],
            data_dir: config.data_dir.clone(),
        })
        .await?;
        let relay = |database_url: String, ops_addr| tillstream_relay::Config {
            database_url,
            name: "jetstream".to_owned(),
            nats_url: config.nats_url.clone(),
            namespace: config.namespace.clone(),
            stream_replicas: config.stream_replicas,
            batch_size: 500,
            ops_addr,
        };
        let user_relay = tillstream_relay::App::build(relay(users_db, config.ops_addrs[2])).await?;
        let order_relay =
            tillstream_relay::App::build(relay(orders_db, config.ops_addrs[3])).await?;
        let projector = tillstream_projections::App::build(tillstream_projections::Config {
            database_url: reads_db.clone(),
            nats_url: config.nats_url.clone(),
            namespace: config.namespace.clone(),
            stream_replicas: config.stream_replicas,
            ops_addr: config.ops_addrs[4],
        })
        .await?;
        let gateway = tillstream_gateway::App::build(tillstream_gateway::Config {
            database_url: reads_db,
            db_pool_size: config.db_pool_size,
            http_addr: config.gateway_http_addr,
        })
        .await?;
        Ok(Platform {
            user,
            order,
            user_relay,
            order_relay,
            projector,
            gateway,
        })
    }

    pub fn addresses(&self) -> Addresses {
        Addresses {
            user_grpc: self.user.grpc_addr(),
            order_grpc: self.order.grpc_addr(),
            gateway_http: self.gateway.http_addr(),
            ops: [
                self.user.ops_addr(),
                self.order.ops_addr(),
                self.user_relay.ops_addr(),
                self.order_relay.ops_addr(),
                self.projector.ops_addr(),
            ],
        }
    }

    /// Runs every part until `shutdown` fires. A part that fails stops the others.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), PlatformError> {
        let stop_all = |result: Result<(), PlatformError>| {
            if result.is_err() {
                shutdown.cancel();
            }
            result
        };
        let (user, order, user_relay, order_relay, projector, gateway) = tokio::join!(
            async { stop_all(self.user.run(shutdown.clone()).await.map_err(Into::into)) },
            async { stop_all(self.order.run(shutdown.clone()).await.map_err(Into::into)) },
            async {
                stop_all(
                    self.user_relay
                        .run(shutdown.clone())
                        .await
                        .map_err(Into::into),
                )
            },
            async {
                stop_all(
                    self.order_relay
                        .run(shutdown.clone())
                        .await
                        .map_err(Into::into),
                )
            },
            async {
                stop_all(
                    self.projector
                        .run(shutdown.clone())
                        .await
                        .map_err(Into::into),
                )
            },
            async { stop_all(self.gateway.run(shutdown.clone()).await.map_err(Into::into)) },
        );
        user?;
        order?;
        user_relay?;
        order_relay?;
        projector?;
        gateway
    }
}
