//! The SSE wire format. An event is encoded here exactly once; the resulting `Bytes` are shared
//! by every connection that receives it. No input can put a CR or LF inside a field.

use bytes::{BufMut, Bytes, BytesMut};

use crate::domain::{EventId, EventName};

/// The comment sent on a stream that has been quiet for `--heartbeat` seconds.
pub const HEARTBEAT: Bytes = Bytes::from_static(b": heartbeat\n\n");

/// One event as bytes: `id:` (when given), `event:`, then `data:`. `data` is compact JSON and so
/// holds no line break; should one ever appear (CRLF, CR or LF, each one break, as SSE counts
/// them) the rest goes on a further `data:` line, which SSE clients join back with `\n`, so a
/// field can never end early or inject an event.
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
    for line in lines(data) {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
}

/// The lines of `text` as SSE splits them: at CRLF, CR or LF. Always at least one line.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\r', '\n']) {
            None => {
                rest = None;
                Some(current)
            }
            Some(at) => {
                let width = if current[at..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                rest = Some(&current[at + width..]);
                Some(&current[..at])
            }
        }
    })
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
    use proptest::prelude::*;

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
            "event: read\ndata: x\ndata: id: 9\ndata: \ndata: event: evil\ndata: data: y\n\n"
        );
        // Only the final blank line ends the event.
        assert_eq!(text.matches("\n\n").count(), 1);
    }

    /// One event as the WHATWG EventSource parser dispatches it.
    #[derive(Debug, PartialEq, Eq)]
    struct Parsed {
        name: String,
        data: String,
        last_event_id: String,
    }

    /// The event stream interpretation of the HTML standard (§9.2.6), written out plainly:
    /// lines end at CRLF, CR or LF; a blank line dispatches; an unfinished event is dropped.
    fn parse_sse(text: &str) -> Vec<Parsed> {
        let mut events = Vec::new();
        let (mut name, mut data, mut last_event_id) = (String::new(), String::new(), String::new());
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut rest = text;
        // Only complete lines count: text after the last line break is not a line yet.
        while let Some(at) = rest.find(['\r', '\n']) {
            let line = &rest[..at];
            let width = if rest[at..].starts_with("\r\n") { 2 } else { 1 };
            rest = &rest[at + width..];
            if line.is_empty() {
                if !data.is_empty() {
                    data.pop();
                    events.push(Parsed {
                        name: if name.is_empty() {
                            "message".into()
                        } else {
                            name.clone()
                        },
                        data: std::mem::take(&mut data),
                        last_event_id: last_event_id.clone(),
                    });
                }
                name.clear();
                data.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => name = value.to_owned(),
                "data" => {
                    data.push_str(value);
                    data.push('\n');
                }
                "id" if !value.contains('\0') => last_event_id = value.to_owned(),
                _ => {}
            }
        }
        events
    }

    const NAMES: [EventName; 6] = [
        EventName::Connected,
        EventName::Notification,
        EventName::Announcement,
        EventName::Read,
        EventName::Resync,
        EventName::Reauth,
    ];

    /// Text that tries hard to break out of a `data:` line: line breaks of every kind, NUL,
    /// field names, colons and spaces, mixed with any character at all.
    fn hostile_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            4 => any::<char>().prop_map(String::from),
            2 => "[a-z{}\":,]{1,6}",
            1 => Just("\r\n".to_owned()),
            1 => Just("\r".to_owned()),
            1 => Just("\n".to_owned()),
            1 => Just("\n\n".to_owned()),
            1 => Just("\0".to_owned()),
            1 => Just(" ".to_owned()),
            1 => Just(":".to_owned()),
            1 => Just("\u{feff}".to_owned()),
            1 => Just("\u{2028}\u{85}".to_owned()),
            1 => prop::sample::select(vec!["id: 1", "event: evil", "data: x", "retry: 1", ": c"])
                .prop_map(str::to_owned),
        ];
        prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
    }

    fn event_id() -> impl Strategy<Value = Option<EventId>> {
        prop::option::of((any::<u64>(), prop_oneof![Just(0u64), any::<u64>()]))
            .prop_map(|id| id.map(|(major, minor)| EventId::new(major, minor)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Whatever the data, a chunk of encoded events reads back as exactly those events,
        /// with their names, their ids and their data (line breaks as LF), and no CR or LF
        /// ever sits inside a field line.
        #[test]
        fn any_data_reads_back_as_exactly_the_events_encoded(
            events in prop::collection::vec(
                (prop::sample::select(NAMES.to_vec()), event_id(), hostile_text()),
                1..4,
            )
        ) {
            let mut out = BytesMut::new();
            for (name, id, data) in &events {
                put_event(&mut out, *id, *name, data);
            }
            let text = std::str::from_utf8(&out).expect("utf8");

            prop_assert!(!text.contains('\r'), "a CR on the wire: {text:?}");
            prop_assert_eq!(text.matches("\n\n").count(), events.len(), "one blank line per event");
            prop_assert!(text.ends_with("\n\n"));
            for line in text.lines().filter(|line| !line.is_empty()) {
                prop_assert!(
                    ["id: ", "event: ", "data: "].iter().any(|field| line.starts_with(field)),
                    "a line that is no field of ours: {line:?}"
                );
            }

            let mut last_event_id = String::new();
            let expected: Vec<Parsed> = events
                .iter()
                .map(|(name, id, data)| {
                    if let Some(id) = id {
                        last_event_id = id.to_string();
                    }
                    Parsed {
                        name: name.as_str().to_owned(),
                        data: data.replace("\r\n", "\n").replace('\r', "\n"),
                        last_event_id: last_event_id.clone(),
                    }
                })
                .collect();
            let parsed = parse_sse(text);
            prop_assert_eq!(&parsed, &expected);
            for (parsed, (_, id, _)) in parsed.iter().zip(&events) {
                if let Some(id) = id {
                    prop_assert_eq!(parsed.last_event_id.parse::<EventId>(), Ok(*id));
                }
            }

            // The parser the tests and the CLI use agrees.
            use eventsource_stream::Eventsource;
            use futures::StreamExt;
            let chunks = futures::stream::iter([Ok::<_, std::convert::Infallible>(out.freeze())]);
            let from_crate: Vec<_> =
                futures::executor::block_on(chunks.eventsource().collect::<Vec<_>>())
                .into_iter()
                .collect::<Result<_, _>>()
                .expect("parses");
            prop_assert_eq!(from_crate.len(), expected.len());
            for (got, want) in from_crate.iter().zip(&expected) {
                prop_assert_eq!(&got.event, &want.name);
                prop_assert_eq!(&got.data, &want.data);
                prop_assert_eq!(&got.id, &want.last_event_id);
            }
        }
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
