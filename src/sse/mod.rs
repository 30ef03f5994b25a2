//! Server-Sent Events at the bottom of the stack: the wire format ([`encode`]: an event becomes
//! bytes once), the bounded per-stream queue those bytes wait in ([`outbox`]), and how they go
//! on a plain HTTP/1 connection ([`plain`]).

pub mod encode;
pub mod outbox;
pub mod plain;
