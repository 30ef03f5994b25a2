//! Writing the router's answer onto a plain HTTP/1.x connection. An event stream goes out frame
//! by frame straight from the body, with nothing buffered while it idles, and once it is live
//! its outbox may write it directly ([`super::direct`]); then the connection closes. Any other
//! answer is collected and written whole, and the connection may go on.

use std::cell::RefCell;
use std::io::{self, IoSlice, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, Version, header};
use axum::response::Response;
use bytes::Bytes;
use http_body::Body as _;
use parking_lot::Mutex;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::direct::{LiveSocket, poll_write_parts};
use super::seal::Seal;
use crate::edge::{self, OverTcp};
use crate::sse::outbox::{Attached, EventStreamResponse, Outbox};
use crate::sse::plain::{ChunkSize, chunk_framing};

/// Reads of unexpected client bytes per wake-up before the stream yields to other tasks.
const DISCARDS_PER_WAKE: usize = 16;

/// Whether `response` is an SSE stream (marked so by the router), which this path writes
/// itself.
pub fn is_event_stream(response: &Response) -> bool {
    response.extensions().get::<EventStreamResponse>().is_some()
}

/// Writes an event stream until its body ends (a clean end), fails (the stream was aborted:
/// the connection is cut without a clean end, so the client knows to reconnect) or the client
/// goes away. HTTP/1.1 gets chunks (which keep-alive clients need to find the end); HTTP/1.0
/// gets a body that ends when the connection closes. The connection closes either way.
pub fn event_stream(
    socket: TcpStream,
    seal: Option<Seal>,
    response: Response,
    version: Version,
) -> impl Future<Output = ()> + Send {
    let (mut parts, body) = response.into_parts();
    let outbox = parts
        .extensions
        .remove::<EventStreamResponse>()
        .and_then(|EventStreamResponse(outbox)| outbox);
    let chunked = version == Version::HTTP_11;
    let framing: &[u8] = if chunked {
        b"transfer-encoding: chunked\r\n"
    } else {
        b""
    };
    let head = encode_head(version, parts.status, &parts.headers, framing, true);
    let live = Arc::new(LiveSocket {
        socket,
        chunked,
        seal: seal.map(|seal| Box::new(Mutex::new(seal))),
    });
    // Only what the stream needs crosses into its future, which lives as long as the stream.
    copy_stream(
        live,
        body,
        Out {
            head,
            chunked,
            ..Out::default()
        },
        outbox,
    )
}

/// Writes `head` with the first frame (the preamble is ready at once: one write, not two),
/// then each frame as it comes. With the stream's `outbox`, the socket is shared with it for
/// direct writes while the stream is live and idle.
// Not an `async fn`: one would keep its arguments and its own copies of them side by side for
// the stream's whole life; the block's captures are the only copies.
#[allow(clippy::manual_async_fn)]
fn copy_stream(
    live: Arc<LiveSocket>,
    mut body: Body,
    mut out: Out,
    outbox: Option<Arc<Outbox>>,
) -> impl Future<Output = ()> + Send {
    async move {
        let attached = outbox.map(|outbox| outbox.attach(live.clone()));
        let socket = &live.socket;
        loop {
            let then = match next_data(socket, &mut body, attached.as_ref()).await {
                Next::Unwritten(framed) => {
                    out.framed(framed);
                    Then::More
                }
                Next::Data(data) => {
                    out.frame(data);
                    if out.seal(&live, false).is_err() {
                        return;
                    }
                    Then::More
                }
                Next::End => {
                    out.end();
                    if out.seal(&live, true).is_err() {
                        return;
                    }
                    Then::Finish
                }
                Next::Aborted => Then::Cut,
                Next::ClientGone => return,
            };
            if std::future::poll_fn(|cx| out.poll_write(socket, cx))
                .await
                .is_err()
            {
                return;
            }
            match then {
                Then::More => {}
                Then::Finish => {
                    // The outbox gives back its share of the socket; then it is ours to close.
                    drop(attached);
                    if let Ok(mut live) = Arc::try_unwrap(live) {
                        let _ = live.socket.shutdown().await;
                    }
                    return;
                }
                Then::Cut => return,
            }
        }
    }
}

/// What follows a write of an event stream.
enum Then {
    More,
    /// The body ended: the connection closes cleanly.
    Finish,
    /// The body failed: the connection is dropped at once.
    Cut,
}

/// The bytes of one write on an event stream: the head (first write only), a chunk-size line,
/// the frame and a tail. Kept as parts (a small write gathers them on the stack), and small: it
/// lives in the stream's task for the stream's whole life.
#[derive(Default)]
struct Out {
    /// HTTP/1.1 frames are chunks; HTTP/1.0 ones are written as they are.
    chunked: bool,
    head: Vec<u8>,
    size: ChunkSize,
    data: Bytes,
    tail: &'static [u8],
    /// How much of the parts the socket has taken.
    written: usize,
}

impl Out {
    fn frame(&mut self, data: Bytes) {
        (self.size, self.tail) = chunk_framing(self.chunked, data.len());
        self.data = data;
    }

    /// Bytes already framed for the wire (what a direct write left unwritten).
    fn framed(&mut self, framed: Bytes) {
        self.data = framed;
    }

    fn end(&mut self) {
        if self.chunked {
            self.tail = b"0\r\n\r\n";
        }
    }

    /// On TLS, turns the parts not yet written into records (the `last` ones followed by a
    /// close_notify), which are then written as they are. Not for bytes [`Out::framed`] took:
    /// a direct write left them sealed.
    fn seal(&mut self, live: &LiveSocket, last: bool) -> io::Result<()> {
        let Some(seal) = &live.seal else {
            return Ok(());
        };
        let sealed = seal
            .lock()
            .sealed(&[&self.head, self.size.line(), &self.data, self.tail], last)
            .map_err(io::Error::other)?;
        *self = Out {
            chunked: self.chunked,
            data: Bytes::from(sealed),
            ..Out::default()
        };
        Ok(())
    }

    /// Ready once every part is written; then `self` is empty again.
    fn poll_write(&mut self, socket: &TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut slices = [
                IoSlice::new(&self.head),
                IoSlice::new(self.size.line()),
                IoSlice::new(&self.data),
                IoSlice::new(self.tail),
            ];
            let mut parts = &mut slices[..];
            IoSlice::advance_slices(&mut parts, self.written);
            if parts.is_empty() {
                *self = Out {
                    chunked: self.chunked,
                    ..Out::default()
                };
                return Poll::Ready(Ok(()));
            }
            let written = ready!(poll_write_parts(socket, cx, parts))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += written;
        }
    }
}

/// Writes `response` whole; returns whether the connection stays open for another request.
/// A client that does not take it within `write_timeout` is cut off, and what the kernel still
/// holds for it is dropped at once.
pub async fn whole(
    socket: &mut (impl AsyncWrite + OverTcp + Unpin),
    response: Response,
    version: Version,
    keep_alive: bool,
    write_timeout: Duration,
) -> bool {
    let (parts, body) = response.into_parts();
    // Every answer but a stream is built in memory (JSON, the page, its assets): collecting it
    // only joins its pieces.
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        tracing::warn!(status = %parts.status, "could not collect a response body; closing");
        return false;
    };
    let keep_alive = keep_alive
        && !parts
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|value| value.as_bytes().eq_ignore_ascii_case(b"close"));
    let bodiless = parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    let mut length = [0u8; 40];
    let (framing, body) = if bodiless {
        (&[][..], Bytes::new())
    } else {
        (content_length(&mut length, body.len()), body)
    };
    let head = encode_head(version, parts.status, &parts.headers, framing, !keep_alive);
    let mut parts = [IoSlice::new(&head), IoSlice::new(&body)];
    match tokio::time::timeout(write_timeout, write_all(socket, &mut parts)).await {
        Ok(written) => written.is_ok() && keep_alive,
        Err(_) => {
            edge::reset_on_close(socket.tcp());
            false
        }
    }
}

/// The status line and headers as hyper writes them (lower-case names, a `date`), with the
/// body `framing` and, when the connection ends after this answer, `connection: close`.
fn encode_head(
    version: Version,
    status: StatusCode,
    headers: &HeaderMap,
    framing: &[u8],
    close: bool,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(128 + headers.len() * 40);
    head.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        // This path owns the framing and the connection's fate.
        if matches!(
            *name,
            header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::CONNECTION
        ) {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(framing);
    if close {
        head.extend_from_slice(b"connection: close\r\n");
    }
    if !headers.contains_key(header::DATE) {
        head.extend_from_slice(b"date: ");
        DATE.with_borrow_mut(|date| head.extend_from_slice(date.now()));
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// `content-length: N\r\n`, written into `buffer`.
fn content_length(buffer: &mut [u8; 40], length: usize) -> &[u8] {
    let mut cursor = std::io::Cursor::new(&mut buffer[..]);
    write!(cursor, "content-length: {length}\r\n").expect("40 bytes hold any usize's line");
    let end = cursor.position() as usize;
    &buffer[..end]
}

thread_local! {
    /// This thread's `date` value, formatted once a second as hyper does.
    static DATE: RefCell<CachedDate> = RefCell::new(CachedDate::default());
}

#[derive(Default)]
struct CachedDate {
    second: u64,
    text: String,
}

impl CachedDate {
    fn now(&mut self) -> &[u8] {
        let now = std::time::SystemTime::now();
        let second = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = httpdate::fmt_http_date(now);
        }
        self.text.as_bytes()
    }
}

enum Next {
    /// The end of a direct write, already framed.
    Unwritten(Bytes),
    Data(Bytes),
    End,
    Aborted,
    ClientGone,
}

/// The body's next bytes, while watching the client: a stream whose client has gone must end
/// now, not at its next write (which may be a heartbeat away).
async fn next_data(socket: &TcpStream, body: &mut Body, attached: Option<&Attached>) -> Next {
    std::future::poll_fn(|cx| {
        if poll_client_gone(socket, cx).is_ready() {
            return Poll::Ready(Next::ClientGone);
        }
        // Before anything the body has: the outbox holds its frames back until then.
        if let Some(framed) = attached.and_then(Attached::take_unwritten) {
            return Poll::Ready(Next::Unwritten(framed));
        }
        loop {
            let frame = match ready!(Pin::new(&mut *body).poll_frame(cx)) {
                None => return Poll::Ready(Next::End),
                Some(Ok(frame)) => frame,
                Some(Err(error)) => {
                    tracing::debug!(%error, "event stream aborted; closing the connection");
                    return Poll::Ready(Next::Aborted);
                }
            };
            // Trailers and empty frames have nothing to write.
            match frame.into_data() {
                Ok(data) if !data.is_empty() => return Poll::Ready(Next::Data(data)),
                _ => {}
            }
        }
    })
    .await
}

/// Ready when the client has closed its side or the connection failed. Bytes it sends after
/// its request are dropped: this answer ends the connection, so there is no next request.
fn poll_client_gone(socket: &TcpStream, cx: &mut Context<'_>) -> Poll<()> {
    for _ in 0..DISCARDS_PER_WAKE {
        match socket.poll_read_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(()),
            Poll::Ready(Ok(())) => {}
        }
        let mut discard = [0u8; 512];
        match socket.try_read(&mut discard) {
            Ok(0) => return Poll::Ready(()),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Poll::Ready(()),
        }
    }
    // A client that keeps sending gets no more of this task's time than anyone else.
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// Writes `parts` and flushes them (a TLS connection holds records until then).
async fn write_all(
    socket: &mut (impl AsyncWrite + Unpin),
    mut parts: &mut [IoSlice<'_>],
) -> io::Result<()> {
    IoSlice::advance_slices(&mut parts, 0);
    while !parts.is_empty() {
        let written = socket.write_vectored(parts).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut parts, written);
    }
    socket.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_lines_hold_any_length() {
        for length in [0, 137, usize::MAX] {
            let mut buffer = [0u8; 40];
            let line = content_length(&mut buffer, length);
            assert_eq!(line, format!("content-length: {length}\r\n").as_bytes());
        }
    }

    #[test]
    fn the_date_is_this_second_s_and_a_stale_one_is_made_again() {
        use std::time::{Duration, SystemTime};
        let mut cached = CachedDate::default();
        let is_now = |cached: &mut CachedDate| {
            let before = SystemTime::now();
            let text = String::from_utf8(cached.now().to_vec()).unwrap();
            let after = SystemTime::now();
            let date = httpdate::parse_http_date(&text).unwrap();
            assert!(
                date <= after && date + Duration::from_secs(1) > before,
                "{text}"
            );
        };
        is_now(&mut cached);
        cached.second -= 5;
        cached.text = "Thu, 01 Jan 1970 00:00:00 GMT".into();
        is_now(&mut cached);
    }

    #[test]
    fn heads_carry_the_framing_and_the_close_and_drop_the_apps_own() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
        headers.insert(header::CONNECTION, "keep-alive".parse().unwrap());
        let head = encode_head(
            Version::HTTP_11,
            StatusCode::OK,
            &headers,
            b"transfer-encoding: chunked\r\n",
            true,
        );
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"));
        assert!(head.contains("\r\ntransfer-encoding: chunked\r\nconnection: close\r\ndate: "));
        assert!(!head.contains("keep-alive"));
        assert!(head.ends_with(" GMT\r\n\r\n"));

        let head = encode_head(
            Version::HTTP_10,
            StatusCode::TOO_MANY_REQUESTS,
            &HeaderMap::new(),
            b"",
            false,
        );
        assert!(head.starts_with(b"HTTP/1.0 429 Too Many Requests\r\ndate: "));
    }
}
