//! Publishers racing a SIGKILL of the server: what each was told was stored
//! ([`PublisherLog`]), to be found again after a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::api::Api;

/// How many publishes each [`publish_until_killed`] sends if the server lives that long.
pub const PUBLISHES_EACH: usize = 100;
/// The users a publisher writes to, in turn.
pub const USERS: [&str; 3] = ["dur-ann", "dur-ben", "dur-cy"];

/// What one publisher saw: the notifications acknowledged with `201`, in order, and the title
/// it was sending when the server went away (stored or not: nobody was told).
pub struct PublisherLog {
    /// `(user, notification)` of every `201`, in order.
    pub acknowledged: Vec<(String, Value)>,
    /// `(user, title)` of the publish that got no answer, if one did not.
    pub unanswered: Option<(String, String)>,
}

/// Publishes `PUBLISHES_EACH` notifications over `api`'s keep-alive client, round-robin over
/// `USERS`, until the server stops answering.
pub async fn publish_until_killed(
    api: Api,
    publisher: usize,
    acked: Arc<AtomicUsize>,
) -> PublisherLog {
    let mut log = PublisherLog {
        acknowledged: Vec::new(),
        unanswered: None,
    };
    for n in 0..PUBLISHES_EACH {
        let user = USERS[(publisher + n) % USERS.len()];
        let title = format!("p{publisher}-n{n}");
        let body =
            json!({ "title": title, "message": format!("body of {title}"), "type": "warning" });
        let path = format!("/api/notifications/{user}");
        let Some((status, text)) = api.post_json_unless_gone(&path, &body).await else {
            log.unanswered = Some((user.to_owned(), title));
            return log;
        };
        assert_eq!(status, StatusCode::CREATED, "{title}: {text}");
        let stored: Value = serde_json::from_str(&text).expect("a notification");
        assert_eq!(stored["title"], title.as_str());
        log.acknowledged.push((user.to_owned(), stored));
        acked.fetch_add(1, Ordering::SeqCst);
    }
    log
}
