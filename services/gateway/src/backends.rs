//! The command services, as the gateway reaches them: pooled gRPC clients (one HTTP/2
//! connection each, multiplexed) that forward the caller's token and correlation id.
//! The gateway never writes anything itself.

use std::path::PathBuf;
use std::time::Duration;

use tillstream_proto::order::v1::order_service_client::OrderServiceClient;
use tillstream_proto::user::v1::user_service_client::UserServiceClient;
use tillstream_runtime::keepalive::Http2Keepalive;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Deadline of one forwarded command.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("invalid command service URL {url}: {source}")]
    Url {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot read the CA certificate {path}: {source}")]
    Ca {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone)]
pub struct Backends {
    pub users: UserServiceClient<Channel>,
    pub orders: OrderServiceClient<Channel>,
}

impl Backends {
    /// Lazily connected clients: the gateway starts (and serves reads) while a command
    /// service is down; commands then answer UNAVAILABLE until it is back. With `ca`, the
    /// services are reached over TLS and must present a certificate for `tls_domain`.
    pub fn connect(
        user_url: &str,
        order_url: &str,
        ca: Option<&PathBuf>,
        tls_domain: &str,
    ) -> Result<Self, BackendError> {
        let tls = match ca {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| BackendError::Ca {
                    path: path.clone(),
                    source,
                })?;
                Some(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(pem))
                        .domain_name(tls_domain),
                )
            }
            None => None,
        };
        let channel = |url: &str| -> Result<Channel, BackendError> {
            let error = |source| BackendError::Url {
                url: url.to_owned(),
                source,
            };
            let endpoint = Endpoint::from_shared(url.to_owned())
                .map_err(error)?
                .timeout(CALL_TIMEOUT)
                .connect_timeout(Duration::from_secs(3));
            let mut endpoint = Http2Keepalive::CLIENT.client(endpoint);
            if let Some(tls) = &tls {
                endpoint = endpoint.tls_config(tls.clone()).map_err(error)?;
            }
            Ok(endpoint.connect_lazy())
        };
        Ok(Backends {
            users: UserServiceClient::new(channel(user_url)?),
            orders: OrderServiceClient::new(channel(order_url)?),
        })
    }
}
