//! The command-line clients: `publish`, `broadcast` and `subscribe` talk to a running herald
//! over HTTP exactly as any other application would; `token` mints subscriber tokens.

pub mod client;
pub mod publish;
pub mod subscribe;
pub mod token;
