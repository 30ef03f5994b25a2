//! Reading one request off a plain connection and deciding who answers it: a `GET`, an
//! `OPTIONS` or a `POST` with a `Content-Length` body becomes an `http::Request` for the
//! router; anything else (odd, oversized, chunked, upgrades, HTTP/2) goes to hyper with the
//! bytes read.

use std::io;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version, header};
use bytes::Bytes;
use tokio::net::TcpStream;

use crate::http::extract::MAX_BODY_BYTES;

/// A longer head goes to hyper, whose parser has the general limits (and the `431`).
const MAX_HEAD: usize = 8 * 1024;
/// How much the buffer grows by per read; most requests fit in one step.
const READ_STEP: usize = 1024;
/// More headers than this go to hyper.
const MAX_HEADERS: usize = 64;

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
    /// Anything else: every byte read so far, for hyper to read again.
    Other(Bytes),
    /// The client closed the connection, or it failed.
    Closed,
}

/// Reads until the request in `buf` (which may already hold some) is complete or is not
/// ours; then the bytes move out of `buf` into the answer.
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
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let to_hyper = |buf: &mut Vec<u8>| Some(Head::Other(Bytes::from(std::mem::take(buf))));
    let head_length = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return None,
        // Too long, too many headers or malformed: hyper gives the client its answer.
        _ => return to_hyper(buf),
    };
    let Some(Routed {
        mut request,
        keep_alive,
        body_length,
    }) = router_request(&parsed, remote)
    else {
        return to_hyper(buf);
    };
    let end = head_length + body_length;
    if buf.len() < end {
        return None;
    }
    let rest = buf.split_off(end);
    if body_length > 0 {
        *request.body_mut() = Body::from(buf.split_off(head_length));
    }
    buf.clear();
    Some(Head::Request {
        request,
        keep_alive,
        rest,
    })
}

/// A request this path takes, before its body is read.
struct Routed {
    request: Request<Body>,
    keep_alive: bool,
    body_length: usize,
}

/// The request as hyper would have built it (without its body), whether the client keeps the
/// connection open, and how long the body is; `None` for anything this path leaves to hyper.
fn router_request(parsed: &httparse::Request<'_, '_>, remote: SocketAddr) -> Option<Routed> {
    let method = match parsed.method? {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "OPTIONS" => Method::OPTIONS,
        _ => return None,
    };
    let version = match parsed.version? {
        0 => Version::HTTP_10,
        1 => Version::HTTP_11,
        _ => return None,
    };
    let uri = Uri::try_from(parsed.path?).ok()?;
    // HTTP/1.0 keep-alive is rare enough to leave out: those connections close after one answer.
    let mut keep_alive = version == Version::HTTP_11;
    let mut body_length = None;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(field.value).ok()?;
        match name {
            // A chunked body, `100-continue` or a protocol switch: hyper's job.
            header::TRANSFER_ENCODING | header::EXPECT | header::UPGRADE => return None,
            header::CONTENT_LENGTH => {
                let length: usize = value.to_str().ok()?.parse().ok()?;
                // Two lengths, or one over the limit: hyper answers (400, or 413 by the router).
                if body_length.replace(length).is_some() || length > MAX_BODY_BYTES {
                    return None;
                }
            }
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
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    // Each request learns its client's address (for per-client limits), as on hyper's path.
    request.extensions_mut().insert(ConnectInfo(remote));
    Some(Routed {
        request,
        keep_alive,
        body_length: body_length.unwrap_or(0),
    })
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
    fn a_partial_head_waits_and_anything_else_goes_to_hyper_whole() {
        assert!(decide_on(b"GET /eve").is_none());
        assert!(decide_on(b"GET /events/ann HTTP/1.1\r\nHost: x\r\n").is_none());
        let too_long = format!(
            "POST /api/broadcast HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        for raw in [
            &b"HEAD /healthz HTTP/1.1\r\n\r\n"[..],
            b"PUT /api/broadcast HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"POST /api/broadcast HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            b"POST /api/broadcast HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            too_long.as_bytes(),
            b"POST /api/broadcast HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /api/broadcast HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
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
