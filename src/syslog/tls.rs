//! Syslog over TLS (RFC 5425): the server side of `tls://` listeners, on rustls with the ring
//! provider (the one the rest of the binary links). Inside TLS a connection is framed as on
//! `tcp://` (RFC 5425 asks for octet counting; newline framing is read too).

use std::path::PathBuf;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// `--syslog-tls-cert` and `--syslog-tls-key`: PEM files, the certificate chain (the node's
/// own certificate first) and its private key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    pub(super) fn given(&self) -> bool {
        self.cert.is_some() && self.key.is_some()
    }
}

/// The acceptor of `tls://` listeners, or why the files cannot make one.
pub(super) fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, String> {
    let (Some(cert), Some(key)) = (&files.cert, &files.key) else {
        return Err("a TLS listener needs --syslog-tls-cert and --syslog-tls-key".into());
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--syslog-tls-cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--syslog-tls-cert {}: holds no PEM certificate",
            cert.display()
        ));
    }
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--syslog-tls-key {}: {e}", key.display()))?;
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .map_err(|e| {
            format!(
                "--syslog-tls-key {} does not go with --syslog-tls-cert {}: {e}",
                key.display(),
                cert.display()
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
