//! Building and running the order service.

use std::net::SocketAddr;

use tillstream_proto::order::v1::order_service_server::{OrderServiceServer, SERVICE_NAME};
use tillstream_runtime::event_store::{self, CommandBus};
use tillstream_runtime::grpc_host::{GrpcHost, HostError, MAX_MESSAGE_BYTES};
use tillstream_runtime::ops::Readiness;
use tillstream_runtime::postgres::{self, PostgresReady};
use tillstream_runtime::tokens::{KeyPaths, TokenVerifier};
use tillstream_runtime::{Shutdown, StartError, resources};

use std::sync::Arc;

use tonic::service::interceptor::InterceptedService;

use tillstream_projections::queries::Reads;
use tillstream_runtime::gate::{CachedAccountStatus, Gate};

use crate::Config;
use crate::grpc::OrderGrpc;

pub struct App {
    host: GrpcHost,
    tls: Option<tillstream_runtime::tls::ServerTls>,
    service: OrderGrpc,
    readiness: Readiness,
    nats: async_nats::Client,
    namespace: tillstream_events::Namespace,
}

impl App {
    /// Creates the database if needed, applies migrations, loads the token verification
    /// key (the user service generates the pair; this service only reads the public key)
    /// and binds the listeners. Nothing is served until [`App::run`].
    pub async fn build(config: Config) -> Result<Self, StartError> {
        postgres::ensure_database(&config.database_url).await?;
        let pool = postgres::pool(&config.database_url, config.db_pool_size)?;
        event_store::migrate(&pool).await?;

        let reads = Reads::connect(&config.reads_database_url, config.db_pool_size).await?;
        let reads_ready = reads.readiness();

        let verifier = TokenVerifier::load(&KeyPaths::in_dir(&config.data_dir))?;
        let service = OrderGrpc {
            commands: CommandBus::new(pool.clone(), ()),
            gate: Gate::new(verifier, Arc::new(CachedAccountStatus::new(reads.clone()))),
            reads,
        };
        Ok(App {
            nats: config.nats.connect("tillstream-order", false).await?,
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
        resources::report(self.nats, &self.namespace, "order", shutdown.clone());
        let interceptor = self.service.gate.interceptor();
        let service = InterceptedService::new(
            OrderServiceServer::new(self.service).max_decoding_message_size(MAX_MESSAGE_BYTES),
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
