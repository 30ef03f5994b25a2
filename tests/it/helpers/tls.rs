//! HTTPS for the tests: a [`SelfSigned`] certificate for `localhost` and `127.0.0.1` made per
//! test, a client that trusts it alone, and [`spawn_https`], a [`TestApp`] served with it.

use std::net::SocketAddr;
use std::path::PathBuf;

use herald::config::TlsFiles;
use tempfile::TempDir;

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
    let files = certificate.files();
    let mut app = TestApp::spawn_with(|settings| settings.tls = Some(files)).await;
    app.api = Api {
        client: certificate.client(app.addr),
        url: format!("https://localhost:{}", app.addr.port()),
    };
    app
}
