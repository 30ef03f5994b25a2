//! What every client command shares: where the server is, the credentials a request carries
//! (a publish key, a user's token, or either), how a one-shot request is sent and its answer
//! printed, and how a refusal becomes a one-line error. The commands themselves are in
//! [`super::publish`], [`super::lifecycle`] and [`super::subscribe`]; they use the public API
//! (docs/protocol.md) like any other application.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Client, RequestBuilder, Response};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use url::Url;

/// How long to wait for the TCP (and TLS) connection to the server.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-request limit for `publish` and `broadcast`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Where to find the herald server; shared by every client command.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Base URL of the herald server
    #[arg(
        long = "server",
        env = "HERALD_SERVER",
        value_name = "URL",
        default_value = "http://127.0.0.1:3000",
        value_parser = parse_server_url
    )]
    pub url: Url,
}

/// A publish key, for the commands only a publisher may run.
#[derive(clap::Args, Debug, Clone)]
pub struct PublishKey {
    /// Publish key, sent as `Authorization: Bearer KEY` (needed when the server has publish keys)
    #[arg(
        id = "publish_key",
        long = "key",
        env = "HERALD_PUBLISH_KEY",
        hide_env_values = true,
        value_name = "KEY",
        value_parser = bearer
    )]
    pub header: Option<HeaderValue>,
}

/// A user's own token, for the commands a user may run on their own notifications.
#[derive(clap::Args, Debug, Clone)]
pub struct UserToken {
    /// Subscriber token (a JWT whose `sub` is the user), sent as `Authorization: Bearer TOKEN`
    #[arg(
        id = "token",
        long = "token",
        env = "HERALD_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        value_parser = bearer
    )]
    pub header: Option<HeaderValue>,
}

/// Either credential, for what a publisher and the user both may do. When both are given (a
/// shell may export both variables) the publish key is sent: whatever the token may do, the key
/// may too.
#[derive(clap::Args, Debug, Clone)]
pub struct KeyOrToken {
    #[command(flatten)]
    pub key: PublishKey,
    #[command(flatten)]
    pub token: UserToken,
}

impl KeyOrToken {
    /// The `Authorization` value to send, if any.
    pub fn header(self) -> Option<HeaderValue> {
        self.key.header.or(self.token.header)
    }
}

/// `context: cause`, naming only the innermost cause: reqwest's outer layers repeat the URL.
pub(super) fn with_root_cause(
    context: impl std::fmt::Display,
    error: &(dyn std::error::Error + 'static),
) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    format!("{context}: {cause}")
}

/// A client for one short request.
pub(super) fn one_shot_client() -> anyhow::Result<Client> {
    Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("could not set up the HTTP client")
}

/// Adds `Authorization` when a key or token was given.
pub(super) fn with_credential(
    request: RequestBuilder,
    credential: Option<HeaderValue>,
) -> RequestBuilder {
    match credential {
        Some(credential) => request.header(AUTHORIZATION, credential),
        None => request,
    }
}

/// Sends a one-shot request and returns its answer if it is a success; anything else becomes a
/// one-line error.
pub(super) async fn send_expecting_success(
    request: RequestBuilder,
    server: &Url,
) -> anyhow::Result<Response> {
    let response = request
        .send()
        .await
        .with_context(|| format!("could not reach the herald server at {server}"))?;
    if !response.status().is_success() {
        return Err(error_from_response(response).await);
    }
    Ok(response)
}

/// Sends a request whose answer is one JSON document and prints that document on one line, as
/// the server wrote it (compact): re-encoding would reorder the keys of a publisher's `data` and
/// round its numbers. Only an answer spread over several lines is re-encoded onto one.
pub(super) async fn send_and_print(request: RequestBuilder, server: &Url) -> anyhow::Result<()> {
    let body = send_expecting_success(request, server)
        .await?
        .bytes()
        .await
        .with_context(|| format!("could not read the answer of the herald server at {server}"))?;
    let answer: Box<RawValue> =
        serde_json::from_slice(&body).context("the server's answer is not JSON")?;
    // A line break in JSON text can only be whitespace between tokens.
    if answer.get().contains(['\n', '\r']) {
        let answer: Value = serde_json::from_str(answer.get())?;
        return print_line(&answer);
    }
    print_line(&answer)
}

/// Turns a non-success answer into a one-line error: `server answered STATUS: REASON`, where
/// REASON is the `error` field of a JSON body, or the body itself.
pub(super) async fn error_from_response(response: Response) -> anyhow::Error {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let reason = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|json| json.get("error")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            let flattened = body.split_whitespace().collect::<Vec<_>>().join(" ");
            match flattened.chars().count() {
                0 => "(empty body)".to_owned(),
                1..=300 => flattened,
                _ => flattened.chars().take(300).chain("…".chars()).collect(),
            }
        });
    anyhow!("server answered {status}: {reason}")
}

/// `server` with `segments` appended, each percent-encoded (a base path such as `/herald/` is
/// kept).
pub(super) fn endpoint(server: &Url, segments: &[&str]) -> anyhow::Result<Url> {
    // The url crate silently drops `.` and `..` segments, which would send the request elsewhere.
    if let Some(segment) = segments
        .iter()
        .find(|segment| matches!(**segment, "" | "." | ".."))
    {
        bail!("{segment:?} is not a valid user id or notification id");
    }
    let mut url = server.clone();
    url.path_segments_mut()
        .map_err(|()| anyhow!("{server} cannot be used as a base URL"))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// Writes one compact JSON line to stdout and flushes it, so pipes see each line at once.
pub(super) fn print_line(value: &impl Serialize) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, value).context("could not write to stdout")?;
    stdout
        .write_all(b"\n")
        .and_then(|()| stdout.flush())
        .context("could not write to stdout")
}

pub(super) fn parse_server_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw)
        .map_err(|error| format!("{error} (expected e.g. http://127.0.0.1:3000)"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        _ => Err("expected an http:// or https:// URL".to_owned()),
    }
}

/// A key or token as a ready `Authorization` value, marked sensitive so `Debug` never shows it.
pub(super) fn bearer(credential: &str) -> Result<HeaderValue, String> {
    if credential.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let mut header = HeaderValue::from_str(&format!("Bearer {credential}"))
        .map_err(|_| "must not contain control characters".to_owned())?;
    header.set_sensitive(true);
    Ok(header)
}
