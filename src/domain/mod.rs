//! The vocabulary of herald: user ids, event ids and notifications, each parsed once at the
//! edge so that deeper code never re-checks a raw string.

mod lifecycle;
mod push;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use lifecycle::{Category, Expiry, JsonObject, NotificationPatch, RawPatch, Recipients};
pub use push::PushSubscription;

/// The longest user id we accept, in bytes (all allowed characters are ASCII).
pub const MAX_USER_ID_LEN: usize = 128;
/// The longest title, in characters, after trimming.
pub const MAX_TITLE_CHARS: usize = 200;
/// The longest message, in characters, after trimming.
pub const MAX_MESSAGE_CHARS: usize = 4000;
/// The longest link we keep, in bytes.
pub const MAX_LINK_LEN: usize = 2048;
/// The longest `Idempotency-Key`, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// A user id: 1..=128 characters of `A-Z a-z 0-9 . _ ~ @ + -`, not `.` or `..`, not `me`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(Box<str>);

impl UserId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > MAX_USER_ID_LEN {
            return Err(format!(
                "userId must be 1 to {MAX_USER_ID_LEN} characters long"
            ));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~@+-".contains(&b))
        {
            return Err("userId may contain only A-Z a-z 0-9 . _ ~ @ + -".into());
        }
        if raw == "." || raw == ".." {
            return Err("userId may not be '.' or '..'".into());
        }
        if raw == "me" {
            return Err("userId 'me' is reserved for the token's own user".into());
        }
        Ok(Self(raw.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A position in the event log. Printed as `N` (SQLite's sequence) or `MS-SEQ` (a Redis
/// stream id); both parse, and they compare in natural order (`5` equals `5-0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EventId {
    pub major: u64,
    pub minor: u64,
}

impl EventId {
    /// The position before every event: replay from here sends everything retained.
    pub const ZERO: EventId = EventId { major: 0, minor: 0 };

    pub const fn new(major: u64, minor: u64) -> Self {
        Self { major, minor }
    }

    pub const fn from_seq(seq: u64) -> Self {
        Self::new(seq, 0)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.minor == 0 {
            write!(f, "{}", self.major)
        } else {
            write!(f, "{}-{}", self.major, self.minor)
        }
    }
}

/// Why a `Last-Event-ID` could not be read as an event id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an event id this server issues")]
pub struct BadEventId;

impl FromStr for EventId {
    type Err = BadEventId;

    fn from_str(raw: &str) -> Result<Self, BadEventId> {
        fn number(digits: &str) -> Result<u64, BadEventId> {
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BadEventId);
            }
            digits.parse().map_err(|_| BadEventId)
        }
        let raw = raw.trim();
        match raw.split_once('-') {
            None => Ok(Self::new(number(raw)?, 0)),
            Some((major, minor)) => Ok(Self::new(number(major)?, number(minor)?)),
        }
    }
}

impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The kinds of event a stream carries (the SSE `event:` field); an enum, so that field never
/// holds user input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventName {
    Connected,
    Notification,
    Announcement,
    Read,
    Resync,
    Reauth,
    Updated,
    Deleted,
    Archived,
}

impl EventName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Notification => "notification",
            Self::Announcement => "announcement",
            Self::Read => "read",
            Self::Resync => "resync",
            Self::Reauth => "reauth",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
            Self::Archived => "archived",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::Connected,
            Self::Notification,
            Self::Announcement,
            Self::Read,
            Self::Resync,
            Self::Reauth,
            Self::Updated,
            Self::Deleted,
            Self::Archived,
        ]
        .into_iter()
        .find(|name| name.as_str() == raw)
    }
}

/// The four kinds of notification; the type colours the page and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotificationKind {
    #[default]
    Info,
    Success,
    Warning,
    Error,
}

impl NotificationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Success => "success",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "info" => Some(Self::Info),
            "success" => Some(Self::Success),
            "warning" => Some(Self::Warning),
            "error" => Some(Self::Error),
            _ => None,
        }
    }
}

/// A notification as a publisher asked for it, validated and trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    pub kind: NotificationKind,
    pub title: String,
    pub message: String,
    pub link: Option<String>,
    pub data: Option<JsonObject>,
    pub category: Option<Category>,
    pub expires: Option<Expiry>,
    /// When it was accepted: its `timestamp`, and where a `ttl` counts from.
    pub accepted: OffsetDateTime,
}

impl NewNotification {
    /// Checks the text fields; `data`, `category` and expiry start absent (see
    /// [`NewNotification::with_extras`]).
    pub fn parse(
        kind: Option<&str>,
        title: Option<&str>,
        message: Option<&str>,
        link: Option<&str>,
    ) -> Result<Self, String> {
        let kind = match kind {
            None => NotificationKind::Info,
            Some(raw) => NotificationKind::parse(raw)
                .ok_or_else(|| "type must be one of info, success, warning, error".to_string())?,
        };
        let title = bounded_text("title", title, MAX_TITLE_CHARS)?;
        let message = bounded_text("message", message, MAX_MESSAGE_CHARS)?;
        let link = link.map(parse_link).transpose()?;
        Ok(Self {
            kind,
            title,
            message,
            link,
            data: None,
            category: None,
            expires: None,
            accepted: OffsetDateTime::now_utc(),
        })
    }

    /// Adds the publisher's `data`, a `category` and an expiry (`ttl` in seconds or
    /// `expiresAt`, at most `retention` away).
    pub fn with_extras(
        mut self,
        data: Option<&serde_json::value::RawValue>,
        category: Option<&str>,
        ttl: Option<u64>,
        expires_at: Option<&str>,
        retention: std::time::Duration,
    ) -> Result<Self, String> {
        self.data = data.map(JsonObject::parse).transpose()?;
        self.category = category.map(Category::parse).transpose()?;
        self.expires = Expiry::parse(ttl, expires_at, self.accepted, retention)?;
        Ok(self)
    }
}

impl NewNotification {
    /// The notification as stored: a fresh id, the time now, unread. The id is a UUIDv7, whose
    /// leading bits are the time: new ids sort after old ones, so the store's index on them
    /// grows at one end instead of touching a random page per insert.
    pub fn into_notification(self) -> Notification {
        Notification {
            id: uuid::Uuid::now_v7().to_string(),
            kind: self.kind,
            title: self.title,
            message: self.message,
            link: self.link,
            data: self.data,
            category: self.category,
            timestamp: format_time(self.accepted),
            expires_at: self.expires.map(|expiry| expiry.text),
            updated_at: None,
            read: false,
            archived: false,
        }
    }
}

/// An announcement as a publisher asked for it, validated and trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAnnouncement {
    pub title: String,
    pub message: String,
}

impl NewAnnouncement {
    pub fn parse(title: Option<&str>, message: Option<&str>) -> Result<Self, String> {
        Ok(Self {
            title: bounded_text("title", title, MAX_TITLE_CHARS)?,
            message: bounded_text("message", message, MAX_MESSAGE_CHARS)?,
        })
    }
}

impl NewAnnouncement {
    /// The announcement as sent: a fresh id and the time now.
    pub fn into_announcement(self) -> Announcement {
        Announcement {
            id: uuid::Uuid::now_v7().to_string(),
            kind: NotificationKind::Info,
            title: self.title,
            message: self.message,
            timestamp: timestamp_now(),
        }
    }
}

fn bounded_text(field: &str, raw: Option<&str>, max_chars: usize) -> Result<String, String> {
    let text = raw
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .ok_or_else(|| format!("{field} is required"))?;
    if text.chars().count() > max_chars {
        return Err(format!("{field} must be at most {max_chars} characters"));
    }
    Ok(text.to_owned())
}

/// A link is an absolute `http`/`https` URL or a path on this site (`/x`, never `//x`).
fn parse_link(raw: &str) -> Result<String, String> {
    const RULE: &str = "link must be an http(s) URL or a path starting with a single /";
    let link = raw.trim();
    if link.len() > MAX_LINK_LEN {
        return Err(format!("link must be at most {MAX_LINK_LEN} bytes"));
    }
    if link.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(RULE.into());
    }
    if link.starts_with('/') {
        if link.starts_with("//") || link.starts_with("/\\") {
            return Err(RULE.into());
        }
        return Ok(link.to_owned());
    }
    // The text itself must read `http://host...` or `https://host...`: the URL parser would
    // also accept and repair `http:/x`, `http:x` or `https:\\host`, which browsers read otherwise.
    let lower = link.to_ascii_lowercase();
    let spelled_out = lower.starts_with("http://") || lower.starts_with("https://");
    match url::Url::parse(link) {
        Ok(url)
            if spelled_out
                && !link.contains('\\')
                && matches!(url.scheme(), "http" | "https")
                && url.has_host() =>
        {
            Ok(link.to_owned())
        }
        _ => Err(RULE.into()),
    }
}

/// An `Idempotency-Key`: 1..=255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &[u8]) -> Result<Self, String> {
        if raw.is_empty()
            || raw.len() > MAX_IDEMPOTENCY_KEY_LEN
            || !raw.iter().all(|b| b.is_ascii_graphic())
        {
            return Err(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
            ));
        }
        Ok(Self(String::from_utf8_lossy(raw).into_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stored notification, exactly as it is sent on streams and returned by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Notification {
    /// A UUID chosen by the server.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: NotificationKind,
    pub title: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// The publisher's own JSON object, exactly as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<JsonObject>,
    /// `a-z 0-9 . _ -`, for filtering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    /// RFC 3339, UTC, millisecond precision.
    pub timestamp: String,
    /// When it stops existing: it is then gone from history and replay.
    #[serde(rename = "expiresAt", default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When it was last changed by a publisher.
    #[serde(rename = "updatedAt", default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    pub read: bool,
    /// Present, and true, once archived.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub archived: bool,
}

impl Notification {
    /// This notification's JSON after its `id` (its first field): `,"type":...}`. A copy that
    /// differs only by id encodes as `{"id":"` + id + `"` + this, so a publish to many users
    /// encodes the rest once.
    pub fn json_after_id(&self) -> serde_json::Result<String> {
        use serde::ser::Error;
        let json = serde_json::to_string(self)?;
        let head = format!("{{\"id\":{}", serde_json::to_string(&self.id)?);
        json.strip_prefix(&head).map(str::to_owned).ok_or_else(|| {
            serde_json::Error::custom("a notification's JSON must start with its id")
        })
    }
}

/// A notification's JSON exactly as the store keeps it and its `notification` event carries
/// it: encoded once, it is also the body of its publish's answer.
#[derive(Debug, Clone)]
pub struct NotificationJson(pub String);

impl NotificationJson {
    pub fn encode(notification: &Notification) -> serde_json::Result<Self> {
        serde_json::to_string(notification).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A broadcast, sent to every stream as an `announcement` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Announcement {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: NotificationKind,
    pub title: String,
    pub message: String,
    pub timestamp: String,
}

/// Now, as the RFC 3339 UTC text with milliseconds that JavaScript's `toISOString` writes.
pub fn timestamp_now() -> String {
    format_time(OffsetDateTime::now_utc())
}

/// Now, in milliseconds since the Unix epoch: the clock every expiry and retention age is read by.
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

/// A Unix time in milliseconds as [`timestamp_now`] writes times.
pub fn format_unix_ms(unix_ms: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format_time(at)
}

fn format_time(at: OffsetDateTime) -> String {
    const ISO_MILLIS: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.to_offset(time::UtcOffset::UTC)
        .format(ISO_MILLIS)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn user_ids_follow_the_spec_alphabet() {
        for ok in ["a", "alice", "A.b_c~d@e+f-g", &"x".repeat(128)] {
            assert!(UserId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "me",
            "a/b",
            "a b",
            "é",
            "a%2F",
            &"x".repeat(129),
        ] {
            assert!(UserId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn event_ids_parse_both_shapes_and_compare_naturally() {
        assert_eq!("42".parse(), Ok(EventId::from_seq(42)));
        assert_eq!("5-0".parse(), Ok(EventId::from_seq(5)));
        assert_eq!(
            "1732543000123-7".parse(),
            Ok(EventId::new(1_732_543_000_123, 7))
        );
        assert!(EventId::from_seq(9) < EventId::from_seq(10));
        assert!(EventId::new(10, 0) < EventId::new(10, 1));
        for bad in [
            "",
            "-",
            "a",
            "1-",
            "-1",
            "1-2-3",
            "+1",
            "99999999999999999999",
            "1.5",
        ] {
            assert_eq!(bad.parse::<EventId>(), Err(BadEventId), "{bad}");
        }
        assert_eq!(EventId::new(7, 3).to_string(), "7-3");
        assert_eq!(EventId::from_seq(7).to_string(), "7");
    }

    #[test]
    fn notifications_are_trimmed_and_bounded() {
        let n = NewNotification::parse(Some("success"), Some("  Hi "), Some(" there "), None)
            .expect("valid");
        assert_eq!((n.title.as_str(), n.message.as_str()), ("Hi", "there"));
        assert_eq!(n.kind, NotificationKind::Success);
        assert!(NewNotification::parse(None, Some("   "), Some("m"), None).is_err());
        assert!(NewNotification::parse(None, Some("t"), None, None).is_err());
        assert!(NewNotification::parse(Some("fatal"), Some("t"), Some("m"), None).is_err());
        let long = "é".repeat(200);
        assert!(NewNotification::parse(None, Some(&long), Some("m"), None).is_ok());
        let longer = "é".repeat(201);
        assert!(NewNotification::parse(None, Some(&longer), Some("m"), None).is_err());
    }

    #[test]
    fn links_are_http_urls_or_local_paths() {
        for ok in ["https://example.com/x", "http://a.b", "/inbox/3", "/"] {
            assert!(parse_link(ok).is_ok(), "{ok}");
        }
        for bad in [
            "//evil.com",
            "/\\evil.com",
            "javascript:alert(1)",
            "ftp://x",
            "inbox",
            "https://",
            "/a b",
            "data:text/html,x",
            "http:/x",
            "http:x",
            "https:\\\\evil.com",
            "https://evil.com\\@good.com",
        ] {
            assert!(parse_link(bad).is_err(), "{bad}");
        }
    }

    /// The user id rule of docs/protocol.md#publishing, written out independently of
    /// [`UserId::parse`].
    fn spec_allows_user_id(raw: &str) -> bool {
        let alphabet = |c: char| c.is_ascii_alphanumeric() || "._~@+-".contains(c);
        (1..=128).contains(&raw.chars().count())
            && raw.chars().all(alphabet)
            && !matches!(raw, "." | ".." | "me")
    }

    /// What `raw` means as an event id, if it is one: `N` or `N-M`, each a u64, around which
    /// whitespace is ignored.
    fn spec_event_id(raw: &str) -> Option<EventId> {
        fn number(digits: &str) -> Option<u64> {
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let significant = digits.trim_start_matches('0');
            if significant.len() > 20 {
                return None;
            }
            let value: u128 = if significant.is_empty() {
                0
            } else {
                significant.parse().ok()?
            };
            u64::try_from(value).ok()
        }
        let raw = raw.trim();
        let mut parts = raw.splitn(2, '-');
        let major = number(parts.next()?)?;
        let minor = match parts.next() {
            None => 0,
            Some(minor) => number(minor)?,
        };
        Some(EventId::new(major, minor))
    }

    /// Any string at all, and strings near the rules: the alphabet, digits and dashes, the
    /// reserved words, whitespace and lengths around the bounds.
    fn near(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
        prop_oneof![
            2 => prop::collection::vec(any::<char>(), 0..max).prop_map(String::from_iter),
            3 => {
                let alphabet: Vec<char> = alphabet.chars().collect();
                prop::collection::vec(prop::sample::select(alphabet), 0..max)
                    .prop_map(String::from_iter)
            },
            1 => prop::sample::select(vec![".", "..", "me", "", " ", "-", "0", "\u{0}", "é"])
                .prop_map(str::to_owned),
        ]
    }

    /// Text with whitespace of several kinds around a core whose length is often at a bound.
    fn padded_text(bound: usize) -> impl Strategy<Value = Option<String>> {
        let core_len = prop_oneof![
            Just(0),
            Just(1),
            Just(bound - 1),
            Just(bound),
            Just(bound + 1),
            0..bound + 2
        ];
        // Long cores repeat a few characters: random ones throughout would make thousands of
        // cases slow without finding more.
        let core = core_len.prop_flat_map(|n| {
            prop_oneof![
                Just("é".repeat(n)),
                (any::<char>(), any::<char>()).prop_map(move |(a, b)| {
                    std::iter::once(a)
                        .chain(std::iter::repeat_n(b, n.saturating_sub(1)))
                        .take(n)
                        .collect()
                }),
                prop::collection::vec(any::<char>(), n.min(64)).prop_map(move |mut chars| {
                    chars.resize(n, 'x');
                    String::from_iter(chars)
                }),
            ]
        });
        let space = prop::collection::vec(
            prop::sample::select(vec![
                ' ', '\t', '\n', '\r', '\u{a0}', '\u{3000}', '\u{2028}',
            ]),
            0..3,
        )
        .prop_map(String::from_iter);
        prop::option::weighted(
            0.95,
            (space.clone(), core, space).prop_map(|(a, b, c)| a + &b + &c),
        )
    }

    fn kind() -> impl Strategy<Value = Option<String>> {
        prop::option::of(prop_oneof![
            prop::sample::select(vec![
                "info", "success", "warning", "error", "Info", "fatal", ""
            ])
            .prop_map(str::to_owned),
            any::<String>(),
        ])
    }

    fn link() -> impl Strategy<Value = Option<String>> {
        prop::option::of(prop_oneof![
            "/[a-z0-9/?#=&._-]{0,30}",
            "(https?|ftp|javascript|data):(//)?[a-z.]{0,12}(/[a-z]{0,8})?",
            "[ \t]{0,2}(//|/\\\\)[a-z.]{0,12}",
            prop::collection::vec(any::<char>(), 0..40).prop_map(String::from_iter),
            Just("/".repeat(MAX_LINK_LEN + 1)),
        ])
    }

    /// Whether `raw`, trimmed, is 1..=`max` characters (the rule for title and message).
    fn trimmed_within(raw: Option<&str>, max: usize) -> bool {
        raw.map(str::trim)
            .is_some_and(|text| (1..=max).contains(&text.chars().count()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn a_user_id_is_accepted_exactly_when_the_spec_allows_it(
            raw in near("abzAZ09._~@+-/ %", 140),
        ) {
            match UserId::parse(&raw) {
                Ok(user) => {
                    prop_assert!(spec_allows_user_id(&raw), "accepted {raw:?}");
                    prop_assert_eq!(user.as_str(), raw.as_str());
                }
                Err(message) => {
                    prop_assert!(!spec_allows_user_id(&raw), "refused {raw:?}");
                    prop_assert!(!message.is_empty());
                }
            }
        }

        #[test]
        fn an_event_id_is_accepted_exactly_when_it_is_n_or_n_dash_m(raw in prop_oneof![
            near("0123456789- ", 48),
            "[ \t]{0,2}[0-9]{1,21}(-[0-9]{1,21})?[ \t]{0,2}",
        ]) {
            let parsed = raw.parse::<EventId>();
            prop_assert_eq!(parsed.as_ref().ok().copied(), spec_event_id(&raw), "{:?}", raw);
            if let Ok(id) = parsed {
                // Whatever was accepted prints canonically and reads back as itself.
                prop_assert_eq!(id.to_string().parse::<EventId>(), Ok(id));
            }
        }

        #[test]
        fn every_event_id_round_trips_through_its_canonical_text(
            major: u64,
            minor in prop_oneof![Just(0u64), any::<u64>()],
        ) {
            let id = EventId::new(major, minor);
            let text = id.to_string();
            let canonical = match minor {
                0 => major.to_string(),
                _ => format!("{major}-{minor}"),
            };
            prop_assert_eq!(&text, &canonical);
            prop_assert_eq!(text.parse::<EventId>(), Ok(id));
        }
    }

    proptest! {
        // Fewer cases: each builds texts of up to 4000 characters.
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn a_notification_is_accepted_exactly_when_its_fields_follow_the_spec(
            kind in kind(),
            title in padded_text(MAX_TITLE_CHARS),
            message in padded_text(MAX_MESSAGE_CHARS),
            link in link(),
        ) {
            let (kind, title, message, link) =
                (kind.as_deref(), title.as_deref(), message.as_deref(), link.as_deref());
            let kind_ok =
                kind.is_none_or(|k| ["info", "success", "warning", "error"].contains(&k));
            // Links have a property of their own below; here they only pass or fail.
            let link_ok = link.is_none_or(|l| parse_link(l).is_ok());
            let valid = kind_ok
                && trimmed_within(title, MAX_TITLE_CHARS)
                && trimmed_within(message, MAX_MESSAGE_CHARS)
                && link_ok;
            let result = NewNotification::parse(kind, title, message, link);
            prop_assert_eq!(result.is_ok(), valid, "{:?}", result);
            if let Ok(n) = result {
                prop_assert_eq!(n.kind.as_str(), kind.unwrap_or("info"));
                prop_assert_eq!(Some(n.title.as_str()), title.map(str::trim));
                prop_assert_eq!(Some(n.message.as_str()), message.map(str::trim));
                prop_assert_eq!(n.link.as_deref(), link.map(str::trim));
                if let Some(kept) = &n.link {
                    prop_assert!(kept.len() <= MAX_LINK_LEN);
                    prop_assert!(
                        !kept.chars().any(|c| c.is_control() || c.is_whitespace()),
                        "{kept:?}"
                    );
                    if kept.starts_with('/') {
                        prop_assert!(
                            !kept.starts_with("//") && !kept.starts_with("/\\"),
                            "{kept:?}"
                        );
                    } else {
                        let url = url::Url::parse(kept).expect("an absolute URL");
                        prop_assert!(matches!(url.scheme(), "http" | "https"), "{kept:?}");
                        prop_assert!(url.has_host(), "{kept:?}");
                    }
                }
            }
        }

        #[test]
        fn a_single_slash_path_or_an_http_url_with_a_host_is_a_link_and_nothing_near_it_is(
            path in "/[a-z0-9?#=&._-][a-z0-9/?#=&._-]{0,30}",
            host in "[a-z]{1,10}(\\.[a-z]{2,5})?",
            scheme in prop::sample::select(vec!["http", "https", "HTTPS"]),
        ) {
            prop_assert_eq!(parse_link(&path), Ok(path.clone()));
            let url = format!("{scheme}://{host}{path}");
            prop_assert_eq!(parse_link(&url), Ok(url.clone()));
            for bad in [
                format!("/{path}"),
                format!("/\\{host}{path}"),
                format!("javascript:{host}{path}"),
                format!("ftp://{host}{path}"),
                format!("{host}{path}"),
                format!("{scheme}://{host}{path} x"),
                format!("{path}\u{0}"),
            ] {
                prop_assert!(parse_link(&bad).is_err(), "{bad:?}");
            }
        }

        #[test]
        fn an_announcement_is_accepted_exactly_when_title_and_message_are_within_bounds(
            title in padded_text(MAX_TITLE_CHARS),
            message in padded_text(MAX_MESSAGE_CHARS),
        ) {
            let (title, message) = (title.as_deref(), message.as_deref());
            let valid = trimmed_within(title, MAX_TITLE_CHARS)
                && trimmed_within(message, MAX_MESSAGE_CHARS);
            let result = NewAnnouncement::parse(title, message);
            prop_assert_eq!(result.is_ok(), valid);
            if let Ok(a) = result {
                prop_assert_eq!(Some(a.title.as_str()), title.map(str::trim));
                prop_assert_eq!(Some(a.message.as_str()), message.map(str::trim));
            }
        }
    }

    #[test]
    fn a_notification_spliced_after_its_id_is_the_notification_encoded_whole() {
        let raw: Box<serde_json::value::RawValue> =
            serde_json::from_str(r#"{"b": [1, "\"x\""], "a": {}}"#).expect("JSON");
        let new = NewNotification::parse(Some("warning"), Some("T"), Some("M"), Some("/x"))
            .and_then(|n| {
                n.with_extras(
                    Some(&raw),
                    Some("ops"),
                    Some(60),
                    None,
                    std::time::Duration::from_secs(600),
                )
            })
            .expect("valid");
        let mut notification = new.into_notification();
        for id in ["01a2489d-92ba-73d4-90ed-545daec7c0f0", "other"] {
            notification.id = id.into();
            let after_id = notification.json_after_id().expect("encoded");
            assert!(after_id.starts_with(r#","type":"warning""#), "{after_id}");
            let spliced = format!(r#"{{"id":"{id}"{after_id}"#);
            assert_eq!(
                spliced,
                serde_json::to_string(&notification).expect("encoded")
            );
        }
    }

    #[test]
    fn timestamps_look_like_javascript_iso_strings() {
        let ts = timestamp_now();
        assert_eq!(ts.len(), "2024-01-01T00:00:00.000Z".len(), "{ts}");
        assert!(ts.ends_with('Z'));
    }
}
