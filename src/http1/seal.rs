//! TLS for a live event stream on herald's HTTP/1 path: once a TLS 1.3 connection's request has
//! opened a stream, rustls hands over its sending key (the interface it offers for kernel TLS)
//! and the connection's rustls state, buffers and all, is dropped. From then on a [`Seal`]
//! turns the stream's bytes into TLS 1.3 records itself, with aws-lc's AEAD, and what the
//! client sends is discarded unread, as on a plain stream. This is what keeps an idle TLS
//! stream near a plain one's size (docs/architecture.md#tls-streams; SECURITY.md#tls).

use aws_lc_rs::aead::{self, Aad, LessSafeKey, UnboundKey};
use rustls::crypto::cipher::{Iv, Nonce, OutboundChunks, make_tls13_aad};
use rustls::{
    ConnectionTrafficSecrets, ContentType, ProtocolVersion, ServerConnection, SupportedCipherSuite,
};

/// The largest plaintext one TLS record carries (RFC 8446, section 5.1).
const MAX_FRAGMENT: usize = 16 * 1024;

/// The sending half of a TLS 1.3 connection after its handshake and requests.
///
/// Records are sealed here with aws-lc's AEAD, as RFC 8446 section 5.2 lays them out, rather
/// than by rustls's own encrypter: rustls seals AES-GCM with aws-lc's TLS record key, which
/// takes the first record it seals to be the connection's first, and a stream is taken over
/// after the handshake's tickets and the answers before it.
pub struct Seal {
    key: LessSafeKey,
    iv: Iv,
    /// The next record's sequence number.
    seq: u64,
    /// Records the key may seal before an attacker gains an edge (rustls's limit for the
    /// suite); rustls would update the key there, a stream ends and is resumed instead.
    limit: u64,
}

/// Why a stream's bytes could not be sealed: its connection must end.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the TLS key has sealed as many records as it safely may")]
    KeyWornOut,
    #[error("TLS record encryption failed")]
    Encrypt,
}

impl Seal {
    /// Whether [`Seal::take_over`] can take `connection` once its requests are answered: TLS
    /// 1.3 with one of the three AEAD suites this seals with.
    pub fn can_take_over(connection: &ServerConnection) -> bool {
        use rustls::CipherSuite::{
            TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
        };
        connection.protocol_version() == Some(ProtocolVersion::TLSv1_3)
            && matches!(
                connection
                    .negotiated_cipher_suite()
                    .map(|suite| suite.suite()),
                Some(
                    TLS13_AES_128_GCM_SHA256
                        | TLS13_AES_256_GCM_SHA384
                        | TLS13_CHACHA20_POLY1305_SHA256
                )
            )
    }

    /// Takes over the sending side of `connection`: `None` unless it is TLS 1.3, its handshake
    /// is done, and it has nothing left to send.
    pub fn take_over(connection: ServerConnection) -> Option<Self> {
        let SupportedCipherSuite::Tls13(suite) = connection.negotiated_cipher_suite()? else {
            return None;
        };
        let limit = suite.common.confidentiality_limit;
        let (seq, secrets) = connection.dangerous_extract_secrets().ok()?.tx;
        let (algorithm, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            // Not a suite `can_take_over` lets onto this path.
            _ => return None,
        };
        let key = LessSafeKey::new(UnboundKey::new(algorithm, key.as_ref()).ok()?);
        Some(Self {
            key,
            iv,
            seq,
            limit,
        })
    }

    /// Seals `parts` into a buffer of its own, followed by a close_notify if `last`.
    pub fn sealed(&mut self, parts: &[&[u8]], last: bool) -> Result<Vec<u8>, SealError> {
        let len: usize = parts.iter().map(|part| part.len()).sum();
        let mut out = Vec::with_capacity(len + 64);
        self.seal(parts, &mut out)?;
        if last {
            self.close_notify(&mut out)?;
        }
        Ok(out)
    }

    /// Seals `parts`, in order, as application data: one record per 16 KiB, appended to `out`.
    pub fn seal(&mut self, parts: &[&[u8]], out: &mut Vec<u8>) -> Result<(), SealError> {
        let mut rest = OutboundChunks::new(parts);
        while !rest.is_empty() {
            let (record, after) = rest.split_at(MAX_FRAGMENT);
            self.seal_record(ContentType::ApplicationData, &record, out)?;
            rest = after;
        }
        Ok(())
    }

    /// Appends the alert that tells the client the stream ended here, not by a cut.
    pub fn close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), SealError> {
        // A warning-level close_notify (RFC 8446, section 6.1).
        let alert = OutboundChunks::Single(&[1, 0]);
        self.seal_record(ContentType::Alert, &alert, out)
    }

    /// One record: the header (which is also the AEAD's additional data), the plaintext and
    /// its true content type sealed in place, then the tag (RFC 8446, sections 5.2 and 5.3).
    fn seal_record(
        &mut self,
        typ: ContentType,
        plaintext: &OutboundChunks<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), SealError> {
        if self.seq >= self.limit {
            return Err(SealError::KeyWornOut);
        }
        let sealed_len = plaintext.len() + 1 + self.key.algorithm().tag_len();
        let header = make_tls13_aad(sealed_len);
        out.reserve(header.len() + sealed_len);
        out.extend_from_slice(&header);
        let start = out.len();
        plaintext.copy_to_vec(out);
        out.push(u8::from(typ));
        let nonce = aead::Nonce::assume_unique_for_key(Nonce::new(&self.iv, self.seq).0);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut out[start..])
            .map_err(|_| SealError::Encrypt)?;
        out.extend_from_slice(tag.as_ref());
        self.seq += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::Arc;

    use super::*;

    fn configs(
        suite: rustls::CipherSuite,
    ) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        provider
            .cipher_suites
            .retain(|supported| supported.suite() == suite);
        assert_eq!(provider.cipher_suites.len(), 1, "{suite:?} is offered");
        let provider = Arc::new(provider);
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(["localhost".to_owned()]).expect("certificate");
        let key = pki_types::PrivateKeyDer::try_from(signing_key.serialize_der()).expect("key");
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .expect("server config");
        server.enable_secret_extraction = true;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).expect("root");
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// Moves what `from` has to send into `to`; answers the plaintext `to` read.
    fn pass(from: &mut rustls::Connection, to: &mut rustls::Connection) -> Vec<u8> {
        let mut wire = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut wire).expect("write_tls");
        }
        deliver(&wire, to)
    }

    /// Feeds `wire` to `to`; answers the plaintext it read.
    fn deliver(mut wire: &[u8], to: &mut rustls::Connection) -> Vec<u8> {
        let mut plain = Vec::new();
        while !wire.is_empty() {
            to.read_tls(&mut wire).expect("read_tls");
            to.process_new_packets().expect("records the peer accepts");
            let _ = to.reader().read_to_end(&mut plain);
        }
        plain
    }

    /// A client and a server connection with their handshake done, one request read and the
    /// start of an answer written through rustls, as herald does before a stream goes live.
    fn connected(suite: rustls::CipherSuite) -> (rustls::Connection, ServerConnection) {
        let (server_config, client_config) = configs(suite);
        let server = ServerConnection::new(server_config).expect("server");
        let name = pki_types::ServerName::try_from("localhost").expect("name");
        let client = rustls::ClientConnection::new(client_config, name).expect("client");
        let (mut client, mut server) = (
            rustls::Connection::Client(client),
            rustls::Connection::Server(server),
        );
        while client.is_handshaking() || server.is_handshaking() {
            pass(&mut client, &mut server);
            pass(&mut server, &mut client);
        }
        client
            .writer()
            .write_all(b"GET /events HTTP/1.1\r\n\r\n")
            .unwrap();
        let request = pass(&mut client, &mut server);
        assert_eq!(request, b"GET /events HTTP/1.1\r\n\r\n");
        server.writer().write_all(b"HTTP/1.1 200 OK\r\n").unwrap();
        assert_eq!(pass(&mut server, &mut client), b"HTTP/1.1 200 OK\r\n");
        let rustls::Connection::Server(server) = server else {
            unreachable!("made as a server")
        };
        (client, server)
    }

    use rustls::CipherSuite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };

    const SUITES: [rustls::CipherSuite; 3] = [
        TLS13_AES_128_GCM_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS13_CHACHA20_POLY1305_SHA256,
    ];

    #[test]
    fn a_client_reads_every_record_sealed_after_the_handshake_in_each_suite() {
        for suite in SUITES {
            let (mut client, server) = connected(suite);
            assert!(Seal::can_take_over(&server), "{suite:?}");
            let mut seal = Seal::take_over(server).expect("a TLS 1.3 connection is taken over");
            // Taken over mid-connection (tickets and an answer went first), then record after
            // record, each on its own: what a live stream does.
            assert!(seal.seq > 0, "{suite:?}");
            for n in 0..64 {
                let event = format!("data: {n}\n\n");
                let mut wire = Vec::new();
                seal.seal(&[event.as_bytes()], &mut wire).unwrap();
                assert_eq!(deliver(&wire, &mut client), event.as_bytes(), "{suite:?}");
            }
        }
    }

    #[test]
    fn a_large_write_spans_several_records_of_at_most_16_kib() {
        let (mut client, server) = connected(TLS13_AES_128_GCM_SHA256);
        let mut seal = Seal::take_over(server).expect("a TLS 1.3 connection is taken over");

        let big = vec![b'x'; 40 * 1024];
        let first = seal.seq;
        let mut wire = Vec::new();
        seal.seal(&[b"b\r\n", b"data: one\n\n", b"\r\n"], &mut wire)
            .unwrap();
        seal.seal(&[&big[..10], &big[10..]], &mut wire).unwrap();
        // One record, then three for 40 KiB: 16 + 16 + 8.
        assert_eq!(seal.seq - first, 4);
        let mut expected = b"b\r\ndata: one\n\n\r\n".to_vec();
        expected.extend_from_slice(&big);
        assert_eq!(deliver(&wire, &mut client), expected);
    }

    #[test]
    fn a_close_notify_ends_the_stream_cleanly_for_the_client() {
        let (mut client, server) = connected(TLS13_AES_256_GCM_SHA384);
        let mut seal = Seal::take_over(server).expect("taken over");
        let ended = seal.sealed(&[b"0\r\n", b"\r\n"], true).unwrap();
        assert_eq!(deliver(&ended, &mut client), b"0\r\n\r\n");
        // A clean end: end of file rather than "no data yet".
        let mut rest = Vec::new();
        assert_eq!(
            client.reader().read_to_end(&mut rest).expect("a clean end"),
            0
        );
    }

    #[test]
    fn a_worn_out_key_seals_nothing_more() {
        let (_, server) = connected(TLS13_CHACHA20_POLY1305_SHA256);
        let mut seal = Seal::take_over(server).expect("taken over");
        seal.limit = seal.seq + 1;
        let mut wire = Vec::new();
        seal.seal(&[b"one"], &mut wire).unwrap();
        let sealed = wire.len();
        assert!(matches!(
            seal.seal(&[b"two"], &mut wire),
            Err(SealError::KeyWornOut)
        ));
        assert_eq!(wire.len(), sealed);
    }

    #[test]
    fn a_connection_with_bytes_still_to_send_is_not_taken_over() {
        let (_, mut server) = connected(TLS13_AES_128_GCM_SHA256);
        server.writer().write_all(b"unsent").unwrap();
        assert!(Seal::take_over(server).is_none());
    }
}
