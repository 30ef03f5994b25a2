//! The limits every connection lives within, whoever parses it (docs/protocol.md#limits), and
//! the time limits of a connection that hyper serves (TLS, HTTP/2, and what herald's HTTP/1
//! path hands over), kept below hyper by wrapping its IO: a connection with no request in
//! progress is closed at its idle deadline, and a write the client does not take in time ends
//! the connection. [`Activity`] is what the connection's service tells its IO: how many
//! requests are in progress.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long each part of a connection's life may take. The defaults are the product's (30 s,
/// 30 s, 30 s, 60 s); tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// A request head, the idle wait before it included, whichever parser reads it.
    pub head: Duration,
    /// A request body, from the end of its head.
    pub body: Duration,
    /// A write the client leaves untaken, before its connection is closed (an event stream's
    /// writes too on hyper's path; on herald's HTTP/1 path a stream is bounded by its queue).
    pub write: Duration,
    /// A connection with no request in progress, once it has served one. (On HTTP/1 the
    /// next head's deadline, which counts the wait, comes first.)
    pub idle: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            head: Duration::from_secs(30),
            body: Duration::from_secs(30),
            write: Duration::from_secs(30),
            idle: Duration::from_secs(60),
        }
    }
}

/// The longest request head, whichever parser reads it (HTTP/2: the header list).
pub const MAX_HEAD: usize = 16 * 1024;
/// The most header fields in one HTTP/1 head, as hyper counts them.
pub const MAX_HEADERS: usize = 100;

/// The requests one connection has in progress (an open event stream is one), shared by its
/// service, which starts and ends them, and its IO, which keeps the idle deadline.
pub struct Activity {
    state: Mutex<State>,
    /// How long the connection may idle once a request has ended.
    idle: Duration,
}

struct State {
    in_flight: usize,
    /// When the connection must close if nothing is in progress by then.
    idle_deadline: Instant,
    /// The IO's reader, woken when the last request ends so that the idle clock starts.
    reader: Option<Waker>,
}

impl Activity {
    /// A connection whose first request head must be whole by `first_deadline`, and which may
    /// idle for `idle` after each request.
    pub fn new(first_deadline: Instant, idle: Duration) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                in_flight: 0,
                idle_deadline: first_deadline,
                reader: None,
            }),
            idle,
        })
    }

    /// A request starts; it is in progress until the guard drops (with its response's body).
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.state.lock().in_flight += 1;
        InFlight(self.clone())
    }

    /// The deadline while nothing is in progress; `None` while something is.
    fn idle_deadline(&self, reader: &Waker) -> Option<Instant> {
        let mut state = self.state.lock();
        if state.in_flight > 0 {
            return None;
        }
        match &state.reader {
            Some(known) if known.will_wake(reader) => {}
            _ => state.reader = Some(reader.clone()),
        }
        Some(state.idle_deadline)
    }
}

/// One request in progress.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.state.lock();
        state.in_flight -= 1;
        if state.in_flight == 0 {
            state.idle_deadline = Instant::now() + self.0.idle;
            if let Some(reader) = state.reader.take() {
                reader.wake();
            }
        }
    }
}

/// A connection's IO with its deadlines: reads fail with `TimedOut` once the connection has
/// been idle past its deadline, writes once the client has taken nothing for `write`. Either
/// failure ends the connection.
pub struct EdgeIo<IO> {
    io: IO,
    activity: Arc<Activity>,
    write: Duration,
    /// Armed while nothing is in progress.
    idle: Option<Pin<Box<Sleep>>>,
    /// Armed from the first write the socket does not take until one it does.
    stall: Option<Pin<Box<Sleep>>>,
    stalled: bool,
}

impl<IO: OverTcp> EdgeIo<IO> {
    pub fn new(io: IO, activity: Arc<Activity>, write: Duration) -> Self {
        Self {
            io,
            activity,
            write,
            idle: None,
            stalled: false,
            stall: None,
        }
    }

    /// `Err(TimedOut)` when the connection has been idle past its deadline.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Result<(), io::Error> {
        let Some(deadline) = self.activity.idle_deadline(cx.waker()) else {
            return Ok(());
        };
        let sleep = self
            .idle
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Err(timed_out("the connection was idle past its deadline")),
            Poll::Pending => Ok(()),
        }
    }

    /// After a write: `Pending` arms the stall clock (once), progress disarms it.
    fn note_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        outcome: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if outcome.is_ready() {
            self.stalled = false;
            return outcome;
        }
        if !self.stalled {
            self.stalled = true;
            let deadline = Instant::now() + self.write;
            match &mut self.stall {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.stall = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let Some(sleep) = &mut self.stall else {
            return Poll::Pending;
        };
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                // What the kernel still holds for this client goes with the connection.
                reset_on_close(self.io.tcp());
                Poll::Ready(Err(timed_out("the client took no bytes in time")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// An IO with a TCP socket underneath, whose close can then be made a reset.
pub trait OverTcp {
    fn tcp(&self) -> &tokio::net::TcpStream;
}

impl OverTcp for tokio::net::TcpStream {
    fn tcp(&self) -> &tokio::net::TcpStream {
        self
    }
}

fn timed_out(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, why)
}

impl<IO: AsyncRead + OverTcp + Unpin> AsyncRead for EdgeIo<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Checked whether or not bytes come: a client that keeps a connection busy with
        // frames that start no request is still idle.
        this.poll_idle(cx)?;
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + OverTcp + Unpin> AsyncWrite for EdgeIo<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.io).poll_write(cx, buf);
        this.note_write(cx, outcome)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.note_write(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.io).poll_flush(cx);
        this.note_write(cx, outcome)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.io).poll_shutdown(cx);
        this.note_write(cx, outcome)
    }
}

/// Makes the socket's close a reset: closing with unsent bytes would leave them in the kernel
/// until the client reads them or the retransmissions give up. (A zero linger never blocks.)
pub fn reset_on_close(socket: &tokio::net::TcpStream) {
    let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
}
