//! The HTTP edge, one file per resource, each with its own `router()`.

pub mod access_log;
pub mod assets;
pub mod cors;
pub mod error;
pub mod events;
pub mod extract;
pub mod lifecycle;
pub mod notifications;
pub mod openapi;
pub mod ops;
pub mod origin;
pub mod push;
pub mod rate_limit;
