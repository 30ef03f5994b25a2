//! Server-Sent Events at the bottom of the stack: the wire format ([`encode`]: an event becomes
//! bytes once) and the bounded per-stream queue those bytes wait in ([`outbox`]).

pub mod encode;
pub mod outbox;
