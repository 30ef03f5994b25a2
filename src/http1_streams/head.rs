//! Reading one request head off a plain connection and deciding who answers it: a plain
//! `GET /events/…` over HTTP/1.x becomes an `http::Request` for the router; anything else (other
//! paths, bodies, upgrades, odd or oversized heads, HTTP/2) goes to hyper with the bytes read.

use std::io;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version, header};
use bytes::Bytes;
use tokio::net::TcpStream;

/// How every request this path takes begins; at the first byte that differs, hyper takes over.
const STREAM_PREFIX: &[u8] = b"GET /events/";
/// A longer head goes to hyper, whose parser has the general limits (and the `431`).
const MAX_HEAD: usize = 8 * 1024;
/// How much the head buffer grows by per read; most stream requests fit in one step.
const READ_STEP: usize = 1024;
/// More headers than this go to hyper.
const MAX_HEADERS: usize = 64;

/// What the client sent, and who answers it.
#[derive(Debug)]
// Moved once, from the parser to the router, inside a short-lived future: boxing the request
// would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Head {
    /// A stream request for the router. `rest` is what the client sent after the head (the
    /// start of a pipelined request).
    Stream {
        request: Request<Body>,
        keep_alive: bool,
        rest: Vec<u8>,
    },
    /// Anything else: every byte read so far, for hyper to read again.
    Other(Bytes),
    /// The client closed the connection, or it failed.
    Closed,
}

/// Reads until the head in `buf` (which may already hold some) is complete or is not ours;
/// then the bytes move out of `buf` into the answer.
pub async fn read(stream: &TcpStream, buf: &mut Vec<u8>, remote: SocketAddr) -> Head {
    loop {
        if let Some(head) = decide(buf, remote) {
            return head;
        }
        if stream.readable().await.is_err() {
            return Head::Closed;
        }
        buf.reserve(READ_STEP);
        match stream.try_read_buf(buf) {
            Ok(0) => return Head::Closed,
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Head::Closed,
        }
    }
}

/// `None` while more bytes are needed to tell.
fn decide(buf: &mut Vec<u8>, remote: SocketAddr) -> Option<Head> {
    let seen = buf.len().min(STREAM_PREFIX.len());
    if buf[..seen] != STREAM_PREFIX[..seen] {
        return Some(Head::Other(Bytes::from(std::mem::take(buf))));
    }
    if seen < STREAM_PREFIX.len() {
        return None;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(buf) {
        Ok(httparse::Status::Complete(length)) => match stream_request(&parsed, remote) {
            Some((request, keep_alive)) => {
                let rest = buf.split_off(length);
                buf.clear();
                Some(Head::Stream {
                    request,
                    keep_alive,
                    rest,
                })
            }
            None => Some(Head::Other(Bytes::from(std::mem::take(buf)))),
        },
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => None,
        // Too long, too many headers or malformed: hyper gives the client its answer.
        _ => Some(Head::Other(Bytes::from(std::mem::take(buf)))),
    }
}

/// The request as hyper would have built it, and whether the client keeps the connection
/// open; `None` for anything this path leaves to hyper.
fn stream_request(
    parsed: &httparse::Request<'_, '_>,
    remote: SocketAddr,
) -> Option<(Request<Body>, bool)> {
    let version = match parsed.version? {
        0 => Version::HTTP_10,
        1 => Version::HTTP_11,
        _ => return None,
    };
    let uri = Uri::try_from(parsed.path?).ok()?;
    // HTTP/1.0 keep-alive is rare enough to leave out: those connections close after one answer.
    let mut keep_alive = version == Version::HTTP_11;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(field.value).ok()?;
        match name {
            // A request body, `100-continue` or a protocol switch: hyper's job.
            header::TRANSFER_ENCODING | header::EXPECT | header::UPGRADE => return None,
            header::CONTENT_LENGTH if value != "0" => return None,
            header::CONNECTION => {
                let tokens = value.to_str().ok()?;
                for token in tokens.split(',').map(str::trim) {
                    if token.eq_ignore_ascii_case("close") {
                        keep_alive = false;
                    } else if token.eq_ignore_ascii_case("upgrade") {
                        return None;
                    }
                }
            }
            _ => {}
        }
        headers.append(name, value);
    }
    let mut request = Request::new(Body::empty());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    // Each request learns its client's address (for per-client limits), as on hyper's path.
    request.extensions_mut().insert(ConnectInfo(remote));
    Some((request, keep_alive))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote() -> SocketAddr {
        "127.0.0.7:4000".parse().unwrap()
    }

    fn decide_on(bytes: &[u8]) -> Option<Head> {
        decide(&mut bytes.to_vec(), remote())
    }

    #[test]
    fn a_stream_request_becomes_a_router_request_with_its_rest() {
        let raw = b"GET /events/ann?lastEventId=4 HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 7\r\nLast-Event-ID: 8\r\n\r\nGET /healthz";
        let Some(Head::Stream {
            request,
            keep_alive,
            rest,
        }) = decide_on(raw)
        else {
            panic!("not a stream request");
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
    fn http_1_0_and_connection_close_do_not_keep_the_connection() {
        for raw in [
            &b"GET /events/ann HTTP/1.0\r\n\r\n"[..],
            b"GET /events/ann HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n",
        ] {
            assert!(matches!(
                decide_on(raw),
                Some(Head::Stream {
                    keep_alive: false,
                    ..
                })
            ));
        }
    }

    #[test]
    fn a_partial_head_waits_and_anything_else_goes_to_hyper_whole() {
        assert!(decide_on(b"GET /eve").is_none());
        assert!(decide_on(b"GET /events/ann HTTP/1.1\r\nHost: x\r\n").is_none());
        for raw in [
            &b"GET /healthz HTTP/1.1\r\n\r\n"[..],
            b"POST /events/ann HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET /events/ann HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            b"GET /events/ann HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /events/ann HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET /events/ann HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            match decide_on(raw) {
                Some(Head::Other(bytes)) => assert_eq!(&bytes[..], raw),
                other => panic!("{:?} went to {other:?}", String::from_utf8_lossy(raw)),
            }
        }
        let huge = format!(
            "GET /events/ann HTTP/1.1\r\nX: {}\r\n",
            "y".repeat(MAX_HEAD)
        );
        assert!(matches!(decide_on(huge.as_bytes()), Some(Head::Other(_))));
    }
}
