//! TLS for the gRPC servers (rustls, through tonic).
//!
//! Production installs point `--tls-cert`/`--tls-key` at their own PEM files. For local use,
//! [`DevCertificates::ensure`] generates once, into `<data_dir>/tls/`, a development CA and
//! a server certificate for `localhost` and `127.0.0.1` signed by it; clients trust
//! `ca.pem`. Nothing of this is ever committed.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read or write {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot generate development certificates: {0}")]
    Generate(#[from] rcgen::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::File {
        path: path.to_owned(),
        source,
    })
}

/// A server's certificate chain and private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ServerTls {
    pub fn config(&self) -> Result<ServerTlsConfig, TlsError> {
        Ok(
            ServerTlsConfig::new()
                .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?)),
        )
    }
}

/// The development CA and server certificate under `<data_dir>/tls/`.
#[derive(Debug, Clone)]
pub struct DevCertificates {
    pub ca: PathBuf,
    pub server: ServerTls,
}

impl DevCertificates {
    /// Generates the CA and server certificate unless they exist.
    pub fn ensure(data_dir: &Path) -> Result<Self, TlsError> {
        let dir = data_dir.join("tls");
        let certs = DevCertificates {
            ca: dir.join("ca.pem"),
            server: ServerTls {
                cert: dir.join("server.pem"),
                key: dir.join("server.key"),
            },
        };
        if certs.ca.exists() && certs.server.cert.exists() && certs.server.key.exists() {
            return Ok(certs);
        }
        std::fs::create_dir_all(&dir).map_err(|source| TlsError::File {
            path: dir.clone(),
            source,
        })?;

        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tillstream development CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::from_params(&ca_params, &ca_key);

        let mut server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "tillstream development server");
        let server_key = KeyPair::generate()?;
        let server_cert = server_params.signed_by(&server_key, &issuer)?;

        let write = |path: &Path, text: String, secret: bool| {
            let result = if secret {
                crate::secret_file::write(path, text.as_bytes())
            } else {
                std::fs::write(path, text)
            };
            result.map_err(|source| TlsError::File {
                path: path.to_owned(),
                source,
            })
        };
        write(&certs.server.key, server_key.serialize_pem(), true)?;
        write(&certs.server.cert, server_cert.pem(), false)?;
        write(&certs.ca, ca_cert.pem(), false)?;
        tracing::info!(ca = %certs.ca.display(), "generated development TLS certificates");
        Ok(certs)
    }

    /// A client configuration trusting the development CA, for `localhost`.
    pub fn client_config(&self) -> Result<ClientTlsConfig, TlsError> {
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)?))
            .domain_name("localhost"))
    }
}
