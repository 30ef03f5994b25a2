//! `herald publish` and `herald broadcast`: one request each, the answer printed as JSON. Also
//! the notification fields that `herald update` shares with `publish` (`--type`, `--data`).

use reqwest::header::HeaderValue;
use serde::Serialize;
use serde_json::json;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::client::{
    PublishKey, ServerArgs, endpoint, one_shot_client, send_and_print, with_credential,
};

/// `herald publish`: who receives the notification and what it says.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("recipients").required(true).args(["user_id", "to"])))]
pub struct PublishArgs {
    /// User who receives the notification
    #[arg(value_name = "USER_ID")]
    user_id: Option<String>,
    /// Send to these users instead of USER_ID, each getting a notification of its own, all or
    /// none (prints {"notifications":[{"userId","id"}, ...]})
    #[arg(long, value_name = "USER_ID,...", value_delimiter = ',')]
    to: Vec<String>,
    /// Headline of the notification (1 to 200 characters)
    #[arg(long)]
    title: String,
    /// Body of the notification (1 to 4000 characters)
    #[arg(long)]
    message: String,
    /// How the notification is presented
    #[arg(long = "type", value_name = "TYPE", value_enum, default_value = "info")]
    kind: NotificationKind,
    /// Where the notification leads: an http(s) URL or a path starting with `/`
    #[arg(long, value_name = "URL")]
    link: Option<String>,
    /// Your own data for the receiving app: a JSON object (at most 8 KiB), delivered as given
    #[arg(long, value_name = "JSON", value_parser = parse_data)]
    data: Option<Box<RawValue>>,
    /// For filtering and preferences: 1 to 64 characters of a-z 0-9 . _ -
    #[arg(long, value_name = "CATEGORY")]
    category: Option<String>,
    /// Remove the notification this long after it is sent (e.g. 90s, 15m, 1h; whole seconds,
    /// at most the server's retention)
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl, conflicts_with = "expires_at")]
    ttl: Option<u64>,
    /// Remove the notification at this time (RFC 3339, e.g. 2026-12-06T10:00:00Z; within the
    /// server's retention)
    #[arg(long, value_name = "TIME", value_parser = parse_expiry)]
    expires_at: Option<String>,
    /// Makes retries safe: the same key within 24 h returns the first answer instead of sending
    /// again (for one user, or for the whole `--to` list)
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<HeaderValue>,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    publish_key: PublishKey,
}

/// Send an announcement to every connected user and print the server's answer as JSON.
#[derive(clap::Args, Debug)]
pub struct BroadcastArgs {
    /// Headline of the announcement (1 to 200 characters)
    #[arg(long)]
    title: String,
    /// Body of the announcement (1 to 4000 characters)
    #[arg(long)]
    message: String,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    publish_key: PublishKey,
}

/// The `type` of a notification, as the server spells it.
#[derive(clap::ValueEnum, Serialize, Clone, Copy, Debug)]
#[serde(rename_all = "lowercase")]
pub(super) enum NotificationKind {
    Info,
    Success,
    Warning,
    Error,
}

/// The body of `POST /api/notifications/{userId}`, and with `users` of `POST /api/notifications`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NewNotification<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    users: Option<&'a [String]>,
    #[serde(rename = "type")]
    kind: NotificationKind,
    title: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<&'a str>,
}

/// Sends one notification (to one user, or to each of `--to`) and prints the server's answer.
pub async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    // clap guarantees exactly one of USER_ID and --to.
    let (url, users) = match &args.user_id {
        Some(user) => (
            endpoint(&args.server.url, &["api", "notifications", user])?,
            None,
        ),
        None => (
            endpoint(&args.server.url, &["api", "notifications"])?,
            Some(args.to.as_slice()),
        ),
    };
    let notification = NewNotification {
        users,
        kind: args.kind,
        title: &args.title,
        message: &args.message,
        link: args.link.as_deref(),
        data: args.data.as_deref(),
        category: args.category.as_deref(),
        ttl: args.ttl,
        expires_at: args.expires_at.as_deref(),
    };
    let mut request = one_shot_client()?.post(url).json(&notification);
    if let Some(key) = args.idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    send_and_print(
        with_credential(request, args.publish_key.header),
        &args.server.url,
    )
    .await
}

/// Sends one announcement to everyone and prints the server's answer.
pub async fn broadcast(args: BroadcastArgs) -> anyhow::Result<()> {
    let url = endpoint(&args.server.url, &["api", "broadcast"])?;
    let announcement = json!({ "title": args.title, "message": args.message });
    let request = one_shot_client()?.post(url).json(&announcement);
    send_and_print(
        with_credential(request, args.publish_key.header),
        &args.server.url,
    )
    .await
}

/// `--data`: any JSON object, kept as written (key order, number precision) so the receiving
/// app gets exactly what was given.
pub(super) fn parse_data(raw: &str) -> Result<Box<RawValue>, String> {
    let value: Box<RawValue> =
        serde_json::from_str(raw).map_err(|error| format!("not JSON ({error})"))?;
    if value.get().starts_with('{') {
        Ok(value)
    } else {
        Err(r#"must be a JSON object, e.g. {"order":17}"#.to_owned())
    }
}

/// `--ttl`: a duration such as `90s` or `1h`, as the whole seconds the server counts in.
fn parse_ttl(raw: &str) -> Result<u64, String> {
    let ttl = raw
        .parse::<humantime::Duration>()
        .map_err(|error| format!("{error} (expected e.g. 90s, 15m, 1h)"))?;
    if ttl.subsec_nanos() != 0 {
        return Err("must be whole seconds (e.g. 90s, 15m, 1h)".to_owned());
    }
    Ok(ttl.as_secs())
}

/// `--expires-at`: an RFC 3339 time with any offset, sent in UTC.
fn parse_expiry(raw: &str) -> Result<String, String> {
    OffsetDateTime::parse(raw, &Rfc3339)
        .map_err(|error| format!("{error} (expected RFC 3339, e.g. 2026-12-06T10:00:00Z)"))?
        .to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_must_be_a_json_object_and_is_kept_as_written() {
        let data = parse_data(r#"{"b":1,"a":12345678901234567890123}"#).unwrap();
        assert_eq!(data.get(), r#"{"b":1,"a":12345678901234567890123}"#);
        assert_eq!(
            parse_data("[1]").unwrap_err(),
            r#"must be a JSON object, e.g. {"order":17}"#
        );
        assert_eq!(
            parse_data("null").unwrap_err(),
            r#"must be a JSON object, e.g. {"order":17}"#
        );
        assert!(parse_data("{oops").unwrap_err().starts_with("not JSON ("));
    }

    #[test]
    fn ttl_is_whole_seconds() {
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("1h 30m"), Ok(5400));
        assert!(
            parse_ttl("1500ms")
                .unwrap_err()
                .starts_with("must be whole seconds")
        );
        assert!(parse_ttl("soon").is_err());
    }

    #[test]
    fn expiry_is_sent_in_utc() {
        assert_eq!(
            parse_expiry("2026-12-06T11:30:00+01:30").as_deref(),
            Ok("2026-12-06T10:00:00Z")
        );
        assert!(parse_expiry("tomorrow").is_err());
    }
}
