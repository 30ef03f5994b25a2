//! The command-line clients: `publish`, `broadcast`, `update`, `delete`, `archive`,
//! `subscribe` and `healthcheck` talk to a running herald over HTTP exactly as any other
//! application would; `token` mints subscriber tokens; `vapid-key` makes the key Web Push signs
//! with; `check-config` prints the settings `serve` would run with.

pub mod check_config;
pub mod client;
pub mod healthcheck;
pub mod lifecycle;
pub mod publish;
pub mod subscribe;
pub mod token;
pub mod vapid_key;
