//! herald's HTTP/1 path against hyper, on the same bytes: where this path takes a request,
//! hyper must read the same method, target and body (so the request ends at the same byte);
//! where this path refuses one, hyper must not serve it. What this path hands to hyper is
//! hyper's alone and not compared. Used by a property test here and by the fuzz target in
//! `fuzz/` (SECURITY.md, "The HTTP edge").

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::head::{Verdict, verdict};
use crate::edge::{MAX_HEAD, MAX_HEADERS};

/// What a parser made of a whole input (the client then closed its side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// A request: its method, target and body (`None` when the body never ended).
    Request {
        method: String,
        target: String,
        body: Option<Vec<u8>>,
    },
    /// A whole head whose body announces more than herald takes: refused (`413`) unread.
    BodyTooLarge,
    /// Not a whole head.
    Incomplete,
    /// Refused before any request was served.
    Refused,
}

/// What herald's path makes of `bytes`; `None` when it hands them to hyper.
pub fn lean(bytes: &[u8]) -> Option<Reading> {
    let remote: SocketAddr = "127.0.0.1:9".parse().expect("an address");
    match verdict(bytes, remote) {
        Verdict::Partial => Some(Reading::Incomplete),
        Verdict::Hyper => None,
        Verdict::Refuse(error) if error.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Some(Reading::BodyTooLarge)
        }
        Verdict::Refuse(_) => Some(Reading::Refused),
        Verdict::Take(routed) => {
            let end = routed.head_length + routed.body_length;
            Some(Reading::Request {
                method: routed.request.method().to_string(),
                target: routed.request.uri().to_string(),
                body: bytes.get(routed.head_length..end).map(<[u8]>::to_vec),
            })
        }
    }
}

thread_local! {
    static RUNTIME: RefCell<tokio::runtime::Runtime> = RefCell::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime"),
    );
}

/// What hyper, configured as herald configures it, makes of `bytes`: its first request, if it
/// serves one.
pub fn hyper(bytes: &[u8]) -> Reading {
    RUNTIME.with(|runtime| runtime.borrow().block_on(hyper_reading(bytes)))
}

async fn hyper_reading(bytes: &[u8]) -> Reading {
    let (mut client, server) = tokio::io::duplex(MAX_HEAD * 4);
    let first: Arc<Mutex<Option<Reading>>> = Arc::default();
    let seen = first.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let seen = seen.clone();
        async move {
            let first = seen.lock().is_none();
            if first {
                *seen.lock() = Some(Reading::Request {
                    method: request.method().to_string(),
                    target: request.uri().to_string(),
                    body: None,
                });
            }
            let body = axum::body::to_bytes(Body::new(request.into_body()), usize::MAX).await;
            if let (true, Ok(body), Some(Reading::Request { body: kept, .. })) =
                (first, body, seen.lock().as_mut())
            {
                *kept = Some(body.to_vec());
            }
            Ok::<_, Infallible>(Response::new(Body::empty()))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // As herald's server is configured; half-closed, because the input ends with the client
    // closing its side.
    builder
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD)
        .half_close(true);
    let connection = builder.serve_connection(TokioIo::new(server), service);
    let talk = async {
        let _ = client.write_all(bytes).await;
        let _ = client.shutdown().await;
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer).await;
        answer
    };
    let (_, answer) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(2), connection),
        talk
    );
    if let Some(reading) = first.lock().take() {
        return reading;
    }
    if answer.starts_with(b"HTTP/1.1 4") {
        Reading::Refused
    } else {
        Reading::Incomplete
    }
}

/// Whether the two parsers agree on `bytes`; the disagreement, if not.
pub fn check(bytes: &[u8]) -> Result<(), String> {
    let Some(lean) = lean(bytes) else {
        return Ok(());
    };
    let hyper = hyper(bytes);
    let agree = match (&lean, &hyper) {
        // A whole request: the same one, ending at the same byte.
        (Reading::Request { body: Some(_), .. }, _) => lean == hyper,
        // A whole head whose body the input cut short: hyper starts the same request.
        (
            Reading::Request { method, target, .. },
            Reading::Request {
                method: m,
                target: t,
                body: None,
            },
        ) => method == m && target == t,
        (Reading::Request { .. }, _) => false,
        // herald's path refuses a body too long to take before reading it; hyper starts the
        // request, and the router refuses the body.
        (Reading::BodyTooLarge, Reading::Request { .. }) => true,
        (Reading::BodyTooLarge, _) => false,
        // No request on either side.
        (Reading::Incomplete | Reading::Refused, Reading::Incomplete | Reading::Refused) => true,
        // herald's path refuses a request framed both ways, which hyper reads by its
        // Transfer-Encoding alone: a stricter answer, not another reading of where it ends.
        (Reading::Refused, Reading::Request { .. }) => framed_both_ways(bytes),
        (Reading::Incomplete, Reading::Request { .. }) => false,
        // hyper's readings are never this one.
        (Reading::Incomplete | Reading::Refused, Reading::BodyTooLarge) => false,
    };
    if agree {
        Ok(())
    } else {
        Err(format!(
            "herald's path read {lean:?}, hyper {hyper:?}, from {:?}",
            String::from_utf8_lossy(bytes)
        ))
    }
}

/// Whether the head of `bytes` has both a `Transfer-Encoding` and a `Content-Length` field.
fn framed_both_ways(bytes: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    if request.parse(bytes).is_err() {
        return false;
    }
    let has = |name: &str| {
        request
            .headers
            .iter()
            .any(|field| field.name.eq_ignore_ascii_case(name))
    };
    has("transfer-encoding") && has("content-length")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_parsers_agree_on_requests_that_differ_in_what_smuggling_plays_on() {
        let cases: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nab",
            b"POST /a HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
            b"POST /a HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc",
            b"POST /a HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
            b"POST /a HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"POST /a HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            b"POST /a HTTP/1.1\r\nContent-Length : 3\r\n\r\nabc",
            b"POST /a HTTP/1.1\r\nContent-Length:\t3\t\r\n\r\nabc",
            b"POST /a HTTP/1.1\nContent-Length: 3\n\nabc",
            b"GET /a HTTP/1.0\r\n\r\n",
            b"GET /a HTTP/1.2\r\n\r\n",
            b"GET  /a HTTP/1.1\r\n\r\n",
            b"GET /a\x7f HTTP/1.1\r\n\r\n",
            b"GET /a HTTP/1.1\r\nX: a\x01b\r\n\r\n",
            b"GET /a HTTP/1.1\r\n X: folded\r\n\r\n",
            // Found by the fuzzer: a length herald refuses to read (413), hyper starts reading.
            b"POST /a HTTP/1.1\r\nContent-Length: 0000000000011338337795370501915\r\n\r\nabc",
        ];
        for case in cases {
            check(case).unwrap();
        }
    }

    /// Request-like bytes: a request line and fields drawn from what parsers disagree on
    /// (lengths with signs, lists, spaces and tabs, bare LF, odd versions, control bytes),
    /// then a body of some length.
    fn request_like() -> impl Strategy<Value = Vec<u8>> {
        let method = prop::sample::select(vec!["GET", "POST", "OPTIONS", "HEAD", "PUT", "G\tT"]);
        let target =
            prop::sample::select(vec!["/", "/api/broadcast", "/a?b=c", "*", "/%zz", "/\x01"]);
        let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "http/1.1"]);
        let eol = prop::sample::select(vec!["\r\n", "\n", "\r"]);
        let length = prop_oneof![
            (0u32..40).prop_map(|n| n.to_string()),
            prop::sample::select(vec![
                "+3", "-3", "3, 3", "3,4", " 3", "3 ", "0x3", "", "3\t"
            ])
            .prop_map(str::to_owned),
        ];
        let field = prop_oneof![
            length.prop_map(|n| format!("Content-Length: {n}")),
            prop::sample::select(vec![
                "Host: h",
                "Transfer-Encoding: chunked",
                "Connection: close",
                "Expect: 100-continue",
                "X: y",
                "X : y",
                " X: y",
                "X:\x00y",
            ])
            .prop_map(str::to_owned),
        ];
        (
            method,
            target,
            version,
            eol,
            prop::collection::vec(field, 0..4),
            prop::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(|(method, target, version, eol, fields, body)| {
                let mut bytes = format!("{method} {target} {version}{eol}").into_bytes();
                for field in fields {
                    bytes.extend_from_slice(field.as_bytes());
                    bytes.extend_from_slice(eol.as_bytes());
                }
                bytes.extend_from_slice(eol.as_bytes());
                bytes.extend_from_slice(&body);
                bytes
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn the_parsers_agree_on_request_like_bytes(bytes in request_like()) {
            prop_assert_eq!(check(&bytes), Ok(()));
        }
    }
}
