//! Building and running the user service.

use std::net::SocketAddr;
use std::time::Duration;

use tillstream_proto::user::v1::user_service_server::UserServiceServer;
use tillstream_runtime::event_store::{self, CommandBus};
use tillstream_runtime::ops::{self, Readiness};
use tillstream_runtime::postgres::{self, PostgresReady};
use tillstream_runtime::tokens::{KeyPaths, TokenIssuer, TokenVerifier};
use tillstream_runtime::{Shutdown, grpc};
use tokio::net::TcpListener;

use crate::Config;
use crate::credentials::Credentials;
use crate::grpc::UserGrpc;

/// Largest request the service decodes; larger ones are refused with RESOURCE_EXHAUSTED.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Postgres(#[from] postgres::PostgresError),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Tokens(#[from] tillstream_runtime::tokens::TokenError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("ops server failed: {0}")]
    Ops(#[source] std::io::Error),
}

pub struct App {
    grpc: TcpListener,
    ops: TcpListener,
    service: UserGrpc,
    readiness: Readiness,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr).await.map_err(|source| AppError::Bind { addr, source })
}

impl App {
    /// Creates the database if needed, applies migrations, loads (or generates) the
    /// signing keys and binds the listeners. Nothing is served until [`App::run`].
    pub async fn build(config: Config) -> Result<Self, AppError> {
        postgres::ensure_database(&config.database_url).await?;
        let pool = postgres::pool(&config.database_url, config.db_pool_size)?;
        event_store::migrate(&pool).await?;
        let mut migrator = sqlx::migrate!("./migrations");
        migrator.set_ignore_missing(true);
        migrator.run(&pool).await?;

        let keys = KeyPaths::in_dir(&config.data_dir);
        keys.ensure_generated()?;
        let service = UserGrpc {
            commands: CommandBus::new(pool.clone(), ()),
            credentials: Credentials::new(pool.clone()),
            issuer: TokenIssuer::load(&keys, Duration::from_secs(config.token_lifetime_secs))?,
            verifier: TokenVerifier::load(&keys)?,
        };
        Ok(App {
            grpc: bind(config.grpc_addr).await?,
            ops: bind(config.ops_addr).await?,
            service,
            readiness: Readiness::default().with(PostgresReady { name: "postgres", pool }),
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn ops_addr(&self) -> SocketAddr {
        self.ops.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves gRPC (with `grpc.health.v1`) and the ops endpoints until `shutdown` fires.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), AppError> {
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<UserServiceServer<UserGrpc>>()
            .await;
        let service = UserServiceServer::new(self.service)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let router = tonic::transport::Server::builder()
            .timeout(Duration::from_secs(30))
            .add_service(health)
            .add_service(service);
        let ops_server = ops::serve(self.ops, ops::router(self.readiness), shutdown.clone());
        let grpc_server = grpc::serve(router, self.grpc, shutdown);
        let (grpc_result, ops_result) = tokio::join!(grpc_server, ops_server);
        grpc_result?;
        ops_result.map_err(AppError::Ops)?;
        Ok(())
    }
}
