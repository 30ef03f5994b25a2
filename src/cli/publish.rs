//! `herald publish` and `herald broadcast`: one request each, the answer printed as JSON.

use reqwest::header::HeaderValue;
use serde::Serialize;
use serde_json::json;

use super::client::{
    PublishKey, ServerArgs, endpoint, one_shot_client, send_and_print, with_credential,
};

/// Send a notification to one user and print the stored notification as one line of JSON.
#[derive(clap::Args, Debug)]
pub struct PublishArgs {
    /// User who receives the notification
    #[arg(value_name = "USER_ID")]
    user_id: String,
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
    /// Makes retries safe: the same key for the same user within 24 h returns the first
    /// notification instead of sending another
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
enum NotificationKind {
    Info,
    Success,
    Warning,
    Error,
}

/// The body of `POST /api/notifications/{userId}`.
#[derive(Serialize)]
struct NewNotification<'a> {
    #[serde(rename = "type")]
    kind: NotificationKind,
    title: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<&'a str>,
}

/// Sends one notification and prints the stored notification.
pub async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let url = endpoint(&args.server.url, &["api", "notifications", &args.user_id])?;
    let notification = NewNotification {
        kind: args.kind,
        title: &args.title,
        message: &args.message,
        link: args.link.as_deref(),
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
