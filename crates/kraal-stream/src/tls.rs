//! HTTPS for the streaming server: a certificate chain and key from PEM files.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig as RustlsConfig;

use crate::config::TlsConfig;
use crate::error::StreamError;

pub(crate) fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, StreamError> {
    let certs = CertificateDer::pem_file_iter(&cfg.cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            StreamError::Config(format!("TLS certificate {}: {e}", cfg.cert_path.display()))
        })?;
    if certs.is_empty() {
        return Err(StreamError::Config(format!(
            "TLS certificate {}: no certificate in the file",
            cfg.cert_path.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key_path)
        .map_err(|e| StreamError::Config(format!("TLS key {}: {e}", cfg.key_path.display())))?;
    let mut config = RustlsConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StreamError::Config(format!("TLS: {e}")))?;
    // Upgrades (SPDY, WebSocket) exist only in HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
