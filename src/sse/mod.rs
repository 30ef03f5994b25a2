//! Server-Sent Events: the wire format (`encode`) and the per-connection queue that carries
//! encoded events from the hub to one HTTP response (`outbox`, `stream`).

pub mod encode;
pub mod outbox;
pub mod stream;
