//! HTTPS for the tests: a [`SelfSigned`] certificate for `localhost` and `127.0.0.1` made per
//! test, clients that trust it alone (reqwest's, or a raw TLS socket), and [`spawn_https`], a
//! [`TestApp`] served with it.

use std::net::SocketAddr;
use std::path::PathBuf;

use herald::config::TlsFiles;
use tempfile::TempDir;
use tokio::io::AsyncReadExt;

use super::api::Api;
use super::app::TestApp;

/// A certificate and its key as PEM files in a temporary directory.
pub struct SelfSigned {
    /// Holds the files for as long as the test needs them.
    _dir: TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
    cert_pem: String,
}

impl SelfSigned {
    pub fn new() -> Self {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("self-signed certificate");
        let dir = TempDir::new().expect("temp dir");
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("cert written");
        std::fs::write(&key_path, signing_key.serialize_pem()).expect("key written");
        Self {
            _dir: dir,
            cert: cert_path,
            key: key_path,
            cert_pem: cert.pem(),
        }
    }

    fn files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }

    /// A raw TLS connection to `addr` that trusts this certificate alone, offering `alpn`.
    pub async fn connect_raw(
        &self,
        addr: SocketAddr,
        alpn: &[&[u8]],
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
        self.connect_over(socket, alpn, rustls::DEFAULT_VERSIONS)
            .await
    }

    /// [`SelfSigned::connect_raw`] over a socket already connected, offering only `versions`.
    pub async fn connect_over(
        &self,
        socket: tokio::net::TcpStream,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        use pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        let certificate = pki_types::CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .expect("PEM certificate");
        roots.add(certificate).expect("a root");
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let name = pki_types::ServerName::try_from("localhost").expect("a name");
        tokio::time::timeout(super::WAIT, connector.connect(name, socket))
            .await
            .expect("handshake in time")
            .expect("handshake")
    }

    /// A client that trusts this certificate alone and finds `localhost` at `addr`.
    pub fn client(&self, addr: SocketAddr) -> reqwest::Client {
        let certificate =
            reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).expect("PEM certificate");
        reqwest::Client::builder()
            .tls_certs_only([certificate])
            .resolve("localhost", addr)
            .build()
            .expect("HTTPS client")
    }
}

/// An in-process server on HTTPS whose `client` and `url` speak to it as `https://localhost`.
pub async fn spawn_https(certificate: &SelfSigned) -> TestApp {
    spawn_https_with(certificate, |_| {}).await
}

/// [`spawn_https`] with settings that `configure` may change first.
pub async fn spawn_https_with(
    certificate: &SelfSigned,
    configure: impl FnOnce(&mut herald::Settings),
) -> TestApp {
    let files = certificate.files();
    let mut app = TestApp::spawn_with(|settings| {
        settings.tls = Some(files);
        configure(settings);
    })
    .await;
    app.api = Api {
        client: certificate.client(app.addr),
        url: format!("https://localhost:{}", app.addr.port()),
    };
    app
}

/// Everything a TLS connection sends until the server ends it.
pub async fn read_tls_until_closed(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(super::WAIT, tls.read(&mut buf))
            .await
            .expect("the server ended the connection in time")
        {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&all).into_owned(),
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}
