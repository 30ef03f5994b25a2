//! The command-line clients: `publish`, `broadcast`, `update`, `delete`, `archive` and
//! `subscribe` talk to a running herald over HTTP exactly as any other application would;
//! `token` mints subscriber tokens.

pub mod client;
pub mod lifecycle;
pub mod publish;
pub mod subscribe;
pub mod token;
