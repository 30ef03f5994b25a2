//! What the property test sends: random requests to every route, with random bodies, content
//! types, path segments, queries and header values, built as proptest strategies.

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use reqwest::Method;
use serde_json::{Value, json};

use super::USERS;

#[derive(Debug, Clone)]
pub enum Body {
    Json(Value),
    Text(String),
    Bytes(Vec<u8>),
}

impl Body {
    pub(super) fn into_bytes(self) -> Vec<u8> {
        match self {
            Self::Json(value) => value.to_string().into_bytes(),
            Self::Text(text) => text.into_bytes(),
            Self::Bytes(bytes) => bytes,
        }
    }
}

/// One random request. Path segments are sent percent-encoded, exactly as held here.
#[derive(Debug, Clone)]
pub enum Probe {
    Publish {
        user: String,
        content_type: Option<String>,
        key: Option<Vec<u8>>,
        body: Body,
    },
    Broadcast {
        content_type: Option<String>,
        body: Body,
    },
    History {
        user: String,
        query: String,
    },
    MarkRead {
        user: String,
        id: String,
    },
    /// `POST /api/notifications`: a near-valid body with a random `users` list.
    PublishMany {
        key: Option<Vec<u8>>,
        body: Body,
    },
    /// `PATCH` a notification: `id` is random, or [`LAST`] for the user's newest one.
    Patch {
        user: String,
        id: String,
        body: Body,
    },
    /// Archive or unarchive (`undo`) a notification: `id` as for [`Probe::Patch`].
    Archive {
        user: String,
        id: String,
        undo: bool,
    },
    /// `DELETE` a notification by a random id (never a real one: the recorders compare replays
    /// with what they received, and a delete takes events out of the log).
    Delete {
        user: String,
        id: String,
    },
    ReadAll {
        user: String,
    },
    Stream {
        user: String,
        last_event_id: Option<Vec<u8>>,
        query: String,
    },
    Other {
        method: Method,
        path: String,
        query: String,
    },
}

/// Stands for the id of the newest notification a recorded user's stream received.
pub const LAST: &str = "@last";

/// Unreserved bytes stay as they are; every other byte becomes `%XX`.
fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` (leaving a malformed `%` as it is), as the server does with a path segment.
pub(super) fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let hex = |b: u8| (b as char).to_digit(16);
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Whether the user id this segment decodes to is valid (docs/protocol.md#publishing).
pub(super) fn is_valid_user(segment: &str) -> bool {
    let Ok(user) = String::from_utf8(percent_decode(segment)) else {
        return false;
    };
    (1..=128).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~@+-".contains(&b))
        && user != "."
        && user != ".."
        && user != "me"
}

/// A path segment: mostly the recorded users, else random bytes and known edge cases. A segment
/// that is all dots is lengthened, since a URL parser would resolve it away before sending.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(USERS.to_vec()).prop_map(str::to_owned),
        3 => vec(any::<u8>(), 0..24).prop_map(|bytes| percent_encode(&bytes)),
        1 => "[A-Za-z0-9._~@+-]{1,12}",
        1 => select(vec![
            "me", "%6De", "a%2Fb", "a%20b", "%C3%A9", "a%00b", "a%FFb", "a%", "%", "%zz",
            "%E2%80%AE",
        ])
        .prop_map(str::to_owned),
        1 => (126usize..131).prop_map(|n| "x".repeat(n)),
    ]
    .prop_map(|segment| {
        let decoded = percent_decode(&segment);
        if decoded == b"." || decoded == b".." {
            format!("{segment}x")
        } else {
            segment
        }
    })
}

/// Text with the characters that break naive code: controls, NUL, bidi marks, BOM, non-BMP,
/// quotes and backslashes, and lengths on either side of every limit.
fn text() -> impl Strategy<Value = String> {
    let special: Vec<char> = concat!(
        "\0\u{1}\u{1b}\u{7f}\u{85}\n\r\t \u{a0}\u{200b}\u{200f}\u{202e}\u{2028}",
        "\u{feff}\u{fffd}\u{ffff}\u{10ffff}é🦀\"\\<>&/%aZ0",
    )
    .chars()
    .collect();
    prop_oneof![
        3 => ".{0,40}",
        3 => vec(select(special), 0..24).prop_map(|chars| chars.into_iter().collect::<String>()),
        2 => (
            select(vec!["x", "é", "🦀", " ", "\u{202e}"]),
            select(vec![0usize, 1, 2, 199, 200, 201, 3999, 4000, 4001, 20_000]),
        )
            .prop_map(|(unit, n)| unit.repeat(n)),
        2 => select(vec![
            "info", "success", "warning", "error", "INFO", " info", "", "https://example.com/x",
            "http://a.b", "/inbox", "//evil.example", "/\\evil", "javascript:alert(1)",
            "data:text/html,x", "http://[::1", "https://", "ftp://x", "  padded  ",
        ])
        .prop_map(str::to_owned),
    ]
}

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(field_name(), inner, 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(vec![
            "type", "title", "message", "link", "id", "read", "timestamp", "data", "category",
            "users", "archived",
        ])
        .prop_map(str::to_owned),
        1 => ".{0,8}",
    ]
}

/// An object with the publish fields, each missing, plausible, tricky text, or any JSON value.
fn near_valid_object() -> impl Strategy<Value = Value> {
    let kind = option::weighted(
        0.75,
        prop_oneof![
            3 => select(vec!["info", "success", "warning", "error"]).prop_map(Value::from),
            1 => text().prop_map(Value::from),
            1 => json_value(),
        ],
    );
    let words = || {
        prop_oneof![
            4 => "[ -~]{1,30}".prop_map(Value::from),
            2 => text().prop_map(Value::from),
            1 => json_value(),
        ]
    };
    let link = option::of(prop_oneof![
        2 => select(vec!["https://example.com/a?b=c", "http://a.b", "/inbox/1", "/"])
            .prop_map(Value::from),
        2 => text().prop_map(Value::from),
        1 => json_value(),
    ]);
    (
        kind,
        option::weighted(0.9, words()),
        option::weighted(0.9, words()),
        prop_oneof![3 => Just(None), 2 => link],
        btree_map(field_name(), json_value(), 0..2),
    )
        .prop_map(|(kind, title, message, link, extra)| {
            let mut object: serde_json::Map<String, Value> = extra.into_iter().collect();
            let fields = [
                ("type", kind),
                ("title", title),
                ("message", message),
                ("link", link),
            ];
            for (name, value) in fields {
                if let Some(value) = value {
                    object.insert(name.to_owned(), value);
                }
            }
            Value::Object(object)
        })
}

/// Bodies that are not JSON, or are JSON a parser can trip on.
fn raw_text_body() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            r#"{"title":"\ud800","message":"m"}"#,
            r#"{"title":"\udc00\ud800","message":"m"}"#,
            r#"{"title":"\ud83e\udd80","message":"\u0000\u202e"}"#,
            r#"{"title":"\u00","message":"m"}"#,
            r#"{"title":"t","message":"m""#,
            r#"{"title":"t","message":"m"}{"#,
            r#"{"title":"t","title":"u","message":"m"}"#,
            "{",
            "}",
            "[",
            "nul",
            "",
            " ",
            "\u{feff}{\"title\":\"t\",\"message\":\"m\"}",
        ])
        .prop_map(str::to_owned),
        (1usize..3000).prop_map(|depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth))),
        (1usize..400).prop_map(|depth| format!(
            r#"{{"title":"t","message":"m","x":{}1{}}}"#,
            r#"{"a":"#.repeat(depth),
            "}".repeat(depth)
        )),
        vec(
            select(vec![
                '{', '}', '[', ']', '"', '\\', 'u', 'd', '8', '0', ':', ',', 'a', ' '
            ]),
            0..80
        )
        .prop_map(|chars| chars.into_iter().collect::<String>()),
    ]
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        8 => near_valid_object().prop_map(Body::Json),
        2 => json_value().prop_map(Body::Json),
        2 => raw_text_body().prop_map(Body::Text),
        1 => vec(any::<u8>(), 0..300).prop_map(Body::Bytes),
        1 => (60_000usize..70_000).prop_map(|n| {
            Body::Json(json!({ "title": "t", "message": "m", "pad": "p".repeat(n) }))
        }),
    ]
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        8 => Just(Some("application/json".to_owned())),
        1 => Just(Some("application/json; charset=utf-8".to_owned())),
        1 => Just(Some("text/plain".to_owned())),
        1 => Just(None),
        1 => Just(Some("application/x-www-form-urlencoded".to_owned())),
        1 => Just(Some("application/problem+json".to_owned())),
        1 => "[ -~]{0,30}".prop_map(Some),
    ]
}

/// Header bytes `reqwest` can send: visible ASCII, space, tab and bytes 0x80..=0xFF.
fn header_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(
        prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\t'), 1 => 0x80u8..=0xff],
        0..max,
    )
}

fn idempotency_key() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        3 => Just(None),
        2 => "[!-~]{1,12}".prop_map(|key| Some(key.into_bytes())),
        1 => header_bytes(300).prop_map(Some),
    ]
}

fn last_event_id() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        2 => Just(None),
        3 => "[0-9]{1,3}".prop_map(|s| Some(s.into_bytes())),
        1 => "[0-9]{15,30}".prop_map(|s| Some(s.into_bytes())),
        1 => "[0-9]{1,4}-[0-9]{1,4}".prop_map(|s| Some(s.into_bytes())),
        1 => "[0-9-]{0,10}".prop_map(|s| Some(s.into_bytes())),
        1 => "[ -~]{0,40}".prop_map(|s| Some(s.into_bytes())),
        1 => header_bytes(30).prop_map(Some),
        1 => select(vec!["", " ", "0", "00", "18446744073709551615", "18446744073709551616", "1-0"])
            .prop_map(|s| Some(s.as_bytes().to_vec())),
    ]
}

/// A query string (with its `?`), made only of characters a URL parser leaves alone.
fn query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        4 => select(vec!["limit", "before", "unread", "lastEventId"]).prop_map(str::to_owned),
        1 => "[a-zA-Z0-9%+._~-]{0,8}",
    ];
    let value = prop_oneof![
        3 => "[0-9]{0,4}",
        1 => "-?[0-9]{1,25}",
        2 => select(vec!["true", "false", "1", "0", "", "yes", "TRUE"]).prop_map(str::to_owned),
        2 => vec(any::<u8>(), 0..16).prop_map(|bytes| percent_encode(&bytes)),
        1 => "[a-zA-Z0-9%+=._~-]{0,20}",
    ];
    prop_oneof![
        1 => Just(String::new()),
        4 => vec((key, value), 1..4).prop_map(|pairs| {
            let joined: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("?{}", joined.join("&"))
        }),
        1 => "[a-zA-Z0-9%&=+._~-]{0,30}".prop_map(|raw| format!("?{raw}")),
    ]
}

/// A `users` list: mostly the recorded users and valid ids, sometimes faults (duplicates, bad
/// ids, the wrong type, too many).
fn users() -> impl Strategy<Value = Value> {
    let one = prop_oneof![
        4 => select(USERS.to_vec()).prop_map(Value::from),
        2 => "[A-Za-z0-9._~@+-]{1,12}".prop_map(Value::from),
        1 => text().prop_map(Value::from),
        1 => json_value(),
    ];
    prop_oneof![
        6 => vec(one, 0..6).prop_map(Value::Array),
        1 => (990usize..1010).prop_map(|n| Value::from((0..n).map(|i| format!("u{i}")).collect::<Vec<_>>())),
        1 => json_value(),
    ]
}

/// A notification id in a path: random, or [`LAST`].
fn notification_id() -> impl Strategy<Value = String> {
    prop_oneof![2 => Just(LAST.to_owned()), 3 => segment()]
}

pub fn probe() -> impl Strategy<Value = Probe> {
    let other_path = prop_oneof![
        select(
            "/ /api /api/stats /healthz /readyz /metrics /openapi.json /api/broadcast /nope \
             /api/notifications /events"
                .split_whitespace()
                .collect::<Vec<_>>()
        )
        .prop_map(str::to_owned),
        (segment(), segment()).prop_map(|(a, b)| format!("/api/notifications/{a}/{b}")),
        (segment(), segment(), segment()).prop_map(|(a, b, c)| format!("/{a}/{b}/{c}")),
    ];
    let method = select(vec![
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
    ]);
    prop_oneof![
        6 => (segment(), content_type(), idempotency_key(), body()).prop_map(
            |(user, content_type, key, body)| Probe::Publish { user, content_type, key, body }
        ),
        2 => (content_type(), body())
            .prop_map(|(content_type, body)| Probe::Broadcast { content_type, body }),
        3 => (segment(), query()).prop_map(|(user, query)| Probe::History { user, query }),
        1 => (segment(), segment()).prop_map(|(user, id)| Probe::MarkRead { user, id }),
        1 => segment().prop_map(|user| Probe::ReadAll { user }),
        2 => (idempotency_key(), near_valid_object(), option::weighted(0.9, users())).prop_map(
            |(key, mut body, users)| {
                if let (Some(users), Some(object)) = (users, body.as_object_mut()) {
                    object.insert("users".into(), users);
                }
                Probe::PublishMany { key, body: Body::Json(body) }
            }
        ),
        2 => (segment(), notification_id(), prop_oneof![
            3 => btree_map(field_name(), json_value(), 0..4)
                .prop_map(|fields| Body::Json(Value::Object(fields.into_iter().collect()))),
            1 => body(),
        ])
            .prop_map(|(user, id, body)| Probe::Patch { user, id, body }),
        1 => (segment(), notification_id(), any::<bool>())
            .prop_map(|(user, id, undo)| Probe::Archive { user, id, undo }),
        1 => (segment(), segment()).prop_map(|(user, id)| Probe::Delete { user, id }),
        4 => (segment(), last_event_id(), query()).prop_map(|(user, last_event_id, query)| {
            Probe::Stream { user, last_event_id, query }
        }),
        2 => (method, other_path, query())
            .prop_map(|(method, path, query)| Probe::Other { method, path, query }),
    ]
}
