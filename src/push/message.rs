//! One push as a push service receives it (docs/protocol.md#web-push): the notification's
//! JSON, made to fit, encrypted for the subscription (`aes128gcm`, RFC 8291, by [`encrypt`]),
//! and the headers: VAPID `Authorization` (RFC 8292), `TTL`, `Urgency` and `Topic`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::VapidKey;
use super::encrypt::encrypt;

/// The most a push service must accept as an encrypted body (RFC 8291 §4).
pub const MAX_RECORD_BYTES: usize = 4096;
/// What one-record `aes128gcm` adds: the header (salt 16, record size 4, key id length 1, key
/// id 65) and, in the record, the padding delimiter (1) and the tag (16).
const OVERHEAD: usize = 86 + 1 + 16;
/// The longest notification JSON that fits in one push.
pub const MAX_PLAINTEXT_BYTES: usize = MAX_RECORD_BYTES - OVERHEAD;
/// The longest VAPID token lifetime a push service must accept.
const TOKEN_LIFETIME_SECS: u64 = 12 * 3600;

/// A push ready to send.
#[derive(Debug)]
pub struct Message {
    pub endpoint: url::Url,
    pub body: Vec<u8>,
    pub authorization: String,
    pub ttl_secs: u64,
    pub urgency: &'static str,
    pub topic: String,
}

/// Why a push cannot be made at all (retrying would not help).
#[derive(Debug, thiserror::Error)]
pub enum Unsendable {
    #[error("the stored subscription is unusable: {0}")]
    Subscription(String),
    #[error("the stored notification is unusable: {0}")]
    Notification(String),
    #[error("{0}")]
    Signing(String),
}

/// What a notification is pushed as.
pub struct Notice<'a> {
    /// Its JSON as stored (and as streams receive it).
    pub json: &'a str,
    /// Seconds left of its lifetime (the push's `TTL`).
    pub ttl_secs: u64,
}

pub struct Recipient<'a> {
    pub endpoint: &'a str,
    pub p256dh: &'a str,
    pub auth: &'a str,
}

/// Builds the push of `notice` to `to`, signed with `key` for `subject`, at `now` (Unix s).
pub fn build(
    notice: &Notice<'_>,
    to: &Recipient<'_>,
    key: &VapidKey,
    subject: &str,
    now_secs: u64,
) -> Result<Message, Unsendable> {
    let endpoint = url::Url::parse(to.endpoint)
        .map_err(|error| Unsendable::Subscription(error.to_string()))?;
    let public = URL_SAFE_NO_PAD
        .decode(to.p256dh)
        .map_err(|_| Unsendable::Subscription("p256dh is not a P-256 point".into()))?;
    let auth: [u8; 16] = URL_SAFE_NO_PAD
        .decode(to.auth)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| Unsendable::Subscription("auth is not 16 bytes".into()))?;
    let notification: Map<String, Value> = serde_json::from_str(notice.json)
        .map_err(|error| Unsendable::Notification(error.to_string()))?;
    let id = notification
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| Unsendable::Notification("no id".into()))?;
    let topic = topic_of(id);
    let urgency = match notification.get("type").and_then(Value::as_str) {
        Some("error") => "high",
        _ => "normal",
    };
    let plaintext = fit(notification);
    let body = encrypt(&plaintext, &public, &auth)
        .map_err(|error| Unsendable::Subscription(format!("cannot encrypt for it: {error}")))?;
    let audience = endpoint.origin().ascii_serialization();
    let authorization = key
        .authorization(&audience, subject, now_secs + TOKEN_LIFETIME_SECS)
        .map_err(Unsendable::Signing)?;
    Ok(Message {
        endpoint,
        body,
        authorization,
        ttl_secs: notice.ttl_secs,
        urgency,
        topic,
    })
}

/// A push's `Topic`: the notification's id as 32 URL-safe characters (a UUID without its
/// dashes), so a retry of the same push replaces the one a push service still holds.
pub fn topic_of(id: &str) -> String {
    let compact: String = id.chars().filter(|c| *c != '-').collect();
    if compact.len() <= 32 && compact.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return compact;
    }
    // Not a UUID (never so today): a digest of it, in the same alphabet.
    use sha2::Digest;
    let digest = sha2::Sha256::digest(id.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..24])
}

/// The notification's JSON within [`MAX_PLAINTEXT_BYTES`]: whole if it fits; else without
/// `data`; else with `message` cut (at a character boundary, ending in `…`).
fn fit(mut notification: Map<String, Value>) -> Vec<u8> {
    let encode = |n: &Map<String, Value>| serde_json::to_vec(n).unwrap_or_default();
    let whole = encode(&notification);
    if whole.len() <= MAX_PLAINTEXT_BYTES {
        return whole;
    }
    notification.remove("data");
    let without_data = encode(&notification);
    if without_data.len() <= MAX_PLAINTEXT_BYTES {
        return without_data;
    }
    let message = notification
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    // Cut by the bytes over (as JSON escapes may make a character longer, cut again until
    // it fits); each round removes at least one character.
    let mut keep: Vec<char> = message.chars().collect();
    loop {
        let over = encode(&notification)
            .len()
            .saturating_sub(MAX_PLAINTEXT_BYTES);
        if over == 0 || keep.is_empty() {
            return encode(&notification);
        }
        // A character is 1 to 6 bytes of JSON (`\u001f`): cutting a sixth of the excess
        // never cuts more than needed by more than a character.
        let cut = keep.len().saturating_sub((over / 6).max(1));
        keep.truncate(cut);
        let mut text: String = keep.iter().collect();
        text.push('…');
        notification.insert("message".into(), Value::String(text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(message: &str, data_bytes: usize) -> Map<String, Value> {
        let mut n = Map::new();
        n.insert("id".into(), "0193a0c4-7b1e-7cc2-9a43-1b1f1c7d2e01".into());
        n.insert("type".into(), "info".into());
        n.insert("title".into(), "Title".into());
        n.insert("message".into(), message.into());
        if data_bytes > 0 {
            let mut data = Map::new();
            data.insert("blob".into(), "x".repeat(data_bytes).into());
            n.insert("data".into(), Value::Object(data));
        }
        n
    }

    #[test]
    fn a_notification_that_fits_is_pushed_whole() {
        let n = notification("hello", 100);
        assert_eq!(fit(n.clone()), serde_json::to_vec(&n).unwrap());
    }

    #[test]
    fn data_goes_first_and_then_the_message_is_cut_to_fit() {
        let n = notification("short", 5000);
        let fitted: Map<String, Value> = serde_json::from_slice(&fit(n)).unwrap();
        assert!(!fitted.contains_key("data"));
        assert_eq!(fitted["message"], "short");

        let n = notification(&"é\"".repeat(3000), 5000);
        let bytes = fit(n);
        assert!(bytes.len() <= MAX_PLAINTEXT_BYTES, "{}", bytes.len());
        assert!(bytes.len() > MAX_PLAINTEXT_BYTES - 16, "{}", bytes.len());
        let fitted: Map<String, Value> = serde_json::from_slice(&bytes).unwrap();
        let message = fitted["message"].as_str().unwrap();
        assert!(message.ends_with('…'));
        assert!(message.starts_with("é\"é\""));
        assert_eq!(fitted["title"], "Title");
    }

    #[test]
    fn the_topic_is_the_id_without_dashes() {
        assert_eq!(
            topic_of("0193a0c4-7b1e-7cc2-9a43-1b1f1c7d2e01"),
            "0193a0c47b1e7cc29a431b1f1c7d2e01"
        );
        let other = topic_of("not/a uuid");
        assert_eq!(other.len(), 32);
        assert!(
            other
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    #[test]
    fn an_encrypted_push_of_the_longest_plaintext_is_exactly_the_record_limit() {
        let key = VapidKey::generate().unwrap();
        let secret = web_push_native::p256::SecretKey::from_slice(&[0x11; 32]).unwrap();
        let public = secret.public_key();
        use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint;
        let p256dh = URL_SAFE_NO_PAD.encode(public.to_encoded_point(false).as_bytes());
        let auth = URL_SAFE_NO_PAD.encode([7u8; 16]);
        let mut n = notification("", 0);
        let base = serde_json::to_vec(&n).unwrap().len();
        n.insert(
            "message".into(),
            "m".repeat(MAX_PLAINTEXT_BYTES - base).into(),
        );
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(json.len(), MAX_PLAINTEXT_BYTES);
        let message = build(
            &Notice {
                json: &json,
                ttl_secs: 60,
            },
            &Recipient {
                endpoint: "https://push.example/abc",
                p256dh: &p256dh,
                auth: &auth,
            },
            &key,
            "mailto:ops@example.com",
            1_700_000_000,
        )
        .unwrap();
        assert_eq!(message.body.len(), MAX_RECORD_BYTES);
        let clear = web_push_native::decrypt(
            message.body.clone(),
            &secret,
            web_push_native::Auth::from_slice(&[7u8; 16]),
        )
        .unwrap();
        assert_eq!(clear, json.as_bytes());
        assert!(message.authorization.starts_with("vapid t="));
        assert!(
            message
                .authorization
                .ends_with(&format!(", k={}", key.public_key()))
        );
        assert_eq!(message.urgency, "normal");
    }
}
