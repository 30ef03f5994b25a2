//! Streams opened from random `Last-Event-ID` values: what each must begin with, and a check that
//! what it then sends is exactly what the user missed.

use eventsource_stream::Eventsource;
use futures::StreamExt;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

use super::requests::{is_valid_user, percent_decode};
use super::{Harness, USERS, checked, fail, send};
use herald::domain::EventId;

use crate::helpers::{Received, TestApp, WAIT};

/// How a stream opened from a given `Last-Event-ID` must begin, given the newest id.
#[derive(Debug, PartialEq)]
enum Expected {
    /// No id: live events only.
    Live,
    /// A valid id: every event after it that the user may see, then live.
    Replay(EventId),
    /// An id the server never issued: `resync` first.
    Resync,
    /// Forms the server may read either way (`007`, `5-0`, `5-1`): replay after this number, or
    /// `resync`.
    ReplayOrResync(EventId),
}

fn expected_start(header: Option<&[u8]>, query: &str, newest: EventId) -> Expected {
    let from_query: Vec<String> =
        url::form_urlencoded::parse(query.trim_start_matches('?').as_bytes())
            .filter(|(k, _)| k == "lastEventId")
            .map(|(_, v)| v.into_owned())
            .collect();
    let raw = match header {
        // A value that is not visible ASCII is unreadable as an id.
        Some(bytes) => Some(
            std::str::from_utf8(bytes)
                .ok()
                .filter(|s| s.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)))
                .map_or_else(|| "\u{fffd}".to_owned(), str::to_owned),
        ),
        None => from_query.into_iter().next(),
    };
    let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
        return Expected::Live;
    };
    let id = raw.trim();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(id) {
        return match id.parse::<u64>().map(EventId::from_seq) {
            Ok(n) if n > newest => Expected::Resync,
            Ok(n) if id.len() > 1 && id.starts_with('0') => Expected::ReplayOrResync(n),
            Ok(n) => Expected::Replay(n),
            Err(_) => Expected::Resync,
        };
    }
    match id.split_once('-') {
        Some((major, minor)) if digits(major) && digits(minor) => {
            match (major.parse::<u64>(), minor.parse::<u64>()) {
                (Ok(n), Ok(m)) if EventId::new(n, m) <= newest => {
                    Expected::ReplayOrResync(EventId::new(n, m))
                }
                _ => Expected::Resync,
            }
        }
        _ => Expected::Resync,
    }
}

async fn newest_id(app: &TestApp) -> Result<EventId, TestCaseError> {
    let (status, page) = app
        .get_json(&format!("/api/notifications/{}?limit=1", USERS[0]))
        .await;
    prop_assert_eq!(status, StatusCode::OK);
    page["lastEventId"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| fail(format!("lastEventId: {page}")))
}

fn event_id(event: &Received) -> Result<EventId, TestCaseError> {
    event
        .id
        .parse()
        .map_err(|_| fail(format!("not an event id: {event:?}")))
}

/// The next event of a stream, within [`WAIT`].
async fn next_received<S, E>(events: &mut S, case: &str) -> Result<Received, TestCaseError>
where
    S: futures::Stream<Item = Result<eventsource_stream::Event, E>> + Unpin,
    E: std::fmt::Display,
{
    let event = tokio::time::timeout(WAIT, events.next())
        .await
        .map_err(|_| fail(format!("{case}: no event in time")))?
        .ok_or_else(|| fail(format!("{case}: the stream ended")))?
        .map_err(|error| fail(format!("{case}: {error}")))?;
    let data = serde_json::from_str(&event.data)
        .map_err(|_| fail(format!("{case}: data is not JSON: {:?}", event.data)))?;
    Ok(Received {
        event: event.event,
        id: event.id,
        data,
    })
}

/// Opens a stream as the probe says, then checks it begins as it must and delivers a marker.
pub(super) async fn check_stream(
    harness: &Harness,
    user: &str,
    last_event_id: Option<&[u8]>,
    query: &str,
) -> Result<(), TestCaseError> {
    let app = &harness.app;
    let case = format!("stream {user}{query} from {last_event_id:?}");
    let newest = newest_id(app).await?;
    let mut request = app
        .client
        .get(app.url(&format!("/events/{user}{query}")))
        .header("accept", "text/event-stream");
    if let Some(bytes) = last_event_id {
        let value = HeaderValue::from_bytes(bytes).map_err(|e| fail(format!("{case}: {e}")))?;
        request = request.header("last-event-id", value);
    }
    let response = send(request).await?;
    let duplicated = url::form_urlencoded::parse(query.trim_start_matches('?').as_bytes())
        .filter(|(k, _)| k == "lastEventId")
        .count()
        > 1;
    let should_open = is_valid_user(user) && !duplicated;
    if response.status() != StatusCode::OK {
        prop_assert!(!should_open, "{case}: refused with {}", response.status());
        checked(&case, response).await?;
        return Ok(());
    }
    prop_assert!(should_open, "{case}: opened");
    prop_assert_eq!(&response.headers()["content-type"], "text/event-stream");

    let mut events = Box::pin(response.bytes_stream().eventsource());
    let connected = next_received(&mut events, &case).await?;
    prop_assert_eq!(&connected.event, "connected", "{}", case);
    prop_assert!(
        connected.data["clientId"].is_string(),
        "{case}: {connected:?}"
    );

    let marker = publish_marker(app, user).await?;
    let marker_id = marker["id"].as_str().unwrap_or_default().to_owned();
    let mut before_marker = Vec::new();
    let last = loop {
        let event = next_received(&mut events, &case).await?;
        if event.event == "notification" && event.data["id"] == marker_id.as_str() {
            break event;
        }
        prop_assert!(before_marker.len() < 10_000, "{case}: endless replay");
        before_marker.push(event);
    };
    prop_assert!(
        event_id(&last)? > newest,
        "{case}: the marker's id {}",
        last.id
    );

    let resynced = before_marker.first().is_some_and(|e| e.event == "resync");
    let expected = expected_start(last_event_id, query, newest);
    let must_resync = match expected {
        Expected::Live => {
            prop_assert!(
                before_marker.is_empty(),
                "{case}: live stream got {before_marker:?}"
            );
            return Ok(());
        }
        Expected::Resync => true,
        Expected::ReplayOrResync(_) => resynced,
        Expected::Replay(_) => false,
    };
    if must_resync {
        prop_assert_eq!(before_marker.len(), 1, "{}: {:?}", case, before_marker);
        let resync = &before_marker[0];
        prop_assert_eq!(&resync.event, "resync", "{}", case);
        prop_assert_eq!(
            event_id(resync)?,
            newest,
            "{}: resync carries the newest id",
            case
        );
        prop_assert!(resync.data["reason"].is_string(), "{case}: {resync:?}");
        return Ok(());
    }
    let after = match expected {
        Expected::Replay(n) | Expected::ReplayOrResync(n) => n,
        Expected::Live | Expected::Resync => unreachable!("handled above"),
    };
    let ids = before_marker
        .iter()
        .map(event_id)
        .collect::<Result<Vec<_>, _>>()?;
    prop_assert!(ids.windows(2).all(|w| w[0] < w[1]), "{case}: order {ids:?}");
    prop_assert!(
        ids.iter().all(|id| *id > after && *id <= newest),
        "{case}: range {ids:?}"
    );
    for event in &before_marker {
        prop_assert!(
            [
                "notification",
                "announcement",
                "read",
                "updated",
                "archived"
            ]
            .contains(&event.event.as_str()),
            "{case}: {event:?}"
        );
    }
    // For a recorded user, the replay is exactly what that user's live stream got in between.
    let decoded = String::from_utf8(percent_decode(user)).unwrap_or_default();
    if let Some(recorder) = harness.recorders.get(decoded.as_str()) {
        let recorded = recorder.wait_for(&marker_id).await;
        let want: Vec<&Received> = recorded
            .iter()
            .filter(|e| {
                e.id.parse::<EventId>()
                    .is_ok_and(|id| id > after && id <= newest)
            })
            .collect();
        let got: Vec<&Received> = before_marker.iter().collect();
        prop_assert_eq!(got, want, "{}: replay differs from the live record", case);
    }
    Ok(())
}

async fn publish_marker(app: &TestApp, user: &str) -> Result<Value, TestCaseError> {
    let (status, marker) = app
        .post_json(
            &format!("/api/notifications/{user}"),
            &json!({ "title": "marker", "message": "after the stream opened" }),
        )
        .await;
    prop_assert_eq!(
        status,
        StatusCode::CREATED,
        "marker for {}: {}",
        user,
        marker
    );
    Ok(marker)
}
