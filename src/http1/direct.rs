//! A live stream's socket as the delivery threads write it (see [`crate::sse::outbox`]): the
//! stream's task and the outbox share the socket; whoever writes frames it the same way
//! (chunked on HTTP/1.1, then sealed on TLS), with one `write` of a gathered buffer where it
//! fits, and never blocks. Also the task's own writes through the shared socket.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::net::TcpStream;

use super::seal::Seal;
use crate::sse::outbox::DirectSink;

/// Bytes of a write gathered into one buffer rather than handed to `writev` as parts: the
/// kernel's `write` of one buffer is cheaper than `writev` of several, and most frames are
/// small.
const GATHER: usize = 1024;

thread_local! {
    /// Where a delivery thread seals a TLS stream's frames before their `write`: one buffer per
    /// thread, reused, so a direct write allocates only for what a full socket leaves.
    static SEALING: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The most [`SEALING`] keeps between writes; a larger burst's buffer is let go.
const SEALING_KEPT: usize = 64 * 1024;

/// The socket of one stream, framing as its response does; the stream's task and its outbox
/// each hold an `Arc` of it.
pub struct LiveSocket {
    pub socket: TcpStream,
    /// HTTP/1.1 frames are chunks; HTTP/1.0 ones go as they are.
    pub chunked: bool,
    /// On TLS, what makes records of the bytes. A direct write holds it from sealing to
    /// writing; the stream's task seals under it and writes after, which keeps records in
    /// sequence order because direct writes wait until the task has written everything (the
    /// outbox is armed only then: [`crate::sse::outbox`]).
    /// Boxed: a plain stream pays one pointer for it.
    pub seal: Option<Box<Mutex<Seal>>>,
}

impl DirectSink for LiveSocket {
    fn write_now(&self, frame: &[u8]) -> io::Result<Option<Bytes>> {
        let (size, tail) = chunk_framing(self.chunked, frame.len());
        if let Some(seal) = &self.seal {
            let mut seal = seal.lock();
            return SEALING.with_borrow_mut(|sealed| {
                sealed.clear();
                seal.seal(&[size.line(), frame, tail], sealed)
                    .map_err(io::Error::other)?;
                let written = match self.socket.try_write(sealed) {
                    Ok(written) => written,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(error) => return Err(error),
                };
                let rest =
                    (written < sealed.len()).then(|| Bytes::copy_from_slice(&sealed[written..]));
                if sealed.capacity() > SEALING_KEPT {
                    *sealed = Vec::new();
                }
                Ok(rest)
            });
        }
        let parts = [
            IoSlice::new(size.line()),
            IoSlice::new(frame),
            IoSlice::new(tail),
        ];
        let total = size.line().len() + frame.len() + tail.len();
        let written = match try_write_parts(&self.socket, &parts) {
            Ok(written) => written,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
            Err(error) => return Err(error),
        };
        if written == total {
            return Ok(None);
        }
        // Rare (a full socket): the whole framed frame once, to hand back what did not fit.
        let framed: Vec<u8> = parts.iter().flat_map(|part| part.iter().copied()).collect();
        Ok(Some(Bytes::from(framed).slice(written..)))
    }
}

/// One write of `parts` to a socket others may write too: gathered when small, else
/// vectored; `WouldBlock` if the socket is full.
fn try_write_parts(socket: &TcpStream, parts: &[IoSlice<'_>]) -> io::Result<usize> {
    let total: usize = parts.iter().map(|part| part.len()).sum();
    if total > GATHER {
        return socket.try_write_vectored(parts);
    }
    let mut gathered = [0u8; GATHER];
    let mut filled = 0;
    for part in parts {
        gathered[filled..filled + part.len()].copy_from_slice(part);
        filled += part.len();
    }
    socket.try_write(&gathered[..filled])
}

/// The task's own write of `parts`: waits (as a poll) until the socket can take some.
pub fn poll_write_parts(
    socket: &TcpStream,
    cx: &mut Context<'_>,
    parts: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    loop {
        ready!(socket.poll_write_ready(cx))?;
        match try_write_parts(socket, parts) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            outcome => return Poll::Ready(outcome),
        }
    }
}

/// What goes around a frame of `len` bytes on the wire: on a chunked response its chunk-size
/// line and the CRLF after it; otherwise nothing.
pub fn chunk_framing(chunked: bool, len: usize) -> (ChunkSize, &'static [u8]) {
    let mut size = ChunkSize::default();
    if !chunked {
        return (size, b"");
    }
    size.set(len);
    (size, b"\r\n")
}

/// A chunk-size line (`1a2\r\n`) without allocating; empty until set.
#[derive(Default)]
pub struct ChunkSize {
    line: [u8; 18],
    len: u8,
}

impl ChunkSize {
    pub fn set(&mut self, size: usize) {
        let digits = (usize::BITS - size.leading_zeros()).div_ceil(4).max(1) as usize;
        for (i, slot) in self.line[..digits].iter_mut().enumerate() {
            let nibble = (size >> (4 * (digits - 1 - i))) & 0xf;
            *slot = b"0123456789abcdef"[nibble];
        }
        self.line[digits..digits + 2].copy_from_slice(b"\r\n");
        self.len = digits as u8 + 2;
    }

    pub fn line(&self) -> &[u8] {
        &self.line[..self.len as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn chunk_size_lines_are_lower_case_hex() {
        assert_eq!(ChunkSize::default().line(), b"");
        for (len, line) in [
            (0, "0\r\n"),
            (9, "9\r\n"),
            (10, "a\r\n"),
            (0x1a2, "1a2\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            let mut size = ChunkSize::default();
            size.set(len);
            assert_eq!(size.line(), line.as_bytes());
        }
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        // Let the driver see the new socket writable.
        server.writable().await.unwrap();
        (server, client)
    }

    #[tokio::test]
    async fn frames_go_out_chunked_or_bare_and_a_full_socket_hands_back_the_rest() {
        let (server, mut client) = pair().await;
        let chunked = LiveSocket {
            socket: server,
            chunked: true,
            seal: None,
        };
        assert!(chunked.write_now(b"data: 1\n\n").unwrap().is_none());
        let mut read = [0u8; 64];
        let n = client.read(&mut read).await.unwrap();
        assert_eq!(&read[..n], b"9\r\ndata: 1\n\n\r\n");

        // Fill the socket until it takes only part of a frame: the rest comes back framed.
        let big = vec![b'x'; 64 * 1024];
        let mut sent = 0usize;
        let rest = loop {
            match chunked.write_now(&big).unwrap() {
                None => sent += big.len(),
                Some(rest) => break rest,
            }
            assert!(sent < 64 << 20, "the socket never filled");
        };
        assert!(!rest.is_empty() && rest.len() <= big.len() + 9);
        assert!(rest.ends_with(b"x\r\n"));

        let (server, mut client) = pair().await;
        let bare = LiveSocket {
            socket: server,
            chunked: false,
            seal: None,
        };
        assert!(bare.write_now(b"data: 2\n\n").unwrap().is_none());
        let n = client.read(&mut read).await.unwrap();
        assert_eq!(&read[..n], b"data: 2\n\n");
    }
}
