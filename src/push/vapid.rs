//! The server's VAPID key (RFC 8292): a P-256 key pair read from PEM (PKCS#8 `PRIVATE KEY` as
//! `herald vapid-key` writes it, or SEC1 `EC PRIVATE KEY` as `openssl ecparam -genkey` does),
//! and its public half in the form browsers take as `applicationServerKey`: the uncompressed
//! point, base64url without padding.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A P-256 key pair for signing VAPID tokens.
pub struct VapidKey {
    pair: EcdsaKeyPair,
    /// The same key as jsonwebtoken signs with.
    signing: jsonwebtoken::EncodingKey,
    public_key: String,
}

impl VapidKey {
    /// A new random key.
    pub fn generate() -> Result<Self, String> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| "cannot generate a P-256 key".to_owned())?;
        Self::from_pair(pair)
    }

    /// Reads a PEM private key; the error says what is wrong with it.
    pub fn from_pem(text: &[u8]) -> Result<Self, String> {
        let block = pem::parse(text).map_err(|error| format!("not a PEM file ({error})"))?;
        if !matches!(block.tag(), "PRIVATE KEY" | "EC PRIVATE KEY") {
            return Err(format!(
                "a PEM \"{}\", not a P-256 private key (\"PRIVATE KEY\" or \"EC PRIVATE KEY\")",
                block.tag()
            ));
        }
        let pair =
            EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, block.contents())
                .map_err(|error| format!("not a P-256 private key ({error})"))?;
        Self::from_pair(pair)
    }

    fn from_pair(pair: EcdsaKeyPair) -> Result<Self, String> {
        let public_key = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let pkcs8 = pair
            .to_pkcs8v1()
            .map_err(|_| "cannot encode the key".to_owned())?;
        let signing = jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref());
        Ok(Self {
            pair,
            signing,
            public_key,
        })
    }

    /// The `Authorization` header of a push to a service at `audience` (the endpoint's origin):
    /// `vapid t=JWT, k=KEY` (RFC 8292 §3), the token signed now with ES256 and valid until
    /// `expires` (Unix seconds).
    pub fn authorization(
        &self,
        audience: &str,
        subject: &str,
        expires: u64,
    ) -> Result<String, String> {
        #[derive(serde::Serialize)]
        struct Claims<'a> {
            aud: &'a str,
            exp: u64,
            sub: &'a str,
        }
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        let claims = Claims {
            aud: audience,
            exp: expires,
            sub: subject,
        };
        let token = jsonwebtoken::encode(&header, &claims, &self.signing)
            .map_err(|error| format!("cannot sign a VAPID token: {error}"))?;
        Ok(format!("vapid t={token}, k={}", self.public_key))
    }

    /// The key as PKCS#8 PEM, for `herald vapid-key` to write.
    pub fn to_pem(&self) -> Result<String, String> {
        let der = self
            .pair
            .to_pkcs8v1()
            .map_err(|_| "cannot encode the key".to_owned())?;
        Ok(pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref())))
    }

    /// The public key: the uncompressed P-256 point (65 bytes), base64url without padding.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }
}

impl std::fmt::Debug for VapidKey {
    /// The public half only: settings are logged, the private key never is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::encoding::AsDer;

    use super::*;

    #[test]
    fn a_written_key_reads_back_with_the_same_public_key_in_browser_form() {
        let key = VapidKey::generate().unwrap();
        let pem = key.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
        let again = VapidKey::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let point = URL_SAFE_NO_PAD.decode(key.public_key()).unwrap();
        assert_eq!((point.len(), point[0]), (65, 0x04), "an uncompressed point");
        assert!(!format!("{key:?}").contains(&pem[30..60]));
    }

    #[test]
    fn a_sec1_key_as_openssl_writes_it_is_read_too() {
        let key = VapidKey::generate().unwrap();
        let der = key.pair.private_key().as_der().unwrap();
        let sec1 = pem::encode(&pem::Pem::new("EC PRIVATE KEY", der.as_ref()));
        let again = VapidKey::from_pem(sec1.as_bytes()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
    }

    #[test]
    fn anything_but_a_p256_private_key_is_refused_with_the_reason() {
        let not_pem = VapidKey::from_pem(b"hello").unwrap_err();
        assert!(not_pem.starts_with("not a PEM file"), "{not_pem}");
        let public = pem::encode(&pem::Pem::new("PUBLIC KEY", vec![1, 2, 3]));
        let wrong_kind = VapidKey::from_pem(public.as_bytes()).unwrap_err();
        assert!(wrong_kind.contains("\"PUBLIC KEY\""), "{wrong_kind}");
        let garbage = pem::encode(&pem::Pem::new("PRIVATE KEY", vec![0x30, 3, 1, 2, 3]));
        let bad = VapidKey::from_pem(garbage.as_bytes()).unwrap_err();
        assert!(bad.starts_with("not a P-256 private key"), "{bad}");
    }
}
