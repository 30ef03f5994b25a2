//! docs/protocol.md#publishing, docs/protocol.md#history-and-read-state, docs/protocol.md#errors
//! and docs/protocol.md#operations: the JSON API, with exact statuses and bodies. Every refused
//! request is checked to have changed nothing: nothing stored (history and the log unchanged) and
//! nothing sent (a marker published afterwards is the next event on the user's open stream).
//!
//! - `publish`: the notification JSON, every validation rule, body size and content type, and
//!   user ids, including those a URL parser would normalise.
//! - `idempotency`: `Idempotency-Key`.
//! - `history`: newest first, `limit`, paging with `before`, counts, `unread`, `lastEventId`,
//!   and read state.
//! - `operations`: broadcast, stats, health, metrics, the OpenAPI document, unknown routes and
//!   methods.

mod history;
mod idempotency;
mod operations;
mod publish;
