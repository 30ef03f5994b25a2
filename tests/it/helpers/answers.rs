//! Reading what the API answers: the `{"error"}` body, history pages, ids, Prometheus samples,
//! headers, and [`Answer`], a response kept whole with the `Retry-After` a refusal carries.

use herald::domain::EventId;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName};
use serde_json::Value;

/// Asserts `status` is `expected` and the body is exactly `{"error": "<non-empty text>"}`.
pub fn assert_error(case: &str, expected: StatusCode, status: StatusCode, body: &Value) {
    assert_eq!(status, expected, "{case}: {body}");
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("{case}: the error body is not an object: {body}"));
    assert_eq!(object.len(), 1, "{case}: only `error` is expected: {body}");
    let message = object["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{case}: `error` is not a string: {body}"));
    assert!(!message.trim().is_empty(), "{case}: empty error message");
}

/// The sorted keys of a JSON object.
pub fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// The ids of a history page, in the order given.
pub fn page_ids(page: &Value) -> Vec<String> {
    page["notifications"]
        .as_array()
        .expect("notifications array")
        .iter()
        .map(|n| n["id"].as_str().expect("id").to_owned())
        .collect()
}

/// The titles of a history page, in the order given.
pub fn page_titles(page: &Value) -> Vec<String> {
    page["notifications"]
        .as_array()
        .expect("notifications array")
        .iter()
        .map(|n| n["title"].as_str().expect("title").to_owned())
        .collect()
}

/// The id of a stored notification.
pub fn id_of(notification: &Value) -> &str {
    notification["id"].as_str().expect("id")
}

/// An event id as it orders (`N` on SQLite; `MS` or `MS-SEQ` on Redis, the stream entry's id):
/// a later event's is greater.
pub fn order(id: &str) -> EventId {
    id.parse()
        .unwrap_or_else(|_| panic!("an event id is N or N-M: {id}"))
}

/// The value of one series (`name` or `name{labels}`) in Prometheus text.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse::<f64>().expect("a number"))
        })
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// A header's value, if present.
pub fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers
        .get(name)
        .map(|value| value.to_str().expect("ascii"))
}

/// A header's values as lowercase comma-separated items.
pub fn header_items(headers: &HeaderMap, name: HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.to_str().expect("ascii").split(','))
        .map(|item| item.trim().to_ascii_lowercase())
        .collect()
}

/// A response as the limits tests look at it.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// `Retry-After`, which must be whole seconds when present.
    retry_after: Option<u64>,
    content_type: Option<String>,
    /// The body as JSON, or as a JSON string when it is not JSON.
    pub body: Value,
}

impl Answer {
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let retry_after = headers.get("retry-after").map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|text| text.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("Retry-After is not whole seconds: {value:?}"))
        });
        let content_type = headers
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.expect("body read");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Self {
            status,
            retry_after,
            content_type,
            body,
        }
    }

    /// Asserts a refusal: `status`, a JSON `{"error": "..."}` and a `Retry-After` of at least
    /// one second, which is returned.
    pub fn assert_refused(&self, case: &str, status: StatusCode) -> u64 {
        assert_eq!(self.status, status, "{case}: {self:?}");
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/json"),
            "{case}: an error, never an event stream"
        );
        let message = self.body["error"].as_str().unwrap_or_default();
        assert!(!message.trim().is_empty(), "{case}: {self:?}");
        let seconds = self
            .retry_after
            .unwrap_or_else(|| panic!("{case}: no Retry-After"));
        assert!(seconds >= 1, "{case}: Retry-After {seconds}");
        seconds
    }
}
