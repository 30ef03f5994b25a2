//! `herald subscribe`: prints a user's events and never loses its place. It remembers the id
//! of the last event it printed and reconnects with `Last-Event-ID`, so a closed stream or a
//! server restart costs a pause, never an event.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use anyhow::{Context, bail};
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Client, Response, StatusCode};
use serde::Serialize;
use serde_json::Value;
use url::Url;

use super::client::{
    CONNECT_TIMEOUT, ServerArgs, UserToken, endpoint, error_from_response, print_line,
    with_credential, with_root_cause,
};

/// A stream silent for this long is treated as dead and reopened: the server sends a heartbeat
/// every 30 s by default, so this is three missed heartbeats. Without it a peer that vanished
/// without closing the connection would leave `subscribe` waiting forever.
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The reconnection delay until the server sends its own `retry:` value.
const DEFAULT_RETRY: Duration = Duration::from_millis(3000);
/// Backoff after failed attempts never grows past this.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Backoff after failed attempts never shrinks below this, even if the server sends `retry: 0`.
const MIN_BACKOFF: Duration = Duration::from_millis(250);

/// Print a user's events as JSON lines, reconnecting with `Last-Event-ID` whenever the stream
/// ends, so that no event is missed or printed twice.
#[derive(clap::Args, Debug)]
pub struct SubscribeArgs {
    /// User whose events to print (`me` means the user named by the token)
    #[arg(value_name = "USER_ID")]
    user_id: String,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    token: UserToken,
    /// Start after this event id: replay every retained event newer than it, then go on live
    #[arg(long, value_name = "ID", value_parser = parse_event_id)]
    last_event_id: Option<String>,
    /// Exit successfully after printing N events that carry an id (notification, announcement,
    /// read, resync); for scripts and tests
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
}

/// One line of `subscribe` output.
#[derive(Serialize)]
struct PrintedEvent<'a> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    /// The event's data as JSON, or as a string when it is not JSON.
    data: Value,
}

/// Prints a user's events until `--count` is reached, the token expires, or the server refuses
/// the subscription; every other interruption is followed by a reconnect.
pub async fn subscribe(args: SubscribeArgs) -> anyhow::Result<()> {
    let url = endpoint(&args.server.url, &["events", &args.user_id])?;
    let client = Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(STREAM_IDLE_TIMEOUT)
        .build()
        .context("could not set up the HTTP client")?;
    let mut subscription = Subscription {
        client,
        url,
        token: args.token.header,
        last_event_id: args.last_event_id,
        retry: DEFAULT_RETRY,
        failed_attempts: 0,
        events_left: args.count,
    };
    loop {
        let (reason, retry_after) = match subscription.follow_stream().await? {
            StreamEnd::CountReached => return Ok(()),
            StreamEnd::Interrupted {
                reason,
                retry_after,
            } => (reason, retry_after),
        };
        let delay = retry_after
            .unwrap_or_else(|| reconnect_delay(subscription.retry, subscription.failed_attempts));
        subscription.failed_attempts = subscription.failed_attempts.saturating_add(1);
        let resume = match &subscription.last_event_id {
            Some(id) => format!(" after event {id}"),
            None => String::new(),
        };
        eprintln!(
            "herald: {reason}; reconnecting in {:.1}s{resume}",
            delay.as_secs_f64()
        );
        tokio::time::sleep(delay).await;
    }
}

/// The state `subscribe` carries from one connection to the next.
struct Subscription {
    client: Client,
    url: Url,
    /// `Authorization` header value, if a token was given.
    token: Option<HeaderValue>,
    /// Id of the last event printed: sent as `Last-Event-ID` on the next connection.
    last_event_id: Option<String>,
    /// The server's latest `retry:` value.
    retry: Duration,
    /// Connection attempts that failed since the server last accepted a stream.
    failed_attempts: u32,
    /// Events with an id still to print before exiting, if `--count` was given.
    events_left: Option<u64>,
}

/// How one connection ended, short of an error that ends the command.
enum StreamEnd {
    CountReached,
    /// A passing failure, followed by a reconnect; `retry_after` is the server's `Retry-After`,
    /// which replaces the backoff for this attempt.
    Interrupted {
        reason: String,
        retry_after: Option<Duration>,
    },
}

impl StreamEnd {
    fn interrupted(reason: String) -> Self {
        Self::Interrupted {
            reason,
            retry_after: None,
        }
    }
}

impl Subscription {
    /// Opens one stream and prints its events until it ends. `Err` means give up for good.
    async fn follow_stream(&mut self) -> anyhow::Result<StreamEnd> {
        match self.open_stream().await? {
            Ok(response) => {
                self.failed_attempts = 0;
                self.print_events(response).await
            }
            Err(end) => Ok(end),
        }
    }

    /// Sends the stream request: the response when it is an event stream, the way this attempt
    /// ended when it is worth another, or `Err` when it is not.
    async fn open_stream(&self) -> anyhow::Result<Result<Response, StreamEnd>> {
        let mut request = self
            .client
            .get(self.url.clone())
            .header(ACCEPT, "text/event-stream");
        request = with_credential(request, self.token.clone());
        if let Some(id) = &self.last_event_id {
            let header = HeaderValue::from_str(id)
                .with_context(|| format!("event id {id:?} cannot be sent as Last-Event-ID"))?;
            request = request.header("Last-Event-ID", header);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                let reason = with_root_cause(format!("could not reach {}", self.url), &error);
                return Ok(Err(StreamEnd::interrupted(reason)));
            }
        };
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let retry_after = retry_after(&response);
            let reason = error_from_response(response).await.to_string();
            return Ok(Err(StreamEnd::Interrupted {
                reason,
                retry_after,
            }));
        }
        if !status.is_success() {
            return Err(error_from_response(response).await);
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok());
        if !content_type.is_some_and(|value| value.starts_with("text/event-stream")) {
            let content_type = content_type.unwrap_or("none");
            bail!(
                "{} answered {status} with {content_type}, not an event stream",
                self.url
            );
        }
        Ok(Ok(response))
    }

    /// Prints the events of an open stream until it ends or `--count` is reached.
    async fn print_events(&mut self, response: Response) -> anyhow::Result<StreamEnd> {
        let mut events = response.bytes_stream().eventsource();
        // eventsource-stream reports each event with the connection's *last* id (the HTML
        // `lastEventId`), so an event without an `id:` line repeats its predecessor's. Ids
        // strictly increase on one connection (docs/protocol.md#ids-and-replay), so an id that
        // changed is the event's own.
        let mut previous_id = String::new();
        while let Some(item) = events.next().await {
            let event = match item {
                Ok(event) => event,
                Err(EventStreamError::Transport(error)) => {
                    return Ok(StreamEnd::interrupted(with_root_cause(
                        "the stream broke",
                        &error,
                    )));
                }
                Err(error) => {
                    return Ok(StreamEnd::interrupted(format!("the stream broke: {error}")));
                }
            };
            let carries_id = !event.id.is_empty() && event.id != previous_id;
            previous_id.clone_from(&event.id);
            if self.handle_event(event, carries_id)? {
                return Ok(StreamEnd::CountReached);
            }
        }
        Ok(StreamEnd::interrupted(
            "the server closed the stream".to_owned(),
        ))
    }

    /// Prints one event and records its id; returns whether `--count` is now reached.
    fn handle_event(&mut self, event: Event, carries_id: bool) -> anyhow::Result<bool> {
        if let Some(retry) = event.retry {
            self.retry = retry;
        }
        let data =
            serde_json::from_str(&event.data).unwrap_or_else(|_| Value::String(event.data.clone()));
        let id = carries_id.then_some(event.id.as_str());
        print_line(&PrintedEvent {
            event: &event.event,
            id,
            data,
        })?;
        if event.event == "reauth" {
            bail!("token expired; get a fresh token");
        }
        if !carries_id {
            return Ok(false);
        }
        self.last_event_id = Some(event.id);
        let Some(left) = &mut self.events_left else {
            return Ok(false);
        };
        *left -= 1;
        Ok(*left == 0)
    }
}

/// The delay before the next connection attempt. The first reconnect waits the server's
/// `retry:`; each further failed attempt doubles it up to [`MAX_BACKOFF`], with jitter so that
/// clients cut off together do not all come back in the same instant.
fn reconnect_delay(retry: Duration, failed_attempts: u32) -> Duration {
    if failed_attempts == 0 {
        return retry;
    }
    let ceiling = retry
        .max(MIN_BACKOFF)
        .saturating_mul(1 << failed_attempts.min(16))
        .min(MAX_BACKOFF);
    let random_fraction = RandomState::new().hash_one(failed_attempts) as f64 / u64::MAX as f64;
    ceiling / 2 + ceiling.mul_f64(random_fraction / 2.0)
}

/// The `Retry-After` header in seconds, if the server sent one.
fn retry_after(response: &Response) -> Option<Duration> {
    let seconds = response
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// Event ids are printable ASCII without whitespace (docs/protocol.md#ids-and-replay).
fn parse_event_id(raw: &str) -> Result<String, String> {
    if !raw.is_empty() && raw.bytes().all(|byte| byte.is_ascii_graphic()) {
        Ok(raw.to_owned())
    } else {
        Err("an event id is printable ASCII without spaces".to_owned())
    }
}
