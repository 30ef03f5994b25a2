//! # herald
//!
//! Real-time notifications over Server-Sent Events, durable by default.
//!
//! ## Layout
//! - [`domain`]: user ids, event ids and notifications, parsed once at the edge.
//! - [`config`]: `herald serve`'s flags and environment, validated into [`config::Settings`].
//! - [`store`]: the durable event log and history; owns ids and durability ([`store::sqlite`]).
//! - [`auth`]: subscriber tokens and publish keys, and what each may do.
//! - [`hub`]: who is connected here; encodes each event once and decides who receives it.
//! - [`sse`]: the wire format, the bounded per-stream queue, and the stream itself.
//! - [`http`]: one module per resource; [`app`] merges them into a router.
//! - [`error`]: the single `{"error"}` response type.
//! - [`metrics`]: the node's Prometheus registry.
//! - [`server`]: accepting connections and draining on shutdown.
//! - [`http1_streams`]: plain HTTP/1.x connections, written by hand so an idle stream stays
//!   small and an idle live one is written straight from the delivery threads; the odd rest is
//!   handed to hyper.
//! - [`tls`]: HTTPS with HTTP/2 from `--tls-cert` and `--tls-key`.

pub mod app;
pub mod auth;
pub mod config;
pub mod domain;
pub mod http;
pub mod http1;
pub mod hub;
pub mod metrics;
pub mod server;
pub mod sse;
pub mod store;
pub mod subscription;

pub use config::Settings;
pub use server::run;
