//! Hosting a gRPC command service: its gRPC listener (with `grpc.health.v1`) and its ops
//! listener, bound at build time (so port 0 can be read back) and served together.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tower::layer::util::{Identity, Stack};
use tower::util::MapResponseLayer;

use crate::Shutdown;
use crate::keepalive::Http2Keepalive;
use crate::ops::{self, Readiness};

/// The router of a command service, with [`oversized_is_resource_exhausted`] applied
/// (callers' errors reported as theirs).
pub type GrpcRouter = tonic::transport::server::Router<
    Stack<MapResponseLayer<fn(GrpcResponse) -> GrpcResponse>, Identity>,
>;
type GrpcResponse = http::Response<tonic::body::Body>;

/// Statuses tonic produces before a handler runs, turned into what they mean to a caller:
/// - a request over the size limit (tonic: OUT_OF_RANGE) is RESOURCE_EXHAUSTED, gRPC's
///   convention and our API's;
/// - bytes that do not decode as the request message (tonic: INTERNAL, as if the server
///   had failed) are INVALID_ARGUMENT: the caller sent them.
fn oversized_is_resource_exhausted(mut response: GrpcResponse) -> GrpcResponse {
    let mapped = response
        .extensions()
        .get::<tonic::Status>()
        .and_then(|s| match s.code() {
            tonic::Code::OutOfRange if s.message().contains("message length too large") => {
                Some(tonic::Status::resource_exhausted(format!(
                    "request larger than the {MAX_MESSAGE_BYTES}-byte limit"
                )))
            }
            tonic::Code::Internal if s.message().contains("failed to decode Protobuf message") => {
                Some(tonic::Status::invalid_argument(format!(
                    "the request is not a valid protobuf message of this method: {}",
                    s.message()
                )))
            }
            _ => None,
        });
    if let Some(status) = mapped {
        let _ = status.add_header(response.headers_mut());
    }
    response
}

/// Largest request a command service decodes; larger ones get RESOURCE_EXHAUSTED.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Deadline of one gRPC call inside the server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("ops server failed: {0}")]
    Ops(#[source] std::io::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("invalid file descriptor set for reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HostError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HostError::Bind { addr, source })
}

fn local(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

pub struct GrpcHost {
    grpc: TcpListener,
    ops: TcpListener,
}

impl GrpcHost {
    pub async fn bind(grpc_addr: SocketAddr, ops_addr: SocketAddr) -> Result<Self, HostError> {
        Ok(GrpcHost {
            grpc: bind(grpc_addr).await?,
            ops: bind(ops_addr).await?,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        local(&self.grpc)
    }

    pub fn ops_addr(&self) -> SocketAddr {
        local(&self.ops)
    }

    /// A server builder with the host's limits, serving `grpc.health.v1` for `service_name`
    /// and gRPC reflection (v1) of `descriptors`, so grpcurl and similar tools need no
    /// local copy of the protos.
    /// With `tls`, the server speaks only TLS. Clients that stop answering pings are
    /// dropped ([`Http2Keepalive::SERVER`]).
    pub async fn router(
        service_name: &str,
        descriptors: &'static [u8],
        tls: Option<&crate::tls::ServerTls>,
    ) -> Result<GrpcRouter, HostError> {
        Self::router_with(service_name, descriptors, tls, Http2Keepalive::SERVER).await
    }

    async fn router_with(
        service_name: &str,
        descriptors: &'static [u8],
        tls: Option<&crate::tls::ServerTls>,
        keepalive: Http2Keepalive,
    ) -> Result<GrpcRouter, HostError> {
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(descriptors)
            .build_v1()?;
        // Older tools (grpcurl before 1.9) speak only the v1alpha protocol.
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(descriptors)
            .build_v1alpha()?;
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status(service_name, tonic_health::ServingStatus::Serving)
            .await;
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let mut server = tonic::transport::Server::builder()
            .timeout(REQUEST_TIMEOUT)
            .http2_keepalive_interval(Some(keepalive.interval))
            .http2_keepalive_timeout(Some(keepalive.timeout))
            .trace_fn(crate::grpc::request_span);
        if let Some(tls) = tls {
            server = server.tls_config(tls.config()?)?;
        }
        let map: fn(GrpcResponse) -> GrpcResponse = oversized_is_resource_exhausted;
        Ok(server
            .layer(MapResponseLayer::new(map))
            .add_service(health)
            .add_service(reflection)
            .add_service(reflection_v1alpha))
    }

    /// Serves `router` and the ops endpoints until `shutdown` fires.
    pub async fn serve(
        self,
        router: GrpcRouter,
        readiness: Readiness,
        shutdown: Shutdown,
    ) -> Result<(), HostError> {
        let ops_server = ops::serve(self.ops, ops::router(readiness), shutdown.clone());
        let grpc_server = crate::grpc::serve(router, self.grpc, shutdown);
        let (grpc_result, ops_result) = tokio::join!(grpc_server, ops_server);
        grpc_result?;
        ops_result.map_err(HostError::Ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2_peer::{self, Peer};

    const DEADLINE: Duration = Duration::from_secs(10);

    /// A command service's gRPC listener with the tests' short pings; the ops listener is
    /// not served.
    async fn grpc_server() -> (SocketAddr, Shutdown) {
        let host = GrpcHost::bind(([127, 0, 0, 1], 0).into(), ([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        let addr = host.grpc_addr();
        let router = GrpcHost::router_with(
            "test",
            // An empty FileDescriptorSet: reflection serves no service.
            &[],
            None,
            h2_peer::KEEPALIVE,
        )
        .await
        .unwrap();
        let shutdown = Shutdown::new();
        tokio::spawn(crate::grpc::serve(router, host.grpc, shutdown.clone()));
        (addr, shutdown)
    }

    #[tokio::test]
    async fn a_client_that_stops_answering_pings_is_dropped() {
        let (addr, _shutdown) = grpc_server().await;
        let mut client = Peer::client(addr).await;
        client.ignore_pings_until_closed(DEADLINE).await;
    }

    #[tokio::test]
    async fn a_client_that_answers_pings_is_kept() {
        let (addr, _shutdown) = grpc_server().await;
        let mut client = Peer::client(addr).await;
        client.answer_pings(5, DEADLINE).await;
    }
}
