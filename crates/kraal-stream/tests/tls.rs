//! HTTPS: the server serves the same endpoints over TLS with a PEM certificate and key.

mod common;

use std::process::Command;
use std::sync::Arc;

use kraal_stream::{ServerConfig, StreamError, TlsConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

#[tokio::test]
async fn https_serves_and_refuses_a_bad_token() {
    let dir = std::env::temp_dir().join(format!("kraal-stream-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let cfg = ServerConfig {
        tls: Some(TlsConfig {
            cert_path: cert.clone(),
            key_path: key.clone(),
        }),
        ..Default::default()
    };
    let (srv, _rt) = common::server(cfg).await;
    let url = srv
        .get_exec_url(common::exec(&["true"], false, false))
        .unwrap();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&cert).unwrap())
        .unwrap();
    let client = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(srv.local_addr())
        .await
        .unwrap();
    let mut tls = TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(
        b"GET /exec/nope HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tls.read(&mut buf).await.unwrap();
    let resp = String::from_utf8_lossy(&buf[..n]);
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    assert!(resp.contains("already used"), "{resp}");

    // A missing key file is a configuration error naming the file.
    let bad = ServerConfig {
        tls: Some(TlsConfig {
            cert_path: cert,
            key_path: dir.join("missing.pem"),
        }),
        ..Default::default()
    };
    let err = kraal_stream::Server::bind(bad, Arc::new(common::FakeRuntime::default()))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, StreamError::Config(m) if m.contains("missing.pem")),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
