//! One SSE stream on a plain socket: connect (from a chosen loopback source address), write a
//! `GET` by hand, read the response head, undo chunked framing, and feed the SSE parser. Reads
//! go through a buffer on the stack of a synchronous call ([`pump`]), so an idle stream holds
//! no read buffer at all: thousands of streams cost little more than their sockets.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::sse::{Event, SseParser};

/// Bytes taken from the socket per read; lives on the stack only during [`pump`].
const READ_BUFFER: usize = 16 * 1024;
/// Reads per wake-up before yielding to other streams (readiness is kept, so nothing stalls).
const READS_PER_WAKE: usize = 8;
/// A response head larger than this is refused.
const MAX_HEAD: usize = 16 * 1024;

/// Where a stream connects and what it asks for.
#[derive(Debug, Clone)]
pub struct SseEndpoint {
    /// The server's socket address (loopback only).
    pub addr: SocketAddrV4,
    /// The `Host` header value (`host:port` as written in the URL).
    pub authority: String,
    /// Path and query, with `{user}` still in it.
    pub path_template: String,
}

/// How a stream failed or ended, as a short reason the report can count.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StreamError {
    Io(String),
    Status(u16),
    NotEventStream,
    BadResponse(&'static str),
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(reason) => f.write_str(reason),
            Self::Status(code) => write!(f, "status {code}"),
            Self::NotEventStream => f.write_str("not text/event-stream"),
            Self::BadResponse(what) => write!(f, "bad response: {what}"),
        }
    }
}

impl From<std::io::Error> for StreamError {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error.kind().to_string())
    }
}

/// Connects from `source` (when given) and sends the stream request.
pub async fn connect(
    endpoint: &SseEndpoint,
    source: Option<Ipv4Addr>,
    user: &str,
    last_event_id: Option<&[u8]>,
    headers: &[(String, String)],
) -> Result<TcpStream, StreamError> {
    let socket = TcpSocket::new_v4()?;
    if let Some(source) = source {
        socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))?;
    }
    let mut stream = socket.connect(SocketAddr::V4(endpoint.addr)).await?;
    stream.set_nodelay(true)?;
    let path = endpoint.path_template.replace("{user}", user);
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n",
        endpoint.authority
    )
    .into_bytes();
    if let Some(id) = last_event_id.filter(|id| !id.is_empty()) {
        request.extend_from_slice(b"Last-Event-ID: ");
        request.extend_from_slice(id);
        request.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        request.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    stream.write_all(&request).await?;
    Ok(stream)
}

/// What the reader found in the bytes it was given.
pub enum Item<'a> {
    /// A `200 text/event-stream` head arrived.
    Head,
    Event(Event<'a>),
}

/// What [`pump`] left the stream in.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Nothing more to read now; wait for readiness.
    Pending,
    /// The server ended the response (EOF or the last chunk).
    Ended,
}

/// Reads what the socket has (a bounded number of reads) and feeds it to `reader`.
pub fn pump(
    socket: &TcpStream,
    reader: &mut ResponseReader,
    sink: &mut dyn FnMut(Item<'_>),
) -> Result<Flow, StreamError> {
    let mut buffer = [0u8; READ_BUFFER];
    for _ in 0..READS_PER_WAKE {
        match socket.try_read(&mut buffer) {
            Ok(0) => return Ok(Flow::Ended),
            Ok(n) => {
                if reader.consume(&buffer[..n], sink)? == Flow::Ended {
                    return Ok(Flow::Ended);
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                return Ok(Flow::Pending);
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok(Flow::Pending)
}

/// The response of one stream request: its head, then its body through the SSE parser.
#[derive(Debug, Default)]
pub struct ResponseReader {
    /// Bytes of an incomplete head; `None` once the head has been parsed.
    head: Option<Vec<u8>>,
    body: Body,
    sse: SseParser,
}

impl ResponseReader {
    pub fn new() -> Self {
        Self {
            head: Some(Vec::new()),
            body: Body::UntilClose,
            sse: SseParser::new(),
        }
    }

    pub fn sse(&self) -> &SseParser {
        &self.sse
    }

    /// Takes the next bytes of the response.
    pub fn consume(
        &mut self,
        mut input: &[u8],
        sink: &mut dyn FnMut(Item<'_>),
    ) -> Result<Flow, StreamError> {
        if let Some(head) = &mut self.head {
            // The head may straddle reads; search only where a new terminator can be.
            let searched_from = head.len().saturating_sub(3);
            head.extend_from_slice(input);
            let Some(end) = head[searched_from..]
                .windows(4)
                .position(|window| window == b"\r\n\r\n")
                .map(|at| searched_from + at + 4)
            else {
                if head.len() > MAX_HEAD {
                    return Err(StreamError::BadResponse("head too large"));
                }
                return Ok(Flow::Pending);
            };
            let taken = end - (head.len() - input.len());
            self.body = parse_head(&head[..end])?;
            self.head = None;
            input = &input[taken..];
            sink(Item::Head);
        }
        let Self { body, sse, .. } = self;
        while let Some(data) = body.next_data(&mut input)? {
            sse.feed(data, &mut |event| sink(Item::Event(event)))
                .map_err(|_| StreamError::BadResponse("line too long"))?;
        }
        Ok(if body.is_done() {
            Flow::Ended
        } else {
            Flow::Pending
        })
    }
}

/// Checks status and content type and picks the body framing.
fn parse_head(head: &[u8]) -> Result<Body, StreamError> {
    let text = std::str::from_utf8(head).map_err(|_| StreamError::BadResponse("head not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or(StreamError::BadResponse("no status line"))?;
    if status != 200 {
        return Err(StreamError::Status(status));
    }
    let (mut chunked, mut length, mut event_stream) = (false, None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<u64>().ok();
        } else if name.eq_ignore_ascii_case("content-type") {
            event_stream = value.to_ascii_lowercase().starts_with("text/event-stream");
        }
    }
    if !event_stream {
        return Err(StreamError::NotEventStream);
    }
    Ok(match (chunked, length) {
        (true, _) => Body::Chunked(Chunk::Size(0)),
        (false, Some(length)) => Body::Length(length),
        (false, None) => Body::UntilClose,
    })
}

/// The framing of a response body.
#[derive(Debug, Default, PartialEq, Eq)]
enum Body {
    /// No length: the body ends when the connection does.
    #[default]
    UntilClose,
    /// `Content-Length`: this many bytes are left.
    Length(u64),
    Chunked(Chunk),
}

/// Where a chunked decoder is (RFC 9112 §7.1).
#[derive(Debug, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size, so far this value.
    Size(u64),
    /// Skipping a chunk extension up to LF; the size was this.
    Extension(u64),
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines; `true` while the current line is empty.
    Trailer(bool),
    Done,
}

impl Body {
    fn is_done(&self) -> bool {
        matches!(self, Self::Length(0) | Self::Chunked(Chunk::Done))
    }

    /// The next run of body data in `input` (advancing it past framing and data), or `None`
    /// once `input` is used up or the body is complete.
    fn next_data<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<&'a [u8]>, StreamError> {
        let take = |input: &mut &'a [u8], count: u64| {
            let count = usize::try_from(count)
                .unwrap_or(usize::MAX)
                .min(input.len());
            let (data, rest) = input.split_at(count);
            *input = rest;
            data
        };
        match self {
            Self::UntilClose if input.is_empty() => Ok(None),
            Self::UntilClose => Ok(Some(take(input, u64::MAX))),
            Self::Length(left) => {
                if input.is_empty() || *left == 0 {
                    return Ok(None);
                }
                let data = take(input, *left);
                *left -= data.len() as u64;
                Ok(Some(data))
            }
            Self::Chunked(chunk) => loop {
                if let Chunk::Data(left) = chunk {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let data = take(input, *left);
                    *left -= data.len() as u64;
                    if *left == 0 {
                        *chunk = Chunk::DataEnd;
                    }
                    return Ok(Some(data));
                }
                let Some((&byte, rest)) = input.split_first() else {
                    return Ok(None);
                };
                if *chunk == Chunk::Done {
                    return Ok(None);
                }
                *input = rest;
                *chunk = step_chunk(std::mem::replace(chunk, Chunk::Done), byte)?;
            },
        }
    }
}

/// One framing byte of a chunked body.
fn step_chunk(state: Chunk, byte: u8) -> Result<Chunk, StreamError> {
    let bad = StreamError::BadResponse("bad chunked framing");
    let size_read = |size: u64| match size {
        0 => Chunk::Trailer(true),
        size => Chunk::Data(size),
    };
    Ok(match (state, byte) {
        (Chunk::Size(size), b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
            let digit = (byte as char).to_digit(16).unwrap_or(0) as u64;
            Chunk::Size(size.checked_mul(16).ok_or(bad)? + digit)
        }
        (Chunk::Size(size) | Chunk::Extension(size), b'\n') => size_read(size),
        (Chunk::Size(size) | Chunk::Extension(size), _) => Chunk::Extension(size),
        (Chunk::DataEnd, b'\r') => Chunk::DataEnd,
        (Chunk::DataEnd, b'\n') => Chunk::Size(0),
        (Chunk::Trailer(true), b'\n') => Chunk::Done,
        (Chunk::Trailer(_), b'\n') => Chunk::Trailer(true),
        (Chunk::Trailer(empty), b'\r') => Chunk::Trailer(empty),
        (Chunk::Trailer(_), _) => Chunk::Trailer(false),
        _ => return Err(bad),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event's data from `chunks` fed in order, and how the response ended.
    fn read_all(chunks: &[&[u8]]) -> (Vec<String>, Flow, bool) {
        let mut reader = ResponseReader::new();
        let (mut data, mut head_seen, mut flow) = (Vec::new(), false, Flow::Pending);
        for chunk in chunks {
            flow = reader
                .consume(chunk, &mut |item| match item {
                    Item::Head => head_seen = true,
                    Item::Event(event) => data.push(String::from_utf8_lossy(event.data).into()),
                })
                .expect("valid response");
        }
        (data, flow, head_seen)
    }

    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n7\r\ndata: a\r\n4;x=y\r\n\n\nda\r\n7\r\nta: b\n\n\r\n0\r\nx-trailer: 1\r\n\r\n";

    #[test]
    fn chunked_events_survive_any_split() {
        let (whole, flow, head) = read_all(&[CHUNKED]);
        assert_eq!(whole, ["a", "b"]);
        assert_eq!(flow, Flow::Ended);
        assert!(head);
        for split in 0..=CHUNKED.len() {
            let (data, flow, _) = read_all(&[&CHUNKED[..split], &CHUNKED[split..]]);
            assert_eq!(
                (data, flow),
                (whole.clone(), Flow::Ended),
                "split at {split}"
            );
        }
    }

    #[test]
    fn a_body_without_length_runs_until_close() {
        let response = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\n";
        let (data, flow, _) = read_all(&[response]);
        assert_eq!((data, flow), (vec!["1".to_owned()], Flow::Pending));
    }

    #[test]
    fn refusals_and_other_content_types_are_errors() {
        let mut reader = ResponseReader::new();
        let refused = reader.consume(b"HTTP/1.1 503 Busy\r\nRetry-After: 1\r\n\r\n", &mut |_| {});
        assert_eq!(refused.err(), Some(StreamError::Status(503)));
        let mut reader = ResponseReader::new();
        let json = reader.consume(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n",
            &mut |_| {},
        );
        assert_eq!(json.err(), Some(StreamError::NotEventStream));
    }
}
