//! The command-line clients: `publish`, `broadcast`, `update`, `delete`, `archive` and
//! `subscribe` talk to a running herald over HTTP exactly as any other application would;
//! `token` mints subscriber tokens; `vapid-key` makes the key Web Push signs with.

pub mod client;
pub mod lifecycle;
pub mod publish;
pub mod subscribe;
pub mod token;
pub mod vapid_key;
