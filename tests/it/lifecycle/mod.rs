//! docs/protocol.md#the-notification-lifecycle: what a notification carries beyond its text,
//! publishing to many users, and changing, deleting, archiving and expiring what was sent, on
//! every route, stream and replay. Refused requests are checked to have changed nothing.
//!
//! - `fields`: `data`, `category`, `ttl` and `expiresAt` on publish, and their validation.
//! - `many`: `POST /api/notifications`: one transaction, one event per listed user, and
//!   `Idempotency-Key` over the whole request.
//! - `changes`: `PATCH`, `DELETE`, archive and unarchive: answers, events, history filters and
//!   who may do what.
//! - `replay`: no replay resurrects a deleted notification or shows an expired one; expiry
//!   reaches open streams; changes survive `kill -9`; random changes never reach another user.

mod changes;
mod fields;
mod many;
mod replay;
