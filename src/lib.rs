//! # herald
//!
//! Real-time notifications over Server-Sent Events, durable by default. The wire protocol is
//! in `docs/protocol.md`; how the parts fit, and the path of one notification from its request
//! to a subscriber's socket, in `docs/architecture.md`.
//!
//! ## Layout, bottom to top (a module imports only from those above it in this list)
//! - [`domain`]: user ids, event ids, event names and notifications, parsed once at the edge.
//! - [`push`]: Web Push: the server's VAPID key.
//! - [`metrics`]: the node's Prometheus registry.
//! - [`edge`]: the limits every connection lives within, and the deadlines kept below hyper.
//! - [`sse`]: the wire format (an event becomes bytes once, framed for a plain socket), and the
//!   bounded per-stream queue, which writes an idle plain stream's socket directly.
//! - [`store`]: the durable event log and history; owns ids and durability.
//! - [`hub`]: who is connected here, and the delivery threads that push each event to them.
//! - [`auth`]: subscriber tokens and publish keys, and what each may do.
//! - [`subscription`]: one stream as a response body: replay from the log, then live.
//! - [`config`]: `herald serve`'s flags and environment, validated into [`Settings`].
//! - [`http`]: the HTTP edge, one module per resource, and its one error type.
//! - [`app`]: the state every handler reaches and the router.
//! - [`http1`]: herald's own HTTP/1 path for plain connections (a fenced fast path).
//! - [`server`]: start a node, accept plain and TLS connections, drain on shutdown.

#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod config;
pub mod domain;
pub mod edge;
pub mod http;
pub mod http1;
pub mod hub;
pub mod metrics;
pub mod push;
pub mod server;
pub mod sse;
pub mod store;
pub mod subscription;

pub use config::Settings;
pub use server::run;
