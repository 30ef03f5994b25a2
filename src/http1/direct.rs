//! A live stream's socket as the delivery threads write it (see [`crate::sse::outbox`]): the
//! stream's task and the outbox share the socket; whoever writes frames it the same way
//! (chunked on HTTP/1.1, then sealed on TLS), with one `write` of a gathered buffer where it
//! fits, and never blocks. Also the task's own writes through the shared socket.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::net::TcpStream;

use super::seal::Seal;
use crate::sse::outbox::DirectSink;
use crate::sse::plain::{GATHER, PlainSocket, chunk_framing, gather, write_framed};

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
        write_framed(&self.socket, self.chunked, frame)
    }

    fn plain(self: Arc<Self>) -> Option<PlainSocket> {
        if self.seal.is_some() {
            return None;
        }
        let chunked = self.chunked;
        Some(PlainSocket::of(self, chunked))
    }
}

impl AsFd for LiveSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// One write of `parts` to a socket others may write too: gathered when small, else
/// vectored; `WouldBlock` if the socket is full.
fn try_write_parts(socket: &TcpStream, parts: &[IoSlice<'_>]) -> io::Result<usize> {
    let mut buffer = [0u8; GATHER];
    match gather(parts, &mut buffer) {
        Some(gathered) => socket.try_write(gathered),
        None => socket.try_write_vectored(parts),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

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

    /// The outbox writes a plain socket by its descriptor, past tokio's record of the socket's
    /// readiness. Once those writes have filled it, the task's own write must still wait for
    /// room and then go on, in order, with nothing lost or doubled.
    #[tokio::test]
    async fn after_direct_writes_fill_the_socket_the_task_s_own_write_waits_for_room() {
        let (server, mut client) = pair().await;
        let live = Arc::new(LiveSocket {
            socket: server,
            chunked: true,
            seal: None,
        });
        let plain = Arc::clone(&live)
            .plain()
            .expect("a plain socket is written by its descriptor");
        let big = vec![b'x'; 64 * 1024];
        let mut framed = b"10000\r\n".to_vec();
        framed.extend_from_slice(&big);
        framed.extend_from_slice(b"\r\n");

        let mut whole_frames = 0;
        let rest = loop {
            match plain.write_now(&big).unwrap() {
                None => whole_frames += 1,
                Some(rest) => break rest,
            }
            assert!(whole_frames < 1024, "the socket never filled");
        };
        assert_eq!(&rest[..], &framed[framed.len() - rest.len()..]);

        let writer = async {
            let mut at = 0;
            while at < rest.len() {
                let parts = [IoSlice::new(&rest[at..])];
                at += std::future::poll_fn(|cx| poll_write_parts(&live.socket, cx, &parts))
                    .await
                    .unwrap();
            }
        };
        let reader = async {
            let expected = framed.len() * (whole_frames + 1);
            let mut got = Vec::with_capacity(expected);
            let mut buffer = vec![0u8; 64 * 1024];
            while got.len() < expected {
                let n = client.read(&mut buffer).await.unwrap();
                assert!(n > 0, "closed after {} bytes", got.len());
                got.extend_from_slice(&buffer[..n]);
            }
            got
        };
        let ((), got) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(writer, reader)
        })
        .await
        .expect("the task's write went out once the client read");
        assert_eq!(got.len(), framed.len() * (whole_frames + 1));
        for frame in got.chunks(framed.len()) {
            assert!(frame == framed.as_slice(), "a frame came out changed");
        }
    }
}
