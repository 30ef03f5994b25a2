//! The command-line clients: `publish`, `broadcast` and `subscribe` talk to a running herald
//! over HTTP exactly as any other application would.

pub mod client;
