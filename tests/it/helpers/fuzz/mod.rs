//! The machinery of the property test in `fuzz.rs`: random requests ([`requests`]), the rules
//! every answer must obey ([`run_probe`]), what a stream opened from any id must send
//! ([`streams`]), and [`Recorder`]s of what some users' streams received, to check replays
//! against.

mod requests;
mod streams;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::WAIT;
use super::app::TestApp;
use super::sse::Received;
use requests::{LAST, Probe, is_valid_user};

pub use requests::probe;

/// Users whose every event is recorded, so a replay can be checked event for event.
pub const USERS: [&str; 3] = ["fuzz-a", "fuzz_b", "Fuzz.c"];

// ---------------------------------------------------------------------------------------------
// Recording what the fuzzed users receive.

/// A stream of one user read to the end by a task; every event it got, in order.
pub struct Recorder {
    events: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl Recorder {
    /// Opens `user`'s stream and starts recording it.
    pub async fn open(app: &TestApp, user: &str) -> Self {
        let mut stream = app.subscribe(user, None).await;
        stream.expect_connected().await;
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let task = tokio::spawn(async move {
            // The run is bounded by CASES; an hour is only a backstop for a wedged server.
            while let Some(event) = stream.try_next_event(Duration::from_secs(3600)).await {
                sink.lock().unwrap().push(event);
            }
        });
        Self { events, task }
    }

    /// Waits until the event with this notification id has arrived; everything before it then
    /// has too. Returns every event so far.
    pub async fn wait_for(&self, notification_id: &str) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            {
                let events = self.events.lock().unwrap();
                if events.iter().any(|e| e.data["id"] == notification_id) {
                    return events.clone();
                }
            }
            assert!(!self.task.is_finished(), "a recorded stream ended");
            assert!(
                tokio::time::Instant::now() < deadline,
                "{notification_id} never reached its recorder"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Harness {
    /// `id`, or for [`LAST`] the id of the newest notification `user`'s recorder received.
    fn resolve(&self, user: &str, id: String) -> String {
        if id != LAST {
            return id;
        }
        let Some(recorder) = self.recorders.get(user) else {
            return id;
        };
        let events = recorder.events.lock().unwrap();
        events
            .iter()
            .rev()
            .find(|event| event.event == "notification")
            .and_then(|event| event.data["id"].as_str())
            .map_or(id, str::to_owned)
    }
}

/// The one server of a run and the recorders of [`USERS`].
pub struct Harness {
    pub app: TestApp,
    pub recorders: BTreeMap<&'static str, Recorder>,
}

// ---------------------------------------------------------------------------------------------
// Checks.

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

async fn send(request: reqwest::RequestBuilder) -> Result<reqwest::Response, TestCaseError> {
    tokio::time::timeout(WAIT, request.send())
        .await
        .map_err(|_| fail("no response in time".into()))?
        .map_err(|error| fail(format!("the request failed: {error}")))
}

/// The universal rules: no 5xx, and a 4xx carries exactly `{"error": "<text>"}`. Returns the
/// status and the body read as JSON, when it is JSON.
async fn checked(
    case: &str,
    response: reqwest::Response,
) -> Result<(StatusCode, Option<Value>), TestCaseError> {
    let status = response.status();
    let bytes = tokio::time::timeout(WAIT, response.bytes())
        .await
        .map_err(|_| fail(format!("{case}: the body did not arrive in time")))?
        .map_err(|error| fail(format!("{case}: the body failed: {error}")))?;
    let json = serde_json::from_slice::<Value>(&bytes).ok();
    let text = String::from_utf8_lossy(&bytes);
    prop_assert!(!status.is_server_error(), "{case}: {status} {text}");
    if status.is_client_error() {
        let error = json
            .as_ref()
            .and_then(|v| v.as_object())
            .filter(|o| o.len() == 1);
        let message = error.and_then(|o| o.get("error")).and_then(Value::as_str);
        prop_assert!(
            message.is_some_and(|m| !m.trim().is_empty()),
            "{case}: {status} without a JSON {{\"error\"}}: {text}"
        );
    }
    Ok((status, json))
}

/// What docs/protocol.md#publishing promises of any notification the server accepted.
fn check_notification(case: &str, n: &Value) -> Result<(), TestCaseError> {
    let object = n.as_object().ok_or_else(|| fail(format!("{case}: {n}")))?;
    for key in object.keys() {
        prop_assert!(
            [
                "id",
                "type",
                "title",
                "message",
                "link",
                "timestamp",
                "read",
                "data",
                "category",
                "updatedAt",
                "archived"
            ]
            .contains(&key.as_str()),
            "{case}: unexpected key {key} in {n}"
        );
    }
    let text = |key: &str, max: usize| -> Result<(), TestCaseError> {
        let value = n[key]
            .as_str()
            .ok_or_else(|| fail(format!("{case}: no {key}: {n}")))?;
        prop_assert!(value == value.trim(), "{case}: {key} not trimmed: {n}");
        prop_assert!(
            (1..=max).contains(&value.chars().count()),
            "{case}: {key} length: {n}"
        );
        Ok(())
    };
    text("title", 200)?;
    text("message", 4000)?;
    prop_assert!(
        ["info", "success", "warning", "error"].contains(&n["type"].as_str().unwrap_or("")),
        "{case}: type: {n}"
    );
    if let Some(link) = object.get("link") {
        let link = link.as_str().unwrap_or("");
        let path = link.starts_with('/') && !link.starts_with("//") && !link.starts_with("/\\");
        let url = link.starts_with("http://") || link.starts_with("https://");
        prop_assert!(path || url, "{case}: link {link:?} accepted");
    }
    prop_assert!(
        n["id"]
            .as_str()
            .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok())
    );
    prop_assert!(n["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    if let Some(data) = object.get("data") {
        prop_assert!(data.is_object(), "{case}: data {data}");
        prop_assert!(data.to_string().len() <= 8 * 1024, "{case}: data too big");
    }
    if let Some(category) = object.get("category") {
        let category = category.as_str().unwrap_or("");
        prop_assert!(
            (1..=64).contains(&category.len())
                && category
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)),
            "{case}: category {category:?} accepted"
        );
    }
    Ok(())
}

/// Sends one probe and checks its answer against the rules.
pub async fn run_probe(harness: &Harness, probe: Probe) -> Result<(), TestCaseError> {
    let app = &harness.app;
    match probe {
        Probe::Publish {
            user,
            content_type,
            key,
            body,
        } => {
            let case = format!("publish {user}");
            let mut request = app
                .client
                .post(app.url(&format!("/api/notifications/{user}")))
                .body(body.into_bytes());
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            if let Some(key) = key {
                let key = HeaderValue::from_bytes(&key).map_err(|e| fail(e.to_string()))?;
                request = request.header("idempotency-key", key);
            }
            let (status, json) = checked(&case, send(request).await?).await?;
            if status.is_success() {
                prop_assert!(is_valid_user(&user), "{case}: accepted");
                let n = json.ok_or_else(|| fail(format!("{case}: not JSON")))?;
                check_notification(&case, &n)?;
            }
        }
        Probe::Broadcast { content_type, body } => {
            let mut request = app
                .client
                .post(app.url("/api/broadcast"))
                .body(body.into_bytes());
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            let (status, json) = checked("broadcast", send(request).await?).await?;
            if status.is_success() {
                let answer = json.unwrap_or_default();
                prop_assert_eq!(&answer["sent"], &json!(true), "{}", answer);
                prop_assert!(
                    answer["connections"].as_u64().is_some_and(|n| n >= 3),
                    "{answer}"
                );
            }
        }
        Probe::History { user, query } => {
            let case = format!("history {user}{query}");
            let request = app
                .client
                .get(app.url(&format!("/api/notifications/{user}{query}")));
            let (status, json) = checked(&case, send(request).await?).await?;
            if status.is_success() {
                let page = json.ok_or_else(|| fail(format!("{case}: not JSON")))?;
                let notifications = page["notifications"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                prop_assert_eq!(&page["count"], &json!(notifications.len()), "{}", case);
                prop_assert!((1..=100).contains(&notifications.len()) || notifications.is_empty());
                prop_assert!(page["total"].as_u64() >= Some(notifications.len() as u64));
                prop_assert!(page["lastEventId"].is_string(), "{case}: {page}");
                for n in &notifications {
                    check_notification(&case, n)?;
                }
            }
        }
        Probe::MarkRead { user, id } => {
            let case = format!("read {user}/{id}");
            let request = app
                .client
                .post(app.url(&format!("/api/notifications/{user}/{id}/read")));
            checked(&case, send(request).await?).await?;
        }
        Probe::PublishMany { key, body } => {
            let mut request = app
                .client
                .post(app.url("/api/notifications"))
                .header("content-type", "application/json")
                .body(body.into_bytes());
            if let Some(key) = key {
                let key = HeaderValue::from_bytes(&key).map_err(|e| fail(e.to_string()))?;
                request = request.header("idempotency-key", key);
            }
            let (status, json) = checked("publish to many", send(request).await?).await?;
            if status.is_success() {
                let answer = json.unwrap_or_default();
                let sent = answer["notifications"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                prop_assert!((1..=1000).contains(&sent.len()), "{answer}");
                for one in &sent {
                    prop_assert!(one["userId"].as_str().is_some_and(is_valid_user));
                    prop_assert!(
                        one["id"]
                            .as_str()
                            .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok())
                    );
                }
            }
        }
        Probe::Patch { user, id, body } => {
            let id = harness.resolve(&user, id);
            let case = format!("patch {user}/{id}");
            let request = app
                .client
                .patch(app.url(&format!("/api/notifications/{user}/{id}")))
                .header("content-type", "application/json")
                .body(body.into_bytes());
            let (status, json) = checked(&case, send(request).await?).await?;
            if status.is_success() {
                let n = json.ok_or_else(|| fail(format!("{case}: not JSON")))?;
                check_notification(&case, &n)?;
                prop_assert_eq!(n["id"].as_str(), Some(id.as_str()));
                prop_assert!(n["updatedAt"].is_string(), "{case}: {n}");
            }
        }
        Probe::Archive { user, id, undo } => {
            let id = harness.resolve(&user, id);
            let action = if undo { "unarchive" } else { "archive" };
            let case = format!("{action} {user}/{id}");
            let request = app
                .client
                .post(app.url(&format!("/api/notifications/{user}/{id}/{action}")));
            let (status, json) = checked(&case, send(request).await?).await?;
            if status.is_success() {
                prop_assert_eq!(json, Some(json!({ "id": id, "archived": !undo })));
            }
        }
        Probe::Delete { user, id } => {
            let case = format!("delete {user}/{id}");
            let request = app
                .client
                .delete(app.url(&format!("/api/notifications/{user}/{id}")));
            let (status, _) = checked(&case, send(request).await?).await?;
            prop_assert_ne!(
                status,
                StatusCode::NO_CONTENT,
                "{}: nothing to delete",
                case
            );
        }
        Probe::ReadAll { user } => {
            let case = format!("read-all {user}");
            let request = app
                .client
                .post(app.url(&format!("/api/notifications/{user}/read-all")));
            let (status, json) = checked(&case, send(request).await?).await?;
            if status.is_success() {
                prop_assert!(json.unwrap_or_default()["updated"].is_u64(), "{case}");
            }
        }
        Probe::Stream {
            user,
            last_event_id,
            query,
        } => streams::check_stream(harness, &user, last_event_id.as_deref(), &query).await?,
        Probe::Other {
            method,
            path,
            query,
        } => {
            let case = format!("{method} {path}{query}");
            let request = app
                .client
                .request(method, app.url(&format!("{path}{query}")));
            let response = send(request).await?;
            if response
                .headers()
                .get("content-type")
                .is_some_and(|t| t == "text/event-stream")
            {
                // A stream opened by a path this probe built: nothing more to learn from it.
                return Ok(());
            }
            checked(&case, response).await?;
        }
    }
    Ok(())
}
