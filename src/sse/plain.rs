//! How a stream's frames go on a plain (not TLS) HTTP/1 connection: chunk-framed on HTTP/1.1,
//! bare on HTTP/1.0, in one write of a gathered buffer where they fit. And [`PlainSocket`], that
//! socket as a delivery thread writes it: its descriptor and framing, kept in the stream's
//! outbox itself, so that a delivery reads no memory of the connection's. On a broadcast to
//! thousands of streams each such read is a cache miss, and they cost more than all of herald's
//! other work per delivery (docs/architecture.md#fan-out, BENCHMARKS.md).

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;

use bytes::Bytes;
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, SockaddrStorage, send, sendmsg};

/// Bytes of a write gathered into one buffer rather than handed to `writev` as parts: the
/// kernel's `write` of one buffer is cheaper than `writev` of several, and most frames are
/// small.
pub const GATHER: usize = 1024;

/// `parts` copied into `buffer`, when they fit in it.
pub fn gather<'b>(parts: &[IoSlice<'_>], buffer: &'b mut [u8; GATHER]) -> Option<&'b [u8]> {
    let total: usize = parts.iter().map(|part| part.len()).sum();
    if total > GATHER {
        return None;
    }
    let mut filled = 0;
    for part in parts {
        buffer[filled..filled + part.len()].copy_from_slice(part);
        filled += part.len();
    }
    Some(&buffer[..filled])
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

/// A plain stream's socket, by its descriptor, holding what owns the socket: the descriptor is
/// open, and names this socket, for as long as this value exists. A write reads only the
/// descriptor, never the owner.
pub struct PlainSocket {
    fd: RawFd,
    chunked: bool,
    /// Held, never read: keeps the socket open.
    _owner: Arc<dyn Send + Sync>,
}

impl PlainSocket {
    /// `owner`'s socket, framed chunked (HTTP/1.1) or not (HTTP/1.0).
    pub fn of<S: AsFd + Send + Sync + 'static>(owner: Arc<S>, chunked: bool) -> Self {
        Self {
            fd: owner.as_fd().as_raw_fd(),
            chunked,
            _owner: owner,
        }
    }

    /// [`write_framed`] to this socket.
    pub fn write_now(&self, frame: &[u8]) -> io::Result<Option<Bytes>> {
        send_framed(self.fd, self.chunked, frame)
    }
}

/// Writes `frame`, framed, to `socket` in one non-blocking write. Answers the framed bytes the
/// socket did not take (nothing when it took all), or the error that ended the connection.
///
/// This write goes past tokio's record of the socket's readiness, which stays true: when the
/// socket is full the connection's own next write finds out, as tokio expects of a readiness
/// that may be stale, and waits for room.
pub fn write_framed(socket: &impl AsFd, chunked: bool, frame: &[u8]) -> io::Result<Option<Bytes>> {
    send_framed(socket.as_fd().as_raw_fd(), chunked, frame)
}

/// [`write_framed`] by descriptor: `fd` must be open for the call, which both callers ensure.
fn send_framed(fd: RawFd, chunked: bool, frame: &[u8]) -> io::Result<Option<Bytes>> {
    let (size, tail) = chunk_framing(chunked, frame.len());
    let parts = [
        IoSlice::new(size.line()),
        IoSlice::new(frame),
        IoSlice::new(tail),
    ];
    let total = size.line().len() + frame.len() + tail.len();
    let mut buffer = [0u8; GATHER];
    let sent = match gather(&parts, &mut buffer) {
        Some(gathered) => send(fd, gathered, MsgFlags::MSG_NOSIGNAL),
        None => sendmsg::<SockaddrStorage>(fd, &parts, &[], MsgFlags::MSG_NOSIGNAL, None),
    };
    let written = match sent {
        Ok(written) => written,
        // Full, or a signal came first: the connection's task writes the rest.
        Err(Errno::EAGAIN | Errno::EINTR) => 0,
        Err(error) => return Err(error.into()),
    };
    if written == total {
        return Ok(None);
    }
    // Rare (a full socket): the whole framed frame once, to hand back what did not fit.
    let framed: Vec<u8> = parts.iter().flat_map(|part| part.iter().copied()).collect();
    Ok(Some(Bytes::from(framed).slice(written..)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

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

    #[test]
    fn parts_are_gathered_only_when_they_fit() {
        let mut buffer = [0u8; GATHER];
        let small = [
            IoSlice::new(b"9\r\n"),
            IoSlice::new(b"data: 1\n\n"),
            IoSlice::new(b"\r\n"),
        ];
        assert_eq!(
            gather(&small, &mut buffer),
            Some(&b"9\r\ndata: 1\n\n\r\n"[..])
        );
        let exact = vec![b'x'; GATHER];
        assert_eq!(
            gather(&[IoSlice::new(&exact)], &mut buffer),
            Some(&exact[..])
        );
        let over = vec![b'x'; GATHER + 1];
        assert_eq!(gather(&[IoSlice::new(&over)], &mut buffer), None);
    }

    /// A server's end (non-blocking, as tokio's sockets are) and a client's.
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (server, client)
    }

    #[test]
    fn frames_go_out_chunked_or_bare_and_a_full_socket_hands_back_the_rest() {
        let (server, mut client) = pair();
        let chunked = PlainSocket::of(Arc::new(server), true);
        assert!(chunked.write_now(b"data: 1\n\n").unwrap().is_none());
        let mut read = [0u8; 64];
        let n = client.read(&mut read).unwrap();
        assert_eq!(&read[..n], b"9\r\ndata: 1\n\n\r\n");

        // Over GATHER bytes: sent as parts, and whole while there is room.
        let large = vec![b'y'; 3000];
        assert!(chunked.write_now(&large).unwrap().is_none());
        let mut got = Vec::new();
        while got.len() < 3000 + 7 {
            let n = client.read(&mut read).unwrap();
            got.extend_from_slice(&read[..n]);
        }
        assert_eq!(&got[..5], b"bb8\r\n");
        assert!(got[5..3005].iter().all(|&b| b == b'y'));
        assert_eq!(&got[3005..], b"\r\n");

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

        let (server, mut client) = pair();
        let bare = PlainSocket::of(Arc::new(server), false);
        assert!(bare.write_now(b"data: 2\n\n").unwrap().is_none());
        let n = client.read(&mut read).unwrap();
        assert_eq!(&read[..n], b"data: 2\n\n");
    }

    #[test]
    fn a_write_to_a_connection_the_client_closed_is_an_error() {
        let (server, client) = pair();
        let socket = PlainSocket::of(Arc::new(server), true);
        drop(client);
        // The first write may still be taken (the close has not been answered yet); a later
        // one meets the reset, and says so.
        let failed = (0..100).any(|_| socket.write_now(b"data: x\n\n").is_err());
        assert!(failed, "writes to a closed connection kept succeeding");
    }

    /// The descriptor is open as long as the value is: its owner goes only with it.
    #[test]
    fn a_plain_socket_keeps_its_socket_open_when_every_other_holder_has_let_go() {
        let (server, mut client) = pair();
        let server = Arc::new(server);
        let socket = PlainSocket::of(server.clone(), true);
        drop(server);
        assert!(socket.write_now(b"data: 3\n\n").unwrap().is_none());
        let mut read = [0u8; 64];
        let n = client.read(&mut read).unwrap();
        assert_eq!(&read[..n], b"9\r\ndata: 3\n\n\r\n");
        drop(socket);
        assert_eq!(
            client.read(&mut read).unwrap(),
            0,
            "closed with the last holder"
        );
    }

    #[test]
    fn a_borrowed_socket_is_written_the_same_way() {
        let (server, mut client) = pair();
        assert!(
            write_framed(&server, false, b"data: 4\n\n")
                .unwrap()
                .is_none()
        );
        let mut read = [0u8; 64];
        let n = client.read(&mut read).unwrap();
        assert_eq!(&read[..n], b"data: 4\n\n");
    }
}
