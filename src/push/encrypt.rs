//! The encrypted body of a push (docs/protocol.md#web-push): the notification as one
//! `aes128gcm` record for the subscription's `p256dh` and `auth` (RFC 8291 over RFC 8188),
//! with aws-lc-rs. A fresh P-256 key pair and salt for every push; the ECDH is the bulk of the
//! CPU a push costs, so it runs on aws-lc's P-256 rather than a portable one (BENCHMARKS.md,
//! "Web Push").

use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, ECDH_P256, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// An uncompressed P-256 point: `0x04`, x, y.
const POINT_BYTES: usize = 65;
/// The record's header: salt 16, record size 4, key id length 1, then the key id (the
/// sender's public point).
const HEADER_BYTES: usize = 16 + 4 + 1 + POINT_BYTES;
/// The record size the header announces: the most a push service must take, as in RFC 8291's
/// worked example. The one record is shorter, which the last record of a body may be.
const RECORD_SIZE: u32 = 4096;
/// The padding delimiter of the last (here the only) record.
const LAST_RECORD: u8 = 0x02;
const TAG_BYTES: usize = 16;

/// Why a body cannot be made for a subscription.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncryptError {
    #[error("p256dh is not a P-256 point")]
    PublicKey,
    #[error("the system's random source failed")]
    Random,
}

/// `plaintext` as one `aes128gcm` record for the browser key `p256dh` (an uncompressed P-256
/// point) and the 16-byte `auth` secret.
pub fn encrypt(plaintext: &[u8], p256dh: &[u8], auth: &[u8; 16]) -> Result<Vec<u8>, EncryptError> {
    let random = SystemRandom::new();
    let mut salt = [0u8; 16];
    random.fill(&mut salt).map_err(|_| EncryptError::Random)?;
    let private = PrivateKey::generate(&ECDH_P256).map_err(|_| EncryptError::Random)?;
    let public = private
        .compute_public_key()
        .map_err(|_| EncryptError::Random)?;
    seal(plaintext, p256dh, auth, salt, &private, public.as_ref())
}

/// [`encrypt`] with the salt and the sender's key given (tests fix them).
fn seal(
    plaintext: &[u8],
    p256dh: &[u8],
    auth: &[u8; 16],
    salt: [u8; 16],
    private: &PrivateKey,
    public: &[u8],
) -> Result<Vec<u8>, EncryptError> {
    if p256dh.len() != POINT_BYTES || public.len() != POINT_BYTES {
        return Err(EncryptError::PublicKey);
    }
    let browser = UnparsedPublicKey::new(&ECDH_P256, p256dh);
    let ikm = agreement::agree(private, browser, EncryptError::PublicKey, |shared| {
        // IKM = HKDF(auth, ecdh_secret, "WebPush: info" 0x00 ua_public as_public, 32).
        let mut info = Vec::with_capacity(14 + 2 * POINT_BYTES);
        info.extend_from_slice(b"WebPush: info\0");
        info.extend_from_slice(p256dh);
        info.extend_from_slice(public);
        Ok(derive::<32>(auth, shared, &info))
    })?;
    let cek: [u8; 16] = derive(&salt, &ikm, b"Content-Encoding: aes128gcm\0");
    let nonce: [u8; 12] = derive(&salt, &ikm, b"Content-Encoding: nonce\0");

    let record_bytes = plaintext.len() + 1 + TAG_BYTES;
    let mut body = Vec::with_capacity(HEADER_BYTES + record_bytes);
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(POINT_BYTES as u8);
    body.extend_from_slice(public);
    let mut record = Vec::with_capacity(record_bytes);
    record.extend_from_slice(plaintext);
    record.push(LAST_RECORD);
    // The key is fresh for this record and the nonce derived from it: a nonce is never reused.
    let key =
        LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &cek).map_err(|_| EncryptError::Random)?);
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::empty(),
        &mut record,
    )
    .map_err(|_| EncryptError::Random)?;
    body.extend_from_slice(&record);
    Ok(body)
}

/// HKDF-SHA-256 of `secret` with `salt`, expanded with `info` to `N` bytes.
fn derive<const N: usize>(salt: &[u8], secret: &[u8], info: &[u8]) -> [u8; N] {
    struct Len(usize);
    impl KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let mut out = [0u8; N];
    let prk = Salt::new(HKDF_SHA256, salt).extract(secret);
    // N is at most 32, well within what HKDF-SHA-256 can expand to: neither step can fail.
    prk.expand(&[info], Len(N))
        .and_then(|okm| okm.fill(&mut out))
        .expect("HKDF-SHA-256 expands to 32 bytes");
    out
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    /// A browser's key pair and auth secret, decrypting with another implementation
    /// (web-push-native's, on RustCrypto).
    fn browser() -> (web_push_native::p256::SecretKey, Vec<u8>, [u8; 16]) {
        use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint;
        let secret = web_push_native::p256::SecretKey::from_slice(&[0x11; 32]).unwrap();
        let point = secret
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        (secret, point, [7u8; 16])
    }

    fn decrypt(
        body: Vec<u8>,
        secret: &web_push_native::p256::SecretKey,
        auth: [u8; 16],
    ) -> Vec<u8> {
        web_push_native::decrypt(body, secret, web_push_native::Auth::from_slice(&auth))
            .expect("decrypts")
    }

    #[test]
    fn another_implementation_decrypts_what_this_one_encrypts() {
        let (secret, p256dh, auth) = browser();
        for plaintext in [&b""[..], b"{\"id\":\"x\"}", &[0xAB; 3993]] {
            let body = encrypt(plaintext, &p256dh, &auth).unwrap();
            assert_eq!(body.len(), HEADER_BYTES + plaintext.len() + 1 + TAG_BYTES);
            assert_eq!(body[20], 65, "the key id is the sender's point");
            assert_eq!(decrypt(body, &secret, auth), plaintext);
        }
    }

    #[test]
    fn every_push_has_its_own_salt_and_sender_key() {
        let (_, p256dh, auth) = browser();
        let one = encrypt(b"same", &p256dh, &auth).unwrap();
        let two = encrypt(b"same", &p256dh, &auth).unwrap();
        assert_ne!(one[..16], two[..16], "salt");
        assert_ne!(one[21..HEADER_BYTES], two[21..HEADER_BYTES], "sender key");
    }

    #[test]
    fn a_key_that_is_not_a_point_on_the_curve_is_refused() {
        let (_, mut p256dh, auth) = browser();
        p256dh[40] ^= 1;
        assert_eq!(encrypt(b"x", &p256dh, &auth), Err(EncryptError::PublicKey));
        assert_eq!(
            encrypt(b"x", &p256dh[..33], &auth),
            Err(EncryptError::PublicKey)
        );
    }

    #[test]
    fn the_record_matches_the_worked_example_of_rfc_8291() {
        // Appendix A: the sender's key pair and salt fixed, so the body is known byte for byte.
        let decode = |text: &str| URL_SAFE_NO_PAD.decode(text).unwrap();
        let plaintext = b"When I grow up, I want to be a watermelon";
        let p256dh = decode(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        );
        let auth: [u8; 16] = decode("BTBZMqHH6r4Tts7J_aSIgg").try_into().unwrap();
        let salt: [u8; 16] = decode("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        let private_der = decode("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw");
        let private = PrivateKey::from_private_key(&ECDH_P256, &private_der).unwrap();
        let public = private.compute_public_key().unwrap();
        let body = seal(plaintext, &p256dh, &auth, salt, &private, public.as_ref()).unwrap();
        let expected = decode(
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN",
        );
        assert_eq!(
            URL_SAFE_NO_PAD.encode(&body),
            URL_SAFE_NO_PAD.encode(&expected)
        );
    }
}
