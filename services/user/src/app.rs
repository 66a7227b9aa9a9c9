//! Building and running the user service.

use std::net::SocketAddr;
use std::time::Duration;

use tillstream_proto::user::v1::user_service_server::{SERVICE_NAME, UserServiceServer};
use tillstream_runtime::event_store::{self, CommandBus};
use tillstream_runtime::grpc_host::{GrpcHost, HostError, MAX_MESSAGE_BYTES};
use tillstream_runtime::ops::Readiness;
use tillstream_runtime::postgres::{self, PostgresReady};
use tillstream_runtime::tokens::{KeyPaths, TokenIssuer, TokenVerifier};
use tillstream_runtime::{Shutdown, StartError, resources};

use std::sync::Arc;

use tillstream_projections::queries::Reads;
use tillstream_runtime::gate::{CachedAccountStatus, Gate};
use tonic::service::interceptor::InterceptedService;

use crate::credentials::Credentials;
use crate::grpc::UserGrpc;
use crate::{Config, bootstrap};

pub struct App {
    host: GrpcHost,
    tls: Option<tillstream_runtime::tls::ServerTls>,
    service: UserGrpc,
    readiness: Readiness,
    nats: async_nats::Client,
    namespace: tillstream_events::Namespace,
}

/// The user service's own migrations (the credentials table).
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator
}

impl App {
    /// Creates the database if needed, applies migrations, loads (or generates) the
    /// signing keys and binds the listeners. Nothing is served until [`App::run`].
    pub async fn build(config: Config) -> Result<Self, StartError> {
        postgres::ensure_database(&config.database_url).await?;
        let pool = postgres::pool(&config.database_url, config.db_pool_size)?;
        event_store::migrate(&pool).await?;
        migrator().run(&pool).await?;

        let keys = KeyPaths::in_dir(&config.data_dir);
        keys.ensure_generated()?;
        let reads = Reads::connect(&config.reads_database_url, config.db_pool_size).await?;
        let reads_ready = reads.readiness();

        let commands = CommandBus::new(pool.clone(), ());
        if let Some(email) = &config.admin_email {
            bootstrap::ensure_admin(
                &commands,
                &pool,
                &config.data_dir,
                email,
                config.admin_password.as_deref(),
            )
            .await
            .map_err(|e| StartError::Bootstrap(e.to_string()))?;
        }
        let service = UserGrpc {
            commands,
            credentials: Credentials::new(pool.clone()),
            issuer: TokenIssuer::load(&keys, Duration::from_secs(config.token_lifetime_secs))?,
            gate: Gate::new(
                TokenVerifier::load(&keys)?,
                Arc::new(CachedAccountStatus::new(reads.clone())),
            ),
            reads,
        };
        Ok(App {
            nats: config.nats.connect("tillstream-user", false).await?,
            namespace: tillstream_events::Namespace::new(config.nats.namespace.clone())?,
            host: GrpcHost::bind(config.grpc_addr, config.ops_addr).await?,
            tls: config.tls(),
            service,
            readiness: Readiness::default()
                .with(PostgresReady {
                    name: "postgres",
                    pool,
                })
                .with(reads_ready),
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.host.grpc_addr()
    }

    pub fn ops_addr(&self) -> SocketAddr {
        self.host.ops_addr()
    }

    /// Serves gRPC (with `grpc.health.v1`) and the ops endpoints until `shutdown` fires.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), HostError> {
        resources::report(self.nats, &self.namespace, "user", shutdown.clone());
        let interceptor = self.service.gate.interceptor();
        let service = InterceptedService::new(
            UserServiceServer::new(self.service).max_decoding_message_size(MAX_MESSAGE_BYTES),
            interceptor,
        );
        let router = GrpcHost::router(
            SERVICE_NAME,
            tillstream_proto::FILE_DESCRIPTOR_SET,
            self.tls.as_ref(),
        )
        .await?
        .add_service(service);
        self.host.serve(router, self.readiness, shutdown).await
    }
}
