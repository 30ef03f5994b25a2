//! Reading one request off a plain connection and deciding who answers it: a `GET`, an
//! `OPTIONS` or a `POST` with a `Content-Length` body becomes an `http::Request` for the
//! router; a whole head this path does not serve (`HEAD`, chunked bodies, upgrades, HTTP/2's
//! preface) goes to hyper with the bytes read; a head that is malformed, too large or too slow
//! is refused here (docs/protocol.md#limits). The head is parsed once a line has ended, and the
//! body is counted, never parsed.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version, header};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use crate::edge::{MAX_HEAD, MAX_HEADERS};
use crate::http::error::ApiError;
use crate::http::extract::MAX_BODY_BYTES;

/// How much the buffer grows by per read; most requests fit in one step.
const READ_STEP: usize = 1024;
/// How an HTTP/2 connection by prior knowledge starts; hyper serves those.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// What the client sent, and who answers it.
#[derive(Debug)]
// Moved once, from the parser to the router, inside a short-lived future: boxing the request
// would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Head {
    /// A request for the router, body and all. `rest` is what the client sent after it (the
    /// start of a pipelined request).
    Request {
        request: Request<Body>,
        keep_alive: bool,
        rest: Vec<u8>,
    },
    /// A whole head for hyper: every byte read so far, for hyper to read again.
    Other(Bytes),
    /// Answer this, then close the connection: nothing was routed.
    Refused(ApiError),
    /// The client closed the connection, or it failed.
    Closed,
    /// The client sent nothing by the head's deadline.
    Idle,
}

/// What the bytes of a head say.
#[derive(Debug)]
// Returned once per head, straight into a match: boxing the request would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
pub enum Verdict {
    /// Not a whole head yet.
    Partial,
    /// This path serves it.
    Take(Routed),
    /// A whole head this path leaves to hyper.
    Hyper,
    /// Refused before routing.
    Refuse(ApiError),
}

/// A request this path takes, before its body is read.
#[derive(Debug)]
pub struct Routed {
    pub request: Request<Body>,
    pub keep_alive: bool,
    pub head_length: usize,
    pub body_length: usize,
}

/// Reads until the request in `buf` (which may already hold some) is whole, or is not this
/// path's, or is refused; the head must be whole by `head_deadline`, the body within
/// `body_timeout` of its head. The bytes then move out of `buf` into the answer.
pub async fn read(
    stream: &mut impl ReadMore,
    buf: &mut Vec<u8>,
    remote: SocketAddr,
    head_deadline: Instant,
    body_timeout: Duration,
) -> Head {
    // Bytes before this offset hold no line end the parser has not seen.
    let mut looked_at = 0;
    let routed = loop {
        if buf[looked_at..].contains(&b'\n') {
            #[cfg(test)]
            tests::VERDICTS.with(|n| n.set(n.get() + 1));
            match verdict(buf, remote) {
                Verdict::Partial => {}
                Verdict::Take(routed) => break routed,
                Verdict::Hyper => return Head::Other(Bytes::from(std::mem::take(buf))),
                Verdict::Refuse(error) => return Head::Refused(error),
            }
        }
        looked_at = buf.len();
        if buf.len() > MAX_HEAD {
            return Head::Refused(ApiError::HeadTooLarge);
        }
        match stream.read_more(buf, head_deadline).await {
            Some(true) => {}
            Some(false) => return Head::Closed,
            // A client that sent part of a head hears why it is cut off; an idle one is not.
            None if buf.is_empty() => return Head::Idle,
            None => return Head::Refused(ApiError::RequestTimeout),
        }
    };
    let end = routed.head_length + routed.body_length;
    let body_deadline = Instant::now() + body_timeout;
    while buf.len() < end {
        match stream.read_more(buf, body_deadline).await {
            Some(true) => {}
            Some(false) => return Head::Closed,
            None => return Head::Refused(ApiError::RequestTimeout),
        }
    }
    take_request(buf, routed)
}

/// Moves a whole request (its head judged, its body all in `buf`) out of `buf`.
fn take_request(buf: &mut Vec<u8>, routed: Routed) -> Head {
    let Routed {
        mut request,
        keep_alive,
        head_length,
        body_length,
    } = routed;
    let rest = buf.split_off(head_length + body_length);
    if body_length > 0 {
        *request.body_mut() = Body::from(buf.split_off(head_length));
    }
    buf.clear();
    Head::Request {
        request,
        keep_alive,
        rest,
    }
}

/// A connection requests are read from.
pub trait ReadMore {
    /// Reads what the connection has into `buf`: `Some(true)` when something came,
    /// `Some(false)` when the client closed or the connection failed, `None` at `deadline`.
    fn read_more(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Instant,
    ) -> impl Future<Output = Option<bool>> + Send;
}

impl ReadMore for TcpStream {
    /// Grows `buf` only once the socket has bytes: an idle keep-alive connection holds none.
    /// The read itself goes through tokio's `poll_read`, which takes a read that did not fill
    /// the buffer as the socket drained: the next request then waits for the socket to become
    /// readable instead of first trying a read that finds nothing (BENCHMARKS.md, "Issue 16,
    /// ninth step").
    async fn read_more(&mut self, buf: &mut Vec<u8>, deadline: Instant) -> Option<bool> {
        match tokio::time::timeout_at(deadline, self.readable()).await {
            Err(_) => return None,
            Ok(Err(_)) => return Some(false),
            Ok(Ok(())) => {}
        }
        read_step(self, buf, deadline).await
    }
}

impl ReadMore for TlsStream<TcpStream> {
    async fn read_more(&mut self, buf: &mut Vec<u8>, deadline: Instant) -> Option<bool> {
        read_step(self, buf, deadline).await
    }
}

/// One read of up to [`READ_STEP`] more bytes into `buf`, as [`ReadMore::read_more`] answers.
async fn read_step(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Option<bool> {
    buf.reserve(READ_STEP);
    match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
        Err(_) => None,
        Ok(Ok(0) | Err(_)) => Some(false),
        Ok(Ok(_)) => Some(true),
    }
}

/// Judges the head at the start of `buf`, parsing it once.
pub fn verdict(buf: &[u8], remote: SocketAddr) -> Verdict {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_length = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(length)) if length > MAX_HEAD => {
            return Verdict::Refuse(ApiError::HeadTooLarge);
        }
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Verdict::Refuse(ApiError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Verdict::Partial,
        Err(_) if buf.starts_with(HTTP2_PREFACE) => return Verdict::Hyper,
        Err(httparse::Error::TooManyHeaders) => return Verdict::Refuse(ApiError::HeadTooLarge),
        Err(_) => return Verdict::Refuse(ApiError::bad_request("malformed request head")),
    };
    routed(&parsed, head_length, remote)
}

/// The request as hyper would have built it (without its body), whether the client keeps the
/// connection open, and how long its parts are; or who else answers it.
fn routed(parsed: &httparse::Request<'_, '_>, head_length: usize, remote: SocketAddr) -> Verdict {
    let (Some(method), Some(path), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Verdict::Refuse(ApiError::bad_request("malformed request head"));
    };
    let method = match method {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "OPTIONS" => Method::OPTIONS,
        _ => return Verdict::Hyper,
    };
    let version = if version == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let Ok(uri) = Uri::try_from(path) else {
        return Verdict::Hyper;
    };
    // HTTP/1.0 keep-alive is rare enough to leave out: those connections close after one answer.
    let mut keep_alive = version == Version::HTTP_11;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    let mut chunked = false;
    for field in parsed.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(field.name.as_bytes()),
            HeaderValue::from_bytes(field.value),
        ) else {
            return Verdict::Hyper;
        };
        match name {
            // A chunked body (unless it also claims a length), `100-continue` or a protocol
            // switch: hyper's job.
            header::TRANSFER_ENCODING => chunked = true,
            header::EXPECT | header::UPGRADE => return Verdict::Hyper,
            header::CONNECTION => {
                for token in value.as_bytes().split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        keep_alive = false;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        return Verdict::Hyper;
                    }
                }
            }
            _ => {}
        }
        headers.append(name, value);
    }
    let body_length = match content_length(&headers) {
        // Framed two ways: parsers disagree on which wins (hyper lets the encoding win).
        Ok(Some(_)) if chunked => {
            return Verdict::Refuse(ApiError::bad_request(
                "a request may not have both Transfer-Encoding and Content-Length",
            ));
        }
        Ok(_) if chunked => return Verdict::Hyper,
        Ok(length) => length.unwrap_or(0),
        Err(problem) => return Verdict::Refuse(ApiError::bad_request(problem)),
    };
    if body_length > MAX_BODY_BYTES as u64 {
        return Verdict::Refuse(ApiError::TooLarge(MAX_BODY_BYTES));
    }
    let mut request = Request::new(Body::empty());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    // Each request learns its client's address (for per-client limits), as on hyper's path.
    request.extensions_mut().insert(ConnectInfo(remote));
    Verdict::Take(Routed {
        request,
        keep_alive,
        head_length,
        body_length: body_length as usize,
    })
}

/// The body's length, read as hyper reads a request's so that the two never disagree: every
/// `Content-Length` field is ASCII digits alone (no sign, no list, no space), and when there
/// are several they are the same number.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, &'static str> {
    const BAD: &str = "Content-Length must be one number of ASCII digits";
    let mut length = None;
    for field in headers.get_all(header::CONTENT_LENGTH) {
        let digits = field.as_bytes();
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(BAD);
        }
        let number = std::str::from_utf8(digits)
            .ok()
            .and_then(|digits| digits.parse::<u64>().ok())
            .ok_or(BAD)?;
        if length
            .replace(number)
            .is_some_and(|earlier| earlier != number)
        {
            return Err(BAD);
        }
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use std::cell::Cell;
    use tokio::io::AsyncWriteExt;

    thread_local! {
        /// How many times [`read`] judged a head on this thread.
        pub static VERDICTS: Cell<usize> = const { Cell::new(0) };
    }

    fn remote() -> SocketAddr {
        "127.0.0.7:4000".parse().unwrap()
    }

    /// What [`read`] makes of `bytes` once they have all arrived; `None` while it would wait.
    fn decide_on(bytes: &[u8]) -> Option<Head> {
        let mut buf = bytes.to_vec();
        match verdict(&buf, remote()) {
            Verdict::Partial => None,
            Verdict::Take(routed) if buf.len() < routed.head_length + routed.body_length => None,
            Verdict::Take(routed) => Some(take_request(&mut buf, routed)),
            Verdict::Hyper => Some(Head::Other(Bytes::from(buf))),
            Verdict::Refuse(error) => Some(Head::Refused(error)),
        }
    }

    #[test]
    fn a_get_becomes_a_router_request_with_its_rest() {
        let raw = b"GET /events/ann?lastEventId=4 HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 7\r\nLast-Event-ID: 8\r\n\r\nGET /healthz";
        let Some(Head::Request {
            request,
            keep_alive,
            rest,
        }) = decide_on(raw)
        else {
            panic!("not a router request");
        };
        assert!(keep_alive);
        assert_eq!(rest, b"GET /healthz");
        assert_eq!(request.uri(), "/events/ann?lastEventId=4");
        assert_eq!(request.version(), Version::HTTP_11);
        assert_eq!(request.headers().get_all("last-event-id").iter().count(), 2);
        let ConnectInfo(address) = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .unwrap();
        assert_eq!(*address, remote());
    }

    #[test]
    fn the_target_and_every_header_value_come_out_exactly_as_sent() {
        let raw = b"POST /api/notifications/ann%20b?x=1&y= HTTP/1.1\r\nHost: h:1\r\nX-Empty:\r\nX-Spaced:  a b  \r\nIdempotency-Key: k-1\r\nContent-Length: 2\r\n\r\n{}";
        let Some(Head::Request { request, .. }) = decide_on(raw) else {
            panic!("not a router request");
        };
        assert_eq!(request.uri(), "/api/notifications/ann%20b?x=1&y=");
        assert_eq!(request.uri().query(), Some("x=1&y="));
        let values: Vec<(&str, &[u8])> = request
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
            .collect();
        assert_eq!(
            values,
            [
                ("host", &b"h:1"[..]),
                ("x-empty", b""),
                ("x-spaced", b"a b"),
                ("idempotency-key", b"k-1"),
                ("content-length", b"2"),
            ]
        );
    }

    #[test]
    fn http_1_0_and_connection_close_do_not_keep_the_connection() {
        for raw in [
            &b"GET /events/ann HTTP/1.0\r\n\r\n"[..],
            b"GET /events/ann HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n",
        ] {
            assert!(matches!(
                decide_on(raw),
                Some(Head::Request {
                    keep_alive: false,
                    ..
                })
            ));
        }
    }

    #[test]
    fn a_post_waits_for_its_whole_body_and_keeps_what_follows() {
        let raw = b"POST /api/broadcast HTTP/1.1\r\nContent-Length: 11\r\n\r\n{\"title\":1}GET /";
        for cut in 0..raw.len() - 5 {
            assert!(decide_on(&raw[..cut]).is_none(), "decided at {cut} bytes");
        }
        let Some(Head::Request { request, rest, .. }) = decide_on(raw) else {
            panic!("not a router request");
        };
        assert_eq!(request.method(), Method::POST);
        assert_eq!(rest, b"GET /");
        let body = futures::executor::block_on(axum::body::to_bytes(request.into_body(), 64))
            .expect("body");
        assert_eq!(&body[..], b"{\"title\":1}");
    }

    #[test]
    fn a_partial_head_waits_and_a_whole_head_this_path_does_not_serve_goes_to_hyper() {
        assert!(decide_on(b"GET /eve").is_none());
        assert!(decide_on(b"GET /events/ann HTTP/1.1\r\nHost: x\r\n").is_none());
        for raw in [
            &b"HEAD /healthz HTTP/1.1\r\n\r\n"[..],
            b"PUT /api/broadcast HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"POST /api/broadcast HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /api/broadcast HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
            b"GET /events/ann HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        ] {
            match decide_on(raw) {
                Some(Head::Other(bytes)) => assert_eq!(&bytes[..], raw),
                other => panic!("{:?} went to {other:?}", String::from_utf8_lossy(raw)),
            }
        }
    }

    fn refused_with(raw: &[u8]) -> StatusCode {
        match decide_on(raw) {
            Some(Head::Refused(error)) => error.status(),
            other => panic!("{:?} went to {other:?}", String::from_utf8_lossy(raw)),
        }
    }

    #[test]
    fn a_content_length_is_read_as_hyper_reads_it_and_anything_else_is_refused() {
        let with =
            |lengths: &str| format!("POST /api/broadcast HTTP/1.1\r\n{lengths}\r\n\r\nhello");
        for agreed in [
            "Content-Length: 5",
            "Content-Length: 5\r\nContent-Length: 5",
            "Content-Length:  005",
        ] {
            match decide_on(with(agreed).as_bytes()) {
                Some(Head::Request { request, .. }) => {
                    assert_eq!(
                        request.headers().get_all("content-length").iter().count(),
                        agreed.matches("Length").count()
                    );
                }
                other => panic!("{agreed:?} went to {other:?}"),
            }
        }
        for ambiguous in [
            "Content-Length: +5",
            "Content-Length: -5",
            "Content-Length: 5 5",
            "Content-Length: 0x5",
            "Content-Length: 5\r\nContent-Length: 6",
            "Content-Length: 5,",
            "Content-Length: 5, 5",
            "Content-Length: ",
            "Content-Length: 5\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: chunked\r\nContent-Length: 5",
            "Content-Length: 99999999999999999999999",
        ] {
            assert_eq!(
                refused_with(with(ambiguous).as_bytes()),
                StatusCode::BAD_REQUEST,
                "{ambiguous:?}"
            );
        }
        let too_long = format!(
            "POST /api/broadcast HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        assert_eq!(
            refused_with(too_long.as_bytes()),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[test]
    fn malformed_and_oversized_heads_are_refused_here() {
        assert_eq!(
            refused_with(b"GET /events/ann HTTP/1.1\r\nBad Header\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        let huge = format!(
            "GET /events/ann HTTP/1.1\r\nX: {}\r\n",
            "y".repeat(MAX_HEAD)
        );
        assert_eq!(
            refused_with(huge.as_bytes()),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let whole_but_huge = format!("{huge}\r\n");
        assert_eq!(
            refused_with(whole_but_huge.as_bytes()),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let many: String = (0..=MAX_HEADERS).map(|n| format!("X-{n}: 1\r\n")).collect();
        assert_eq!(
            refused_with(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dripped_head_is_parsed_once_a_line_and_its_dripped_body_never() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let fields: String = (0..60).map(|n| format!("X-Field-{n}: {n}\r\n")).collect();
        let body = "{\"title\":\"t\",\"message\":\"a body sent one byte at a time\"}";
        let raw = format!(
            "POST /api/notifications/ann HTTP/1.1\r\nHost: x\r\n{fields}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let reading = async {
            let mut buf = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            read(
                &mut server,
                &mut buf,
                remote(),
                deadline,
                Duration::from_secs(10),
            )
            .await
        };
        let dripping = async {
            for byte in raw.as_bytes() {
                client.write_all(&[*byte]).await.unwrap();
                // Each byte its own read: yield so the reader takes it alone.
                for _ in 0..4 {
                    tokio::task::yield_now().await;
                }
            }
        };
        VERDICTS.with(|n| n.set(0));
        let (head, ()) = tokio::join!(reading, dripping);
        let Head::Request { request, .. } = head else {
            panic!("not a request: {head:?}");
        };
        let got = axum::body::to_bytes(request.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&got[..], body.as_bytes());
        let lines = raw[..raw.find("\r\n\r\n").unwrap() + 4]
            .matches('\n')
            .count();
        let verdicts = VERDICTS.with(Cell::get);
        assert!(
            (1..=lines).contains(&verdicts),
            "{verdicts} verdicts for a head of {lines} lines and a body of {} bytes",
            body.len()
        );
    }
}
