//! `herald update`, `herald delete` and `herald archive`: change a notification after it was
//! sent. Each is one request; what the server answers is printed as one line of JSON.

use serde::{Serialize, Serializer};
use serde_json::json;
use serde_json::value::RawValue;

use super::client::{
    KeyOrToken, PublishKey, ServerArgs, endpoint, one_shot_client, print_line, send_and_print,
    send_expecting_success, with_credential,
};
use super::publish::{NotificationKind, parse_data};

/// `herald update`: the fields to change, each left alone unless given.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("changes").required(true).multiple(true)))]
pub struct UpdateArgs {
    /// User the notification belongs to
    #[arg(value_name = "USER_ID")]
    user_id: String,
    /// Id of the notification
    #[arg(value_name = "ID")]
    id: String,
    /// New headline (1 to 200 characters)
    #[arg(long, group = "changes")]
    title: Option<String>,
    /// New body (1 to 4000 characters)
    #[arg(long, group = "changes")]
    message: Option<String>,
    /// New presentation
    #[arg(long = "type", value_name = "TYPE", value_enum, group = "changes")]
    kind: Option<NotificationKind>,
    /// New link: an http(s) URL or a path starting with `/`
    #[arg(long, value_name = "URL", group = "changes")]
    link: Option<String>,
    /// Remove the link
    #[arg(long, group = "changes", conflicts_with = "link")]
    clear_link: bool,
    /// New data for the receiving app: a JSON object, replacing the old one whole
    #[arg(long, value_name = "JSON", value_parser = parse_data, group = "changes")]
    data: Option<Box<RawValue>>,
    /// Remove the data
    #[arg(long, group = "changes", conflicts_with = "data")]
    clear_data: bool,
    /// New category: 1 to 64 characters of a-z 0-9 . _ -
    #[arg(long, value_name = "CATEGORY", group = "changes")]
    category: Option<String>,
    /// Remove the category
    #[arg(long, group = "changes", conflicts_with = "category")]
    clear_category: bool,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    publish_key: PublishKey,
}

/// `herald delete`: which notification, and who asks.
#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// User the notification belongs to
    #[arg(value_name = "USER_ID")]
    user_id: String,
    /// Id of the notification
    #[arg(value_name = "ID")]
    id: String,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    credentials: KeyOrToken,
}

/// `herald archive`: which notification, which way, and who asks.
#[derive(clap::Args, Debug)]
pub struct ArchiveArgs {
    /// User the notification belongs to
    #[arg(value_name = "USER_ID")]
    user_id: String,
    /// Id of the notification
    #[arg(value_name = "ID")]
    id: String,
    /// Unarchive instead
    #[arg(long)]
    undo: bool,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    credentials: KeyOrToken,
}

/// One optional field of a `PATCH` body: left out, set, or `null` to remove it.
enum Change<T> {
    Keep,
    Set(T),
    Remove,
}

impl<T> Change<T> {
    /// `--x` sets, `--clear-x` removes (clap keeps the two apart), neither keeps.
    fn from_flags(value: Option<T>, clear: bool) -> Self {
        match (value, clear) {
            (Some(value), _) => Self::Set(value),
            (None, true) => Self::Remove,
            (None, false) => Self::Keep,
        }
    }

    fn is_keep(&self) -> bool {
        matches!(self, Self::Keep)
    }
}

impl<T: Serialize> Serialize for Change<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Set(value) => value.serialize(serializer),
            Self::Keep | Self::Remove => serializer.serialize_none(),
        }
    }
}

/// The body of `PATCH /api/notifications/{userId}/{id}`.
#[derive(Serialize)]
struct Changes<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<NotificationKind>,
    #[serde(skip_serializing_if = "Change::is_keep")]
    link: Change<&'a str>,
    #[serde(skip_serializing_if = "Change::is_keep")]
    data: Change<&'a RawValue>,
    #[serde(skip_serializing_if = "Change::is_keep")]
    category: Change<&'a str>,
}

/// Sends the changes and prints the whole updated notification.
pub async fn update(args: UpdateArgs) -> anyhow::Result<()> {
    let url = endpoint(
        &args.server.url,
        &["api", "notifications", &args.user_id, &args.id],
    )?;
    let changes = Changes {
        title: args.title.as_deref(),
        message: args.message.as_deref(),
        kind: args.kind,
        link: Change::from_flags(args.link.as_deref(), args.clear_link),
        data: Change::from_flags(args.data.as_deref(), args.clear_data),
        category: Change::from_flags(args.category.as_deref(), args.clear_category),
    };
    let request = one_shot_client()?.patch(url).json(&changes);
    send_and_print(
        with_credential(request, args.publish_key.header),
        &args.server.url,
    )
    .await
}

/// Deletes the notification; the server answers `204` with no body, so the confirmation
/// printed is this command's own.
pub async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let url = endpoint(
        &args.server.url,
        &["api", "notifications", &args.user_id, &args.id],
    )?;
    let request = one_shot_client()?.delete(url);
    send_expecting_success(
        with_credential(request, args.credentials.header()),
        &args.server.url,
    )
    .await?;
    print_line(&json!({ "id": args.id, "deleted": true }))
}

/// Archives or unarchives the notification and prints the server's answer.
pub async fn archive(args: ArchiveArgs) -> anyhow::Result<()> {
    let action = if args.undo { "unarchive" } else { "archive" };
    let url = endpoint(
        &args.server.url,
        &["api", "notifications", &args.user_id, &args.id, action],
    )?;
    let request = one_shot_client()?.post(url);
    send_and_print(
        with_credential(request, args.credentials.header()),
        &args.server.url,
    )
    .await
}
