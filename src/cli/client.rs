//! What every client command shares: where the server is, how a request carries its key or
//! token, and how a refusal becomes a one-line error. The commands themselves are in
//! [`super::publish`] and [`super::subscribe`]; they use the public API (docs/protocol.md) like any
//! other application.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Client, RequestBuilder, Response};
use serde::Serialize;
use serde_json::Value;
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
        bail!("{segment:?} is not a valid user id");
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
