//! Both halves of auth for the tests: [`spawn_secured`] servers (tokens signed with [`SECRET`],
//! publishing with [`PUBLISH_KEY`]), tokens and key pairs, the three places a subscriber token
//! is carried ([`Carrier`]), and the shape of a `401` and a `403`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald::Settings;
use herald::auth::{PublishKeys, TokenVerifier};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, COOKIE, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use serde_json::{Value, json};

use super::WAIT;
use super::api::{Api, read_json, send};
use super::app::TestApp;
use super::sse::SseClient;

/// The HS256 secret of [`spawn_secured`] servers.
pub const SECRET: &str = "auth-test-secret-0123456789abcdef";
/// The one publish key of [`spawn_secured`] servers.
pub const PUBLISH_KEY: &str = "auth-test-publish-key-0123456789";

/// The time since the Unix epoch, as token claims count it.
pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
}

/// An HS256 token for `sub` signed with [`SECRET`] that expires `ttl` seconds from now.
pub fn token_for(sub: &str, ttl: i64) -> String {
    let exp = unix_now().as_secs() as i64 + ttl;
    hs256(&json!({ "sub": sub, "exp": exp }))
}

/// `claims` signed with HS256 and [`SECRET`].
pub fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

/// `claims` signed with `algorithm` and `key`.
pub fn sign(algorithm: Algorithm, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).expect("token signed")
}

/// A client that sends `value` as `name` on every request.
pub fn client_with(name: reqwest::header::HeaderName, value: &str) -> reqwest::Client {
    let mut headers = HeaderMap::new();
    headers.insert(name, HeaderValue::from_str(value).expect("header value"));
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

/// A server with both halves of auth on: tokens signed with [`SECRET`], and [`PUBLISH_KEY`].
/// Its `client` carries the publish key, so `publish`, `broadcast` and `get_json` act as a
/// publisher; streams need a client of their own with a token.
pub async fn spawn_secured(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let mut app = TestApp::spawn_with(|s| {
        s.auth.tokens = Some(Arc::new(TokenVerifier::hs256(SECRET.as_bytes())));
        s.auth.publish_keys = Some(Arc::new(PublishKeys::new(&[PUBLISH_KEY])));
        configure(s);
    })
    .await;
    app.api = app.with_client(client_with(AUTHORIZATION, &format!("Bearer {PUBLISH_KEY}")));
    app
}

/// Where a request carries its subscriber token.
#[derive(Debug, Clone, Copy)]
pub enum Carrier {
    Header,
    Cookie,
    Query,
}

impl Carrier {
    pub const ALL: [Carrier; 3] = [Carrier::Header, Carrier::Cookie, Carrier::Query];

    /// A client and URL that request `path` (which has no query) with `token` carried this way.
    pub fn client_and_url(self, app: &Api, path: &str, token: &str) -> (reqwest::Client, String) {
        match self {
            Carrier::Header => (
                client_with(AUTHORIZATION, &format!("Bearer {token}")),
                app.url(path),
            ),
            Carrier::Cookie => (
                client_with(COOKIE, &format!("theme=dark; herald_token={token}")),
                app.url(path),
            ),
            Carrier::Query => (
                reqwest::Client::new(),
                app.url(&format!("{path}?token={token}")),
            ),
        }
    }

    /// Opens the stream at `path` with `token` carried this way and asserts `200`.
    pub async fn open_stream(self, app: &Api, path: &str, token: &str) -> SseClient {
        let (client, url) = self.client_and_url(app, path, token);
        let stream = SseClient::try_open(&client, &url, None).await;
        assert_eq!(stream.status, StatusCode::OK, "{self:?} {path}");
        stream
    }

    /// `GET path` with the token carried this way; the stream (if any) is not read.
    pub async fn get(self, app: &Api, path: &str, token: &str) -> reqwest::Response {
        let (client, url) = self.client_and_url(app, path, token);
        send(client.get(url)).await
    }
}

/// Asserts `401`, a `WWW-Authenticate: Bearer` challenge and a `{"error"}` body.
pub async fn assert_unauthorized(response: reqwest::Response, context: &str) {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{context}");
    let challenge = response
        .headers()
        .get(WWW_AUTHENTICATE)
        .unwrap_or_else(|| panic!("{context}: no WWW-Authenticate"))
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(challenge.starts_with("Bearer"), "{context}: {challenge}");
    assert_error_body(response, context).await;
}

/// Asserts `403` with a `{"error"}` body.
pub async fn assert_forbidden(response: reqwest::Response, context: &str) {
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "{context}");
    assert_error_body(response, context).await;
}

async fn assert_error_body(response: reqwest::Response, context: &str) {
    let (_, body) = read_json(response).await;
    let fields = body
        .as_object()
        .unwrap_or_else(|| panic!("{context}: {body}"));
    assert_eq!(fields.len(), 1, "{context}: {body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{context}: {body}"
    );
}

/// Base64url without padding, as in a JWT.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let group = byte(0) << 16 | byte(1) << 8 | byte(2);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(group >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// A key pair made for one test: the private key (PKCS#8 PEM) signs, the public key (SPKI PEM)
/// is what the server is given.
pub struct KeyPair {
    pub algorithm: Algorithm,
    private_pem: String,
    pub public_pem: String,
}

impl KeyPair {
    /// A fresh pair; an RSA pair is made by `openssl` in `dir`, as `rsa-private.pem` and
    /// `rsa-public.pem`.
    pub fn generate(algorithm: Algorithm, dir: &Path) -> Self {
        let (private_pem, public_pem) = match algorithm {
            Algorithm::ES256 => rcgen_pair(&rcgen::PKCS_ECDSA_P256_SHA256),
            Algorithm::EdDSA => rcgen_pair(&rcgen::PKCS_ED25519),
            // rcgen's ring backend cannot make RSA keys; Debian's openssl can.
            Algorithm::RS256 => openssl_rsa_pair(dir),
            other => panic!("no key pair for {other:?}"),
        };
        Self {
            algorithm,
            private_pem,
            public_pem,
        }
    }

    fn encoding_key(&self) -> EncodingKey {
        let pem = self.private_pem.as_bytes();
        match self.algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
            _ => EncodingKey::from_rsa_pem(pem),
        }
        .expect("private key reads")
    }

    /// A token for `sub`, valid for an hour, signed with the private key.
    pub fn token(&self, sub: &str) -> String {
        let claims = json!({ "sub": sub, "exp": unix_now().as_secs() + 3600 });
        sign(self.algorithm, &claims, &self.encoding_key())
    }
}

fn rcgen_pair(algorithm: &'static rcgen::SignatureAlgorithm) -> (String, String) {
    let pair = rcgen::KeyPair::generate_for(algorithm).expect("key generated");
    (pair.serialize_pem(), pair.public_key_pem())
}

fn openssl_rsa_pair(dir: &Path) -> (String, String) {
    let private = dir.join("rsa-private.pem");
    let public = dir.join("rsa-public.pem");
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl {args:?}");
    };
    let (private_arg, public_arg) = (private.to_str().unwrap(), public.to_str().unwrap());
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        private_arg,
    ]);
    run(&["pkey", "-in", private_arg, "-pubout", "-out", public_arg]);
    (
        std::fs::read_to_string(private).expect("private key"),
        std::fs::read_to_string(public).expect("public key"),
    )
}

/// Sends a request built beforehand (to name it in a failure), failing after [`WAIT`].
pub async fn send_built(client: &reqwest::Client, request: reqwest::Request) -> reqwest::Response {
    tokio::time::timeout(WAIT, client.execute(request))
        .await
        .expect("answered in time")
        .expect("request sent")
}
