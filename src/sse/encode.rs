//! The SSE wire format. An event is encoded here exactly once; the resulting `Bytes` are shared
//! by every connection that receives it. No input can put a CR or LF inside a field.

use bytes::{BufMut, Bytes, BytesMut};

use crate::domain::EventId;

/// The event names herald sends; the enum keeps the `event:` field free of user input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventName {
    Connected,
    Notification,
    Announcement,
    Read,
    Resync,
    Reauth,
}

impl EventName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Notification => "notification",
            Self::Announcement => "announcement",
            Self::Read => "read",
            Self::Resync => "resync",
            Self::Reauth => "reauth",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::Connected,
            Self::Notification,
            Self::Announcement,
            Self::Read,
            Self::Resync,
            Self::Reauth,
        ]
        .into_iter()
        .find(|name| name.as_str() == raw)
    }
}

/// The comment sent on a stream that has been quiet for `--heartbeat` seconds.
pub const HEARTBEAT: Bytes = Bytes::from_static(b": heartbeat\n\n");

/// One event as bytes: `id:` (when given), `event:`, then `data:`. `data` is compact JSON and so
/// holds no line break; should one ever appear it is split into further `data:` lines, which
/// SSE clients join back with `\n`, so a field can never end early or inject an event.
pub fn event(id: Option<EventId>, name: EventName, data: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 48);
    put_event(&mut out, id, name, data);
    out.freeze()
}

/// Appends one encoded event to `out` (used to build a replay page as one chunk).
pub fn put_event(out: &mut BytesMut, id: Option<EventId>, name: EventName, data: &str) {
    use std::fmt::Write;
    if let Some(id) = id {
        // EventId's Display writes only digits and '-'; writing to BytesMut cannot fail.
        let _ = writeln!(out, "id: {id}");
    }
    out.put_slice(b"event: ");
    out.put_slice(name.as_str().as_bytes());
    out.put_u8(b'\n');
    for line in data.split(['\r', '\n']) {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
}

/// What every stream opens with: the reconnection delay and the `connected` event, in one
/// block (some clients drop a block that has no `data:`, and with it the `retry:`).
pub fn preamble(retry_ms: u64, client_id: &str) -> Bytes {
    let data = serde_json::json!({ "clientId": client_id }).to_string();
    let mut out = BytesMut::with_capacity(data.len() + 48);
    out.put_slice(format!("retry: {retry_ms}\n").as_bytes());
    put_event(&mut out, None, EventName::Connected, &data);
    out.freeze()
}

/// The whole body sent to a stream request while the server drains: come back later.
pub fn retry_only(retry_ms: u64) -> Bytes {
    Bytes::from(format!("retry: {retry_ms}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_has_id_event_and_one_data_line() {
        let bytes = event(
            Some(EventId::from_seq(7)),
            EventName::Notification,
            r#"{"a":1}"#,
        );
        assert_eq!(
            &bytes[..],
            b"id: 7\nevent: notification\ndata: {\"a\":1}\n\n"
        );
    }

    #[test]
    fn line_breaks_in_data_cannot_inject_fields() {
        let bytes = event(None, EventName::Read, "x\r\nid: 9\n\nevent: evil\rdata: y");
        let text = std::str::from_utf8(&bytes).expect("utf8");
        assert_eq!(
            text,
            "event: read\ndata: x\ndata: \ndata: id: 9\ndata: \ndata: event: evil\ndata: data: y\n\n"
        );
        // Only the final blank line ends the event.
        assert_eq!(text.matches("\n\n").count(), 1);
    }

    #[test]
    fn preamble_sets_retry_then_connected_without_id() {
        let bytes = preamble(3000, "c1");
        assert_eq!(
            &bytes[..],
            b"retry: 3000\nevent: connected\ndata: {\"clientId\":\"c1\"}\n\n"
        );
    }
}
