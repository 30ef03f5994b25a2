//! The OpenAPI 3 document of the API, generated from the handlers' annotations.

use axum::Json;
use utoipa::OpenApi;

use crate::http::{events, lifecycle, notifications, ops, push};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "herald",
        description = "Real-time notifications over Server-Sent Events, durable by default."
    ),
    paths(
        events::subscribe,
        events::subscribe_me,
        notifications::publish,
        notifications::publish_many,
        notifications::history,
        notifications::mark_read,
        notifications::mark_all_read,
        notifications::broadcast,
        lifecycle::update,
        lifecycle::delete,
        lifecycle::archive,
        lifecycle::unarchive,
        ops::stats,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        push::public_key,
        push::subscribe,
        push::list_subscriptions,
        push::unsubscribe,
        push::preferences,
        push::set_preferences,
        push::presence,
    ),
    components(schemas(
        crate::domain::Notification,
        crate::domain::Announcement,
        crate::domain::NotificationKind,
        notifications::PublishBody,
        notifications::BroadcastBody,
        notifications::HistoryResponse,
        notifications::PublishedToMany,
        lifecycle::PatchBody,
        crate::store::Addressed,
        crate::domain::JsonObject,
        crate::domain::Category,
        push::PublicKey,
        push::SubscriptionBody,
        push::SubscriptionKeys,
        push::SubscriptionId,
        push::ListedSubscription,
        push::SubscriptionList,
        push::Preferences,
        push::Presence,
    ))
)]
pub struct ApiDoc;

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
