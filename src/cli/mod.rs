//! The command-line clients: `publish`, `broadcast` and `subscribe` talk to a running herald
//! over HTTP exactly as any other application would; `token` mints subscriber tokens; `bench`
//! measures any SSE server under load.

pub mod bench;
pub mod client;
pub mod publish;
pub mod subscribe;
pub mod token;
