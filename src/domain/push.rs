//! A browser's Web Push subscription as herald keeps it: its endpoint and the two keys the
//! browser gave (`PushSubscription.toJSON()`), checked once (docs/protocol.md#web-push).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The longest endpoint herald stores; real push services use a few hundred bytes.
pub const MAX_ENDPOINT_BYTES: usize = 2048;

/// A subscription as the browser gave it, checked: the endpoint is an absolute `http(s)` URL
/// without credentials, `p256dh` an uncompressed P-256 point and `auth` 16 bytes, both in
/// base64url. Which endpoints herald will actually contact is a separate rule (the push
/// module's endpoint policy), because it depends on how the server was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSubscription {
    pub endpoint: url::Url,
    /// base64url without padding, as stored and as sent back to the encryption.
    pub p256dh: String,
    pub auth: String,
}

impl PushSubscription {
    pub fn parse(endpoint: &str, p256dh: &str, auth: &str) -> Result<Self, String> {
        if endpoint.len() > MAX_ENDPOINT_BYTES {
            return Err(format!(
                "endpoint is longer than {MAX_ENDPOINT_BYTES} bytes"
            ));
        }
        let url =
            url::Url::parse(endpoint).map_err(|error| format!("endpoint is not a URL: {error}"))?;
        if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
            return Err("endpoint must be an http(s) URL with a host".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("endpoint must not carry credentials".into());
        }
        let p256dh = key("keys.p256dh", p256dh, 65)?;
        if p256dh.first() != Some(&0x04) {
            return Err("keys.p256dh must be an uncompressed P-256 point".into());
        }
        let auth = key("keys.auth", auth, 16)?;
        Ok(Self {
            endpoint: url,
            p256dh: URL_SAFE_NO_PAD.encode(p256dh),
            auth: URL_SAFE_NO_PAD.encode(auth),
        })
    }

    /// The endpoint's origin (`https://host[:port]`): all of it a listing shows, since the
    /// path is a secret that lets anyone push to the browser.
    pub fn origin(&self) -> String {
        self.endpoint.origin().ascii_serialization()
    }
}

/// `raw` as base64url (padding allowed, as some browsers add it), exactly `len` bytes.
fn key(name: &str, raw: &str, len: usize) -> Result<Vec<u8>, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(raw.trim_end_matches('='))
        .map_err(|_| format!("{name} must be base64url"))?;
    if bytes.len() != len {
        return Err(format!("{name} must be {len} bytes, not {}", bytes.len()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P256DH: &str =
        "BLn9b-VR0ca83knDNZ32dCHGyjJp-1riX9ZTN40MqV8K_LpQmLqxC_DoHvqvFXO_nGdAB4W9dogZb_sM-uV4JbY";
    const AUTH: &str = "_ordMnz7uTCmrpBTeUV4Bw";

    #[test]
    fn a_browser_subscription_is_kept_with_its_keys_and_shows_only_its_origin() {
        let sub = PushSubscription::parse(
            "https://fcm.googleapis.com/fcm/send/secret-path",
            P256DH,
            &format!("{AUTH}=="),
        )
        .unwrap();
        assert_eq!(sub.origin(), "https://fcm.googleapis.com");
        assert_eq!(sub.p256dh, P256DH);
        assert_eq!(sub.auth, AUTH);
    }

    #[test]
    fn malformed_subscriptions_are_refused_with_the_field_named() {
        let cases = [
            ("not a url", P256DH, AUTH, "endpoint is not a URL"),
            ("ftp://push.example/x", P256DH, AUTH, "http(s) URL"),
            ("https://u:p@push.example/x", P256DH, AUTH, "credentials"),
            (
                "https://push.example/x",
                "BAAA",
                AUTH,
                "keys.p256dh must be 65 bytes",
            ),
            (
                "https://push.example/x",
                "!!",
                AUTH,
                "keys.p256dh must be base64url",
            ),
            (
                "https://push.example/x",
                &P256DH.replacen('B', "A", 1),
                AUTH,
                "uncompressed",
            ),
            (
                "https://push.example/x",
                P256DH,
                "AAAA",
                "keys.auth must be 16 bytes",
            ),
        ];
        for (endpoint, p256dh, auth, expected) in cases {
            let error = PushSubscription::parse(endpoint, p256dh, auth).unwrap_err();
            assert!(
                error.contains(expected),
                "{endpoint} {p256dh} {auth}: {error}"
            );
        }
        let long = format!("https://push.example/{}", "a".repeat(MAX_ENDPOINT_BYTES));
        assert!(
            PushSubscription::parse(&long, P256DH, AUTH)
                .unwrap_err()
                .contains("longer")
        );
    }
}
