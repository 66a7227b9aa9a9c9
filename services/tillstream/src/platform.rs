//! Composition of every service into one process.

use std::net::SocketAddr;
use std::path::PathBuf;

use tillstream_runtime::grpc_host::HostError;
use tillstream_runtime::nats::NatsCredentials;
use tillstream_runtime::tls::ServerTls;
use tillstream_runtime::{Shutdown, StartError, postgres};

/// Where everything lives. Databases are `<database_prefix>_users`, `_orders`, `_reads` on
/// the Postgres server of `postgres_url`.
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    pub postgres_url: String,
    pub database_prefix: String,
    /// NATS server URL, or comma-separated seeds.
    pub nats_url: String,
    /// How every part logs in to NATS (in one process they share one user: `operator`).
    pub nats_credentials: NatsCredentials,
    pub namespace: String,
    pub stream_replicas: usize,
    pub data_dir: PathBuf,
    pub user_grpc_addr: SocketAddr,
    pub order_grpc_addr: SocketAddr,
    pub gateway_http_addr: SocketAddr,
    /// Ops endpoints of user, order, user relay, order relay, projector and predictor, in
    /// that order.
    pub ops_addrs: [SocketAddr; 6],
    pub db_pool_size: u32,
    /// The first admin, created on first start (see the user service's `--admin-email`).
    pub admin_email: Option<String>,
    /// Its password; generated into `<data_dir>/admin-password` when None.
    pub admin_password: Option<String>,
    /// gRPC over TLS with these files; plaintext when None.
    pub tls: Option<ServerTls>,
    /// The CA the gateway trusts to reach the command services over TLS.
    pub tls_ca: Option<PathBuf>,
    /// What the gateway accepts: rate and request limits, introspection, GraphiQL.
    pub gateway_limits: tillstream_gateway::config::Limits,
}

/// How the gateway reaches a command service bound at `addr`.
fn grpc_url(addr: SocketAddr, tls: bool) -> String {
    if tls {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    }
}

impl PlatformConfig {
    /// Every listener on a random loopback port, without a gateway rate limit.
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
            nats_credentials: NatsCredentials::default(),
            namespace,
            stream_replicas: 1,
            data_dir,
            user_grpc_addr: any,
            order_grpc_addr: any,
            gateway_http_addr: any,
            ops_addrs: [any; 6],
            db_pool_size: 10,
            admin_email: None,
            admin_password: None,
            tls: None,
            tls_ca: None,
            // Tests send bursts from one client; a test that checks rate limiting sets it.
            gateway_limits: tillstream_gateway::config::Limits {
                rate_limit_per_second: 0,
                ..Default::default()
            },
        }
    }

    pub fn database_url(&self, service: &str) -> Result<String, postgres::PostgresError> {
        postgres::with_database(
            &self.postgres_url,
            &format!("{}_{service}", self.database_prefix),
        )
    }
}

/// Which part failed, and why.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("{part} could not start: {source}")]
    Start {
        part: &'static str,
        #[source]
        source: StartError,
    },
    #[error("{part} stopped: {source}")]
    Run {
        part: &'static str,
        #[source]
        source: HostError,
    },
}

fn start(part: &'static str) -> impl FnOnce(StartError) -> PlatformError {
    move |source| PlatformError::Start { part, source }
}

/// Addresses a client needs.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub user_grpc: SocketAddr,
    pub order_grpc: SocketAddr,
    pub gateway_http: SocketAddr,
    pub ops: [SocketAddr; 6],
}

pub struct Platform {
    user: tillstream_user::App,
    order: tillstream_order::App,
    user_relay: tillstream_relay::App,
    order_relay: tillstream_relay::App,
    projector: tillstream_projections::App,
    gateway: tillstream_gateway::App,
    predictor: tillstream_predictor::App,
}

impl Platform {
    /// Creates databases, applies migrations, generates development keys on first start and
    /// binds every listener. Streams are created by the relays and the projector as they start.
    pub async fn build(config: PlatformConfig) -> Result<Self, PlatformError> {
        let db = |service| {
            config
                .database_url(service)
                .map_err(|e| start("configuration")(e.into()))
        };
        let (users_db, orders_db, reads_db) = (db("users")?, db("orders")?, db("reads")?);
        let nats = tillstream_runtime::nats::NatsConfig {
            nats_url: config.nats_url.clone(),
            credentials: config.nats_credentials.clone(),
            namespace: config.namespace.clone(),
            stream_replicas: config.stream_replicas,
        };
        // The user service first: it generates the signing keys the others verify with.
        let user = tillstream_user::App::build(tillstream_user::Config {
            database_url: users_db.clone(),
            db_pool_size: config.db_pool_size,
            grpc_addr: config.user_grpc_addr,
            ops_addr: config.ops_addrs[0],
            data_dir: config.data_dir.clone(),
            reads_database_url: reads_db.clone(),
            admin_email: config.admin_email.clone(),
            admin_password: config.admin_password.clone(),
            tls_cert: config.tls.as_ref().map(|t| t.cert.clone()),
            tls_key: config.tls.as_ref().map(|t| t.key.clone()),
            token_lifetime_secs: 3600,
            nats: nats.clone(),
        })
        .await
        .map_err(start("user service"))?;
        let order = tillstream_order::App::build(tillstream_order::Config {
            database_url: orders_db.clone(),
            db_pool_size: config.db_pool_size,
            grpc_addr: config.order_grpc_addr,
            ops_addr: config.ops_addrs[1],
            data_dir: config.data_dir.clone(),
            reads_database_url: reads_db.clone(),
            tls_cert: config.tls.as_ref().map(|t| t.cert.clone()),
            tls_key: config.tls.as_ref().map(|t| t.key.clone()),
            nats: nats.clone(),
        })
        .await
        .map_err(start("order service"))?;
        let relay = |database_url: String, ops_addr| tillstream_relay::Config {
            database_url,
            name: "jetstream".to_owned(),
            nats: nats.clone(),
            batch_size: 500,
            ops_addr,
        };
        let user_relay = tillstream_relay::App::build(relay(users_db, config.ops_addrs[2]))
            .await
            .map_err(start("user relay"))?;
        let order_relay = tillstream_relay::App::build(relay(orders_db, config.ops_addrs[3]))
            .await
            .map_err(start("order relay"))?;
        let projector = tillstream_projections::App::build(tillstream_projections::Config {
            database_url: reads_db.clone(),
            nats: nats.clone(),
            ops_addr: config.ops_addrs[4],
        })
        .await
        .map_err(start("projector"))?;
        let (user_grpc, order_grpc) = (user.grpc_addr(), order.grpc_addr());
        let gateway = tillstream_gateway::App::build(tillstream_gateway::Config {
            database_url: reads_db,
            db_pool_size: config.db_pool_size,
            http_addr: config.gateway_http_addr,
            data_dir: config.data_dir.clone(),
            user_grpc_url: grpc_url(user_grpc, config.tls.is_some()),
            order_grpc_url: grpc_url(order_grpc, config.tls.is_some()),
            grpc_ca: config.tls_ca.clone(),
            grpc_tls_domain: "localhost".to_owned(),
            nats: nats.clone(),
            metrics_buffer: 4096,
            limits: config.gateway_limits.clone(),
        })
        .await
        .map_err(start("gateway"))?;
        let predictor_config = tillstream_predictor::Config {
            ops_addr: config.ops_addrs[5],
            ..tillstream_predictor::Config::with_defaults(nats.clone())
                .map_err(|e| start("predictor")(StartError::Bootstrap(e.to_string())))?
        };
        let predictor = tillstream_predictor::App::build(predictor_config)
            .await
            .map_err(start("predictor"))?;
        Ok(Platform {
            user,
            order,
            user_relay,
            order_relay,
            projector,
            gateway,
            predictor,
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
                self.predictor.ops_addr(),
            ],
        }
    }

    /// Runs every part until `shutdown` fires. A part that fails stops the others.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), PlatformError> {
        let watch = |part: &'static str, result: Result<(), HostError>| {
            result.map_err(|source| {
                shutdown.cancel();
                PlatformError::Run { part, source }
            })
        };
        let (user, order, user_relay, order_relay, projector, gateway, predictor) = tokio::join!(
            async { watch("user service", self.user.run(shutdown.clone()).await) },
            async { watch("order service", self.order.run(shutdown.clone()).await) },
            async { watch("user relay", self.user_relay.run(shutdown.clone()).await) },
            async { watch("order relay", self.order_relay.run(shutdown.clone()).await) },
            async { watch("projector", self.projector.run(shutdown.clone()).await) },
            async { watch("gateway", self.gateway.run(shutdown.clone()).await) },
            async { watch("predictor", self.predictor.run(shutdown.clone()).await) },
        );
        user.and(order)
            .and(user_relay)
            .and(order_relay)
            .and(projector)
            .and(gateway)
            .and(predictor)
    }
}
