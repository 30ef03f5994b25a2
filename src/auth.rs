//! Who is calling, and what they may do. Subscribers prove who they are with a JWT (`sub` is
//! the user id, `exp` is required); publishers present a bearer key, compared in constant
//! time; a half that is not configured is open (docs/protocol.md#auth). [`Caller::identify`]
//! reads the credentials once; handlers then ask it for exactly the permission they need.

use std::fmt;
use std::sync::Arc;

use axum::http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::UserId;

/// Who may do what: `None` for a half leaves that half open.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    pub tokens: Option<Arc<TokenVerifier>>,
    pub publish_keys: Option<Arc<PublishKeys>>,
    /// `/metrics` and `/api/stats` without a publish key.
    pub metrics_public: bool,
}

/// Why a caller may not do what it asked; the text is safe to send back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No credentials, or credentials that failed.
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials that do not allow this.
    #[error("{0}")]
    Forbidden(String),
}

/// The name of the cookie a browser may carry its subscriber token in.
pub const TOKEN_COOKIE: &str = "herald_token";

/// Checks subscriber tokens with one key and one algorithm (no algorithm switching).
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

/// What a valid subscriber token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub user: UserId,
    /// Unix seconds after which the token, and any stream opened with it, is over.
    pub expires_at: u64,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

impl TokenVerifier {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Self {
        Self::new(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// RS256, ES256 or EdDSA, chosen by the kind of public key in `pem`.
    pub fn from_public_key_pem(pem: &[u8]) -> Result<Self, String> {
        // jsonwebtoken reads an RSA *private* key as if it were the public one; every token
        // would then fail. Say so at startup instead.
        if String::from_utf8_lossy(pem).contains("PRIVATE KEY-----") {
            return Err(
                "this is a private key; give the public key (openssl pkey -in KEY -pubout)".into(),
            );
        }
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self::new(key, Algorithm::RS256));
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            return Ok(Self::new(key, Algorithm::ES256));
        }
        if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            return Ok(Self::new(key, Algorithm::EdDSA));
        }
        Err("not a PEM public key of RSA, EC P-256 or Ed25519".into())
    }

    fn new(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 0;
        // A token must not be used before its `nbf`, when it has one (RFC 7519 §4.1.5).
        validation.validate_nbf = true;
        validation.validate_aud = false;
        Self { key, validation }
    }

    /// The subscriber a token names, if its signature, algorithm, `exp` and `sub` hold.
    pub fn verify(&self, token: &str) -> Result<Subscriber, String> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    "the token has expired".to_string()
                }
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                    "the token is signed with an algorithm this server does not accept".to_string()
                }
                jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(claim) => {
                    format!("the token has no `{claim}` claim")
                }
                _ => "the token is not valid".to_string(),
            },
        )?;
        // jsonwebtoken still accepts a token in the second of its `exp`; RFC 7519 says "on or
        // after" `exp` it is over, and an open stream ends at `exp`, so a reconnect then must
        // not be let in again for up to a second.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        if data.claims.exp <= now {
            return Err("the token has expired".to_string());
        }
        let user = UserId::parse(&data.claims.sub)
            .map_err(|_| "the token's `sub` is not a valid user id".to_string())?;
        Ok(Subscriber {
            user,
            expires_at: data.claims.exp,
        })
    }
}

/// The publish keys, kept as SHA-256 digests so comparison time says nothing about a key.
pub struct PublishKeys {
    digests: Vec<[u8; 32]>,
}

impl fmt::Debug for PublishKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublishKeys({} keys)", self.digests.len())
    }
}

impl PublishKeys {
    pub fn new(keys: &[&str]) -> Self {
        Self {
            digests: keys.iter().map(|key| Sha256::digest(key).into()).collect(),
        }
    }

    /// Whether `presented` is one of the keys; every key is compared, in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        self.digests
            .iter()
            .fold(subtle::Choice::from(0), |found, key| {
                found | key.ct_eq(&digest)
            })
            .into()
    }
}

/// What the request's credentials proved.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A valid publish key.
    Publisher,
    /// A valid subscriber token.
    Subscriber(Subscriber),
    /// Credentials were presented and failed; the reason is safe to send back.
    Rejected(String),
    /// No credentials.
    Anonymous,
}

impl Caller {
    /// Reads the `Authorization: Bearer` header, the `herald_token` cookie and `?token=`.
    pub fn identify(auth: &AuthSettings, headers: &HeaderMap, query: Option<&str>) -> Self {
        if let Some(bearer) = bearer_token(headers) {
            if auth
                .publish_keys
                .as_ref()
                .is_some_and(|keys| keys.matches(bearer))
            {
                return Self::Publisher;
            }
            return match &auth.tokens {
                Some(tokens) if looks_like_jwt(bearer) => tokens
                    .verify(bearer)
                    .map_or_else(Self::Rejected, Self::Subscriber),
                _ if auth.publish_keys.is_some() || auth.tokens.is_some() => {
                    Self::Rejected("unknown publish key or malformed token".into())
                }
                _ => Self::Anonymous,
            };
        }
        let other = cookie_token(headers).or_else(|| query_token(query));
        match (other, &auth.tokens) {
            (Some(token), Some(tokens)) => tokens
                .verify(&token)
                .map_or_else(Self::Rejected, Self::Subscriber),
            _ => Self::Anonymous,
        }
    }

    /// Publishing and broadcasting: a publish key, unless that half is open.
    pub fn require_publisher(&self, auth: &AuthSettings) -> Result<(), Denied> {
        if auth.publish_keys.is_none() {
            return Ok(());
        }
        match self {
            Self::Publisher => Ok(()),
            Self::Subscriber(_) => Err(Denied::Forbidden(
                "a subscriber token cannot do this; it needs a publish key".into(),
            )),
            Self::Rejected(reason) => Err(Denied::Unauthorized(reason.clone())),
            Self::Anonymous => Err(Denied::Unauthorized("a publish key is required".into())),
        }
    }

    /// Reading or marking `user`'s history: that user's token, or a publish key. With a half
    /// open, a caller without credentials passes as that half allows.
    pub fn require_reader_of(&self, auth: &AuthSettings, user: &UserId) -> Result<(), Denied> {
        match self {
            Self::Publisher => Ok(()),
            Self::Subscriber(subscriber) if &subscriber.user == user => Ok(()),
            Self::Subscriber(_) => Err(Denied::Forbidden(
                "this token belongs to another user".into(),
            )),
            Self::Rejected(reason) => Err(Denied::Unauthorized(reason.clone())),
            Self::Anonymous if auth.tokens.is_none() || auth.publish_keys.is_none() => Ok(()),
            Self::Anonymous => Err(Denied::Unauthorized(
                "a subscriber token or a publish key is required".into(),
            )),
        }
    }

    /// Opening `user`'s stream: that user's token, unless the subscriber half is open.
    /// Returns the token's expiry, when there is one.
    pub fn require_subscriber_of(
        &self,
        auth: &AuthSettings,
        user: &UserId,
    ) -> Result<Option<u64>, Denied> {
        match self {
            Self::Subscriber(subscriber) if &subscriber.user == user => {
                Ok(Some(subscriber.expires_at))
            }
            _ if auth.tokens.is_none() => Ok(None),
            Self::Subscriber(_) => Err(Denied::Forbidden(
                "this token belongs to another user".into(),
            )),
            Self::Publisher => Err(Denied::Forbidden(
                "a publish key cannot open a stream; use a subscriber token".into(),
            )),
            Self::Rejected(reason) => Err(Denied::Unauthorized(reason.clone())),
            Self::Anonymous => Err(Denied::Unauthorized(
                "a subscriber token is required".into(),
            )),
        }
    }

    /// `/metrics` and `/api/stats`: a publish key, unless public or that half is open.
    pub fn require_operator(&self, auth: &AuthSettings) -> Result<(), Denied> {
        if auth.metrics_public {
            return Ok(());
        }
        self.require_publisher(auth)
    }
}

/// Whether [`Caller::identify`] would take the caller's credential from the `herald_token`
/// cookie: the one credential a browser attaches by itself, even to a request another site
/// makes it send.
pub fn credential_is_ambient(headers: &HeaderMap) -> bool {
    bearer_token(headers).is_none() && cookie_token(headers).is_some()
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == TOKEN_COOKIE)
        .map(|cookie| cookie.value().to_owned())
        .filter(|value| !value.is_empty())
}

fn query_token(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned())
        .filter(|value| !value.is_empty())
}

/// Three dot-separated parts: worth verifying as a JWT (anything else is a wrong key).
fn looks_like_jwt(candidate: &str) -> bool {
    candidate.split('.').count() == 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_over_in_the_second_of_its_exp() {
        let secret = b"unit-test-secret";
        let verifier = TokenVerifier::hs256(secret);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = |exp: u64| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &serde_json::json!({ "sub": "alice", "exp": exp }),
                &jsonwebtoken::EncodingKey::from_secret(secret),
            )
            .unwrap()
        };
        assert_eq!(
            verifier.verify(&token(now)),
            Err("the token has expired".to_string())
        );
        assert_eq!(
            verifier.verify(&token(now + 60)).unwrap().expires_at,
            now + 60
        );
    }

    #[test]
    fn a_private_key_is_not_taken_for_a_public_one() {
        let pem = b"-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n";
        let error = TokenVerifier::from_public_key_pem(pem).unwrap_err();
        assert!(error.contains("private key"), "{error}");
    }

    #[test]
    fn publish_keys_match_exactly() {
        let keys = PublishKeys::new(&["alpha-key", "beta-key"]);
        assert!(keys.matches("alpha-key"));
        assert!(keys.matches("beta-key"));
        for wrong in ["", "alpha", "alpha-key ", "ALPHA-KEY", "beta-key2"] {
            assert!(!keys.matches(wrong), "{wrong:?}");
        }
    }

    #[test]
    fn tokens_are_found_in_header_cookie_and_query() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
        headers.insert(
            header::COOKIE,
            "a=1; herald_token=t.o.k; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_token(&headers).as_deref(), Some("t.o.k"));
        assert_eq!(
            query_token(Some("lastEventId=4&token=x%2By")).as_deref(),
            Some("x+y")
        );
        assert_eq!(query_token(Some("token=")), None);
    }
}
