//! What a notification carries beyond its text, and how it changes once sent: the publisher's
//! own `data`, its `category`, when it expires, the recipients of one publish to many users, and
//! a patch (docs/protocol.md#the-notification-lifecycle). Each is parsed once, here, with an
//! error that names the field.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;

use super::{
    MAX_MESSAGE_CHARS, MAX_TITLE_CHARS, Notification, NotificationKind, UserId, bounded_text,
    format_unix_ms, parse_link,
};

/// The largest `data`, in bytes of compact JSON.
pub const MAX_DATA_BYTES: usize = 8 * 1024;
/// The longest category, in characters (all ASCII).
pub const MAX_CATEGORY_LEN: usize = 64;
/// The most users one publish may name.
pub const MAX_RECIPIENTS: usize = 1000;

/// A JSON object of the publisher's own, kept as compact text exactly as given: key order,
/// numbers and escapes are the publisher's, only the whitespace between tokens is gone.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = Object)]
pub struct JsonObject(Box<RawValue>);

impl JsonObject {
    pub fn parse(raw: &RawValue) -> Result<Self, String> {
        if !raw.get().starts_with('{') {
            return Err("data must be a JSON object".into());
        }
        let compact = compact(raw.get());
        if compact.len() > MAX_DATA_BYTES {
            return Err(format!(
                "data must be at most {MAX_DATA_BYTES} bytes as compact JSON"
            ));
        }
        RawValue::from_string(compact)
            .map(Self)
            .map_err(|_| "data must be a JSON object".into())
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for JsonObject {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for JsonObject {}

/// `json` without whitespace outside strings. The text is valid JSON (serde has read it), so
/// a string ends at the first `"` not preceded by an escaping backslash.
fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// A category: 1..=64 characters of `a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = String)]
pub struct Category(Box<str>);

impl Category {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b);
        if raw.is_empty() || raw.len() > MAX_CATEGORY_LEN || !raw.bytes().all(allowed) {
            return Err(format!(
                "category must be 1 to {MAX_CATEGORY_LEN} characters of a-z 0-9 . _ -"
            ));
        }
        Ok(Self(raw.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// When a notification stops existing, in Unix milliseconds and as the text it is shown as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    pub unix_ms: i64,
    pub text: String,
}

impl Expiry {
    /// From a publish's `ttl` (whole seconds) or `expiresAt` (RFC 3339, in the future): at most
    /// `retention` from `now`, since the log keeps nothing longer.
    pub fn parse(
        ttl: Option<u64>,
        expires_at: Option<&str>,
        now: OffsetDateTime,
        retention: Duration,
    ) -> Result<Option<Self>, String> {
        let now_ms = unix_ms(now);
        let longest = retention.as_millis() as i64;
        match (ttl, expires_at) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err("give ttl or expiresAt, not both".into()),
            (Some(ttl), None) => {
                let secs = retention.as_secs();
                if !(1..=secs).contains(&ttl) {
                    return Err(format!(
                        "ttl must be a whole number of seconds from 1 to {secs}"
                    ));
                }
                Ok(Some(Self::at(now_ms + ttl as i64 * 1000)))
            }
            (None, Some(raw)) => {
                let at = OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| "expiresAt must be an RFC 3339 time".to_string())?;
                let at_ms = unix_ms(at);
                if at_ms <= now_ms {
                    return Err("expiresAt must be in the future".into());
                }
                if at_ms - now_ms > longest {
                    return Err(format!(
                        "expiresAt must be within {} seconds (the retention) from now",
                        retention.as_secs()
                    ));
                }
                Ok(Some(Self::at(at_ms)))
            }
        }
    }

    pub fn at(unix_ms: i64) -> Self {
        Self {
            unix_ms,
            text: format_unix_ms(unix_ms),
        }
    }
}

fn unix_ms(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The users of one publish to many: 1..=1000, each a valid user id, none twice, in the order
/// given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipients(Vec<UserId>);

impl Recipients {
    pub fn parse(raw: Option<&[String]>) -> Result<Self, String> {
        let raw = raw.ok_or("users is required: a list of 1 to 1000 user ids")?;
        if raw.is_empty() || raw.len() > MAX_RECIPIENTS {
            return Err(format!(
                "users must list 1 to {MAX_RECIPIENTS} user ids, not {}",
                raw.len()
            ));
        }
        let mut seen = std::collections::HashSet::with_capacity(raw.len());
        let users = raw
            .iter()
            .enumerate()
            .map(|(at, raw)| {
                let user = UserId::parse(raw).map_err(|why| format!("users[{at}]: {why}"))?;
                if !seen.insert(raw.as_str()) {
                    return Err(format!("users[{at}]: {raw:?} is listed twice"));
                }
                Ok(user)
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self(users))
    }

    pub fn into_vec(self) -> Vec<UserId> {
        self.0
    }
}

/// A change to a stored notification: each field `None` is left as it is; for the optional
/// ones, `Some(None)` removes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationPatch {
    pub kind: Option<NotificationKind>,
    pub title: Option<String>,
    pub message: Option<String>,
    pub link: Option<Option<String>>,
    pub data: Option<Option<JsonObject>>,
    pub category: Option<Option<Category>>,
}

/// A field of a patch as sent: absent, `null`, or a value.
pub type PatchField<'a, T> = Option<Option<&'a T>>;

/// The raw fields of a patch, as a body carries them.
#[derive(Default)]
pub struct RawPatch<'a> {
    pub kind: PatchField<'a, str>,
    pub title: PatchField<'a, str>,
    pub message: PatchField<'a, str>,
    pub link: PatchField<'a, str>,
    pub data: PatchField<'a, RawValue>,
    pub category: PatchField<'a, str>,
}

impl NotificationPatch {
    pub fn parse(raw: RawPatch<'_>) -> Result<Self, String> {
        fn required<'a, T: ?Sized>(
            field: &str,
            value: PatchField<'a, T>,
        ) -> Result<Option<&'a T>, String> {
            match value {
                Some(None) => Err(format!("{field} cannot be removed, only changed")),
                Some(Some(value)) => Ok(Some(value)),
                None => Ok(None),
            }
        }
        fn removable<'a, T: ?Sized, U>(
            value: PatchField<'a, T>,
            parse: impl FnOnce(&'a T) -> Result<U, String>,
        ) -> Result<Option<Option<U>>, String> {
            value.map(|value| value.map(parse).transpose()).transpose()
        }
        let kind = required("type", raw.kind)?
            .map(|kind| {
                NotificationKind::parse(kind)
                    .ok_or_else(|| "type must be one of info, success, warning, error".to_string())
            })
            .transpose()?;
        let title = required("title", raw.title)?
            .map(|title| bounded_text("title", Some(title), MAX_TITLE_CHARS))
            .transpose()?;
        let message = required("message", raw.message)?
            .map(|message| bounded_text("message", Some(message), MAX_MESSAGE_CHARS))
            .transpose()?;
        let patch = Self {
            kind,
            title,
            message,
            link: removable(raw.link, parse_link)?,
            data: removable(raw.data, JsonObject::parse)?,
            category: removable(raw.category, Category::parse)?,
        };
        if patch == Self::default() {
            return Err(
                "nothing to change: give any of title, message, type, link, data, category".into(),
            );
        }
        Ok(patch)
    }

    /// Applies the patch, stamping `updatedAt` with `now`.
    pub fn apply_to(&self, notification: &mut Notification, now: String) {
        if let Some(kind) = self.kind {
            notification.kind = kind;
        }
        if let Some(title) = &self.title {
            notification.title.clone_from(title);
        }
        if let Some(message) = &self.message {
            notification.message.clone_from(message);
        }
        if let Some(link) = &self.link {
            notification.link.clone_from(link);
        }
        if let Some(data) = &self.data {
            notification.data.clone_from(data);
        }
        if let Some(category) = &self.category {
            notification.category.clone_from(category);
        }
        notification.updated_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        serde_json::from_str(json).expect("valid JSON")
    }

    #[test]
    fn data_is_kept_as_given_without_whitespace() {
        let data = JsonObject::parse(&raw(
            "{ \"z\" : 1.50, \"a\" : [ \"x y\", \"q\\\" \" ] ,\n\"e\":\"\\u00e9\" }",
        ))
        .expect("an object");
        assert_eq!(
            data.as_str(),
            r#"{"z":1.50,"a":["x y","q\" "],"e":"\u00e9"}"#
        );
        for not_object in ["[1]", "\"s\"", "3", "null", "true"] {
            assert_eq!(
                JsonObject::parse(&raw(not_object)),
                Err("data must be a JSON object".into()),
                "{not_object}"
            );
        }
        let at_limit = format!("{{\"k\":\"{}\"}}", "x".repeat(MAX_DATA_BYTES - 8));
        assert_eq!(at_limit.len(), MAX_DATA_BYTES);
        assert!(JsonObject::parse(&raw(&at_limit)).is_ok());
        let over = format!("{{\"k\":\"{}\"}}", "x".repeat(MAX_DATA_BYTES - 7));
        assert!(JsonObject::parse(&raw(&over)).is_err());
        // Whitespace does not count against the limit.
        let padded = at_limit.replace(':', " : ");
        assert!(JsonObject::parse(&raw(&padded)).is_ok());
    }

    #[test]
    fn categories_are_lowercase_words() {
        for ok in ["billing", "a", "x.y_z-9", &"c".repeat(64)] {
            assert!(Category::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Billing", "a b", "é", "a/b", &"c".repeat(65)] {
            assert!(Category::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expiry_is_a_ttl_or_a_future_time_within_retention() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
        let day = Duration::from_secs(86_400);
        let at = Expiry::parse(Some(60), None, now, day)
            .expect("valid")
            .expect("set");
        assert_eq!(at.unix_ms, 1_700_000_060_000);
        assert_eq!(at.text, "2023-11-14T22:14:20.000Z");
        assert_eq!(Expiry::parse(None, None, now, day), Ok(None));
        let from_text = Expiry::parse(None, Some("2023-11-15T00:14:20.5+02:00"), now, day)
            .expect("valid")
            .expect("set");
        assert_eq!(from_text.text, "2023-11-14T22:14:20.500Z");
        for (ttl, at) in [
            (Some(0), None),
            (Some(86_401), None),
            (Some(1), Some("2023-11-15T00:00:00Z")),
            (None, Some("2023-11-14T22:13:20Z")),
            (None, Some("2023-11-16T00:00:00Z")),
            (None, Some("tomorrow")),
        ] {
            assert!(Expiry::parse(ttl, at, now, day).is_err(), "{ttl:?} {at:?}");
        }
    }

    #[test]
    fn recipients_are_distinct_valid_ids_in_order() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let users = Recipients::parse(Some(&names(&["b", "a"]))).expect("valid");
        assert_eq!(
            users.into_vec(),
            vec![UserId::parse("b").unwrap(), UserId::parse("a").unwrap()]
        );
        assert!(Recipients::parse(None).unwrap_err().starts_with("users"));
        assert!(
            Recipients::parse(Some(&[]))
                .unwrap_err()
                .starts_with("users")
        );
        let twice = Recipients::parse(Some(&names(&["a", "b", "a"]))).unwrap_err();
        assert_eq!(twice, "users[2]: \"a\" is listed twice");
        let bad = Recipients::parse(Some(&names(&["a", "a b"]))).unwrap_err();
        assert!(bad.starts_with("users[1]: "), "{bad}");
        let many: Vec<String> = (0..=MAX_RECIPIENTS).map(|i| format!("u{i}")).collect();
        assert!(
            Recipients::parse(Some(&many))
                .unwrap_err()
                .starts_with("users")
        );
        assert!(Recipients::parse(Some(&many[..MAX_RECIPIENTS])).is_ok());
    }

    #[test]
    fn a_patch_names_what_it_changes_and_what_it_removes() {
        let data = raw("{\"a\": 1}");
        let patch = NotificationPatch::parse(RawPatch {
            title: Some(Some(" New ")),
            link: Some(None),
            data: Some(Some(&data)),
            ..RawPatch::default()
        })
        .expect("valid");
        assert_eq!(patch.title.as_deref(), Some("New"));
        assert_eq!(patch.link, Some(None));
        assert_eq!(patch.data.unwrap().unwrap().as_str(), "{\"a\":1}");
        assert!(
            NotificationPatch::parse(RawPatch::default())
                .unwrap_err()
                .starts_with("nothing to change")
        );
        for (field, bad) in [
            (
                "title",
                RawPatch {
                    title: Some(None),
                    ..RawPatch::default()
                },
            ),
            (
                "type",
                RawPatch {
                    kind: Some(Some("fatal")),
                    ..RawPatch::default()
                },
            ),
            (
                "category",
                RawPatch {
                    category: Some(Some("Nope")),
                    ..RawPatch::default()
                },
            ),
            (
                "link",
                RawPatch {
                    link: Some(Some("//evil")),
                    ..RawPatch::default()
                },
            ),
        ] {
            let error = NotificationPatch::parse(bad).unwrap_err();
            assert!(error.starts_with(field), "{field}: {error}");
        }
    }
}
