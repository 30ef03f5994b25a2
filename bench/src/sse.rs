//! An incremental `text/event-stream` parser over raw bytes, as the HTML standard's "event stream
//! interpretation" describes it: CR, LF and CRLF line ends (a CRLF split across two reads counts
//! once), multi-line `data:`, comments, `event:`, `id:` and `retry:`, a leading BOM. It keeps
//! only a partial line and the event being built, so an idle stream costs a few empty `Vec`s.

/// A line or an event's data longer than this is treated as a broken stream: the bench talks to
/// servers that send small JSON events, and the cap keeps a runaway peer from eating memory.
const MAX_LINE: usize = 1 << 20;

/// One dispatched event, borrowed from the parser until the callback returns.
#[derive(Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event:` field, or `message` when the event had none.
    pub event: &'a [u8],
    /// The `data:` lines joined with `\n`.
    pub data: &'a [u8],
    /// The last event id seen on this stream so far (the HTML `lastEventId`): an event without
    /// an `id:` line repeats its predecessor's.
    pub id: &'a [u8],
}

/// The stream sent a line or an event longer than [`MAX_LINE`].
#[derive(Debug, PartialEq, Eq)]
pub struct TooLong;

/// Parser state for one stream.
#[derive(Debug)]
pub struct SseParser {
    /// The start of a line whose end has not arrived yet.
    line: Vec<u8>,
    /// The data buffer: each `data:` value followed by `\n`, as the standard builds it.
    data: Vec<u8>,
    /// The event type buffer.
    event: Vec<u8>,
    /// The last event id buffer; it outlives each event.
    last_event_id: Vec<u8>,
    /// The reconnection time from the latest valid `retry:` line, in milliseconds.
    retry: Option<u64>,
    /// The previous input ended with CR, so an LF at the start of the next one ends nothing.
    after_cr: bool,
    /// No line has been completed yet (a UTF-8 BOM may open the stream).
    first_line: bool,
    /// Comment lines seen (heartbeats, for instance).
    comments: u64,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    pub fn new() -> Self {
        Self {
            line: Vec::new(),
            data: Vec::new(),
            event: Vec::new(),
            last_event_id: Vec::new(),
            retry: None,
            after_cr: false,
            first_line: true,
            comments: 0,
        }
    }

    /// The id a reconnect should send as `Last-Event-ID` (empty when none was seen).
    pub fn last_event_id(&self) -> &[u8] {
        &self.last_event_id
    }

    /// The latest `retry:` value in milliseconds (the bench never reconnects on its own).
    #[cfg(test)]
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// Comment lines seen so far.
    pub fn comments(&self) -> u64 {
        self.comments
    }

    /// Parses the next bytes of the stream, calling `on_event` for every event they complete.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), TooLong> {
        if std::mem::take(&mut self.after_cr) && input.first() == Some(&b'\n') {
            input = &input[1..];
        }
        while let Some(end) = input.iter().position(|&b| b == b'\n' || b == b'\r') {
            if self.line.is_empty() {
                self.process_line(&input[..end], on_event)?;
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&input[..end]);
                let outcome = self.process_line(&line, on_event);
                line.clear();
                self.line = line;
                outcome?;
            }
            let was_cr = input[end] == b'\r';
            input = &input[end + 1..];
            if was_cr {
                match input.first() {
                    Some(b'\n') => input = &input[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        if self.line.len() + input.len() > MAX_LINE {
            return Err(TooLong);
        }
        self.line.extend_from_slice(input);
        Ok(())
    }

    fn process_line(
        &mut self,
        mut line: &[u8],
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), TooLong> {
        if std::mem::take(&mut self.first_line) {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch(on_event);
            return Ok(());
        }
        if line[0] == b':' {
            self.comments += 1;
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            b"data" => {
                if self.data.len() + value.len() >= MAX_LINE {
                    return Err(TooLong);
                }
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"id" if !value.contains(&0) => {
                self.last_event_id.clear();
                self.last_event_id.extend_from_slice(value);
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                // Digits only, so the one failure left is overflow: saturate.
                self.retry = Some(
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|digits| digits.parse().ok())
                        .unwrap_or(u64::MAX),
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// A blank line: hands over the event being built, if it has data, and starts the next one.
    fn dispatch(&mut self, on_event: &mut dyn FnMut(Event<'_>)) {
        if !self.data.is_empty() {
            let event: &[u8] = if self.event.is_empty() {
                b"message"
            } else {
                &self.event
            };
            on_event(Event {
                event,
                data: &self.data[..self.data.len() - 1],
                id: &self.last_event_id,
            });
        }
        self.data.clear();
        self.event.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (event, data, id) of every event, as strings.
    type Seen = Vec<(String, String, String)>;

    fn parse_chunks(chunks: &[&[u8]]) -> (Seen, SseParser) {
        let mut parser = SseParser::new();
        let mut seen = Vec::new();
        for chunk in chunks {
            parser
                .feed(chunk, &mut |event| {
                    seen.push((
                        String::from_utf8_lossy(event.event).into_owned(),
                        String::from_utf8_lossy(event.data).into_owned(),
                        String::from_utf8_lossy(event.id).into_owned(),
                    ))
                })
                .expect("within limits");
        }
        (seen, parser)
    }

    fn seen(items: &[(&str, &str, &str)]) -> Seen {
        items
            .iter()
            .map(|(e, d, i)| (e.to_string(), d.to_string(), i.to_string()))
            .collect()
    }

    #[test]
    fn lf_cr_and_crlf_each_end_one_line() {
        for ending in ["\n", "\r", "\r\n"] {
            let text = format!(
                "id: 1{ending}event: a{ending}data: x{ending}{ending}data: y{ending}{ending}"
            );
            let (events, _) = parse_chunks(&[text.as_bytes()]);
            assert_eq!(
                events,
                seen(&[("a", "x", "1"), ("message", "y", "1")]),
                "{ending:?}"
            );
        }
    }

    #[test]
    fn mixed_line_ends_in_one_stream() {
        let (events, _) = parse_chunks(&[b"data: a\r\n\ndata: b\r\rdata: c\n\r\n"]);
        assert_eq!(
            events,
            seen(&[
                ("message", "a", ""),
                ("message", "b", ""),
                ("message", "c", "")
            ])
        );
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let text: &[u8] =
            b"\xEF\xBB\xBFretry: 2500\r\n: hi\r\nid: 7\r\nevent: note\r\ndata: {\"a\":1}\r\ndata:  two\r\n\r\nid: 8\rdata: z\r\r";
        let (whole, _) = parse_chunks(&[text]);
        assert_eq!(
            whole,
            seen(&[("note", "{\"a\":1}\n two", "7"), ("message", "z", "8")])
        );
        for split in 0..=text.len() {
            let (events, parser) = parse_chunks(&[&text[..split], &text[split..]]);
            assert_eq!(events, whole, "split at {split}");
            assert_eq!(parser.retry(), Some(2500));
            assert_eq!(parser.comments(), 1);
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(parse_chunks(&bytes).0, whole, "one byte at a time");
    }

    #[test]
    fn a_crlf_split_between_reads_ends_one_line_not_two() {
        // Were the LF taken as a second line end, the blank line would dispatch early.
        let (events, _) = parse_chunks(&[b"data: a\r", b"\ndata: b\n\n"]);
        assert_eq!(events, seen(&[("message", "a\nb", "")]));
    }

    #[test]
    fn comments_are_counted_and_never_dispatched() {
        let (events, parser) = parse_chunks(&[b": heartbeat\n\n:\n\n: x\ndata: 1\n\n"]);
        assert_eq!(events, seen(&[("message", "1", "")]));
        assert_eq!(parser.comments(), 3);
    }

    #[test]
    fn multi_line_data_is_joined_with_lf_and_empty_data_still_dispatches() {
        let (events, _) = parse_chunks(&[b"data\ndata:\ndata: a\n\ndata:\n\n"]);
        assert_eq!(
            events,
            seen(&[("message", "\n\na", ""), ("message", "", "")])
        );
    }

    #[test]
    fn an_event_without_data_is_dropped_but_its_id_is_kept() {
        let (events, parser) = parse_chunks(&[b"id: 5\nevent: x\n\ndata: d\n\n"]);
        assert_eq!(events, seen(&[("message", "d", "5")]));
        assert_eq!(parser.last_event_id(), b"5");
    }

    #[test]
    fn field_values_lose_one_leading_space_only() {
        let (events, _) = parse_chunks(&[b"event:x\ndata:  two\n\n"]);
        assert_eq!(events, seen(&[("x", " two", "")]));
    }

    #[test]
    fn bad_retry_and_nul_ids_and_unknown_fields_are_ignored() {
        let (events, parser) = parse_chunks(&[
            b"retry: 10\nretry: 1x\nretry:\nid: 1\nid: a\0b\nfoo: bar\ndata: d\n\n",
        ]);
        assert_eq!(events, seen(&[("message", "d", "1")]));
        assert_eq!(parser.retry(), Some(10));
    }

    #[test]
    fn an_empty_id_resets_the_last_event_id() {
        let (events, _) = parse_chunks(&[b"id: 3\ndata: a\n\nid\ndata: b\n\n"]);
        assert_eq!(events, seen(&[("message", "a", "3"), ("message", "b", "")]));
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        let (events, _) = parse_chunks(&[b"data: a\n\ndata: b\n"]);
        assert_eq!(events, seen(&[("message", "a", "")]));
    }

    #[test]
    fn a_runaway_line_is_an_error() {
        let mut parser = SseParser::new();
        let chunk = vec![b'x'; 64 * 1024];
        let mut result = Ok(());
        for _ in 0..=(MAX_LINE / chunk.len()) {
            result = parser.feed(&chunk, &mut |_| {});
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(TooLong));
    }
}
