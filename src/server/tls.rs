//! HTTPS: the TLS acceptor built once at startup from `--tls-cert` and `--tls-key`, and the
//! per-connection handshake. ALPN offers `h2` first, so browsers multiplex every stream of an
//! origin over one connection instead of stopping at six.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pki_types::pem::PemObject;
use pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::TlsFiles;

/// How long a client may take to finish the handshake before its connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the certificate or key cannot be used; each names the flag and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{flag} {}: cannot read the file", path.display())]
    Read {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{flag} {}: not valid PEM", path.display())]
    Pem {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: pki_types::pem::Error,
    },
    #[error("--tls-cert {}: no CERTIFICATE block in the file", .0.display())]
    NoCertificate(PathBuf),
    #[error("--tls-key {}: no PRIVATE KEY block in the file", .0.display())]
    NoKey(PathBuf),
    #[error("--tls-key {}: cannot be used with --tls-cert {}", key.display(), cert.display())]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// Reads the PEM certificate chain and private key and builds the acceptor, offering `h2` and
/// `http/1.1` by ALPN. The key must match the chain's first certificate.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let certs = read_certificates(&files.cert)?;
    let key = read_key(&files.key)?;
    // Name the provider rather than rely on a process default: more than one may be compiled in.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let unusable = |source| TlsError::Unusable {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(unusable)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(unusable)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // A live HTTP/1 stream takes over its connection's sending key and drops the rest of
    // rustls's state (docs/architecture.md#tls-streams).
    config.enable_secret_extraction = true;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Completes the server side of the handshake, or gives up after [`HANDSHAKE_TIMEOUT`].
/// Failures are the client's doing (plain HTTP, an untrusted certificate, a stalled peer), so
/// they are logged quietly and the connection is dropped.
pub async fn handshake(acceptor: TlsAcceptor, stream: TcpStream) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(%error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
            None
        }
    }
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read("--tls-cert", path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            flag: "--tls-cert",
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("--tls-key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| match source {
        pki_types::pem::Error::NoItemsFound => TlsError::NoKey(path.to_owned()),
        source => TlsError::Pem {
            flag: "--tls-key",
            path: path.to_owned(),
            source,
        },
    })
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.to_owned(),
        source,
    })
}

impl crate::edge::OverTcp for TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a fresh self-signed certificate and its key; returns their paths.
    fn write_pair(dir: &Path, name: &str) -> TlsFiles {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(["localhost".to_owned()]).expect("certificate");
        let files = TlsFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("cert written");
        std::fs::write(&files.key, signing_key.serialize_pem()).expect("key written");
        files
    }

    fn message(files: &TlsFiles) -> String {
        match acceptor(files) {
            Ok(_) => panic!("{files:?} was accepted"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn a_matching_pair_builds_an_acceptor_offering_h2_first() {
        let dir = tempfile::tempdir().expect("temp dir");
        let acceptor = acceptor(&write_pair(dir.path(), "a")).expect("acceptor");
        assert_eq!(
            acceptor.config().alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn a_missing_file_is_named_with_its_flag() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut files = write_pair(dir.path(), "a");
        files.key = dir.path().join("nowhere.key");
        assert_eq!(
            message(&files),
            format!("--tls-key {}: cannot read the file", files.key.display())
        );
    }

    #[test]
    fn files_of_the_wrong_kind_are_named_with_their_flag() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = write_pair(dir.path(), "a");
        let swapped = TlsFiles {
            cert: files.key.clone(),
            key: files.cert.clone(),
        };
        assert_eq!(
            message(&swapped),
            format!(
                "--tls-cert {}: no CERTIFICATE block in the file",
                swapped.cert.display()
            )
        );
        let no_key = TlsFiles {
            cert: files.cert.clone(),
            key: files.cert.clone(),
        };
        assert_eq!(
            message(&no_key),
            format!(
                "--tls-key {}: no PRIVATE KEY block in the file",
                no_key.key.display()
            )
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mine = write_pair(dir.path(), "mine");
        let theirs = write_pair(dir.path(), "theirs");
        let mixed = TlsFiles {
            cert: mine.cert,
            key: theirs.key,
        };
        assert_eq!(
            message(&mixed),
            format!(
                "--tls-key {}: cannot be used with --tls-cert {}",
                mixed.key.display(),
                mixed.cert.display()
            )
        );
    }
}
