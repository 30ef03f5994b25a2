//! The floor: an "ideal" SSE server on plain std threads that only greets each stream and, per
//! broadcast, writes one pre-encoded frame to every socket. The kernel's cost of one write per
//! stream is the floor under every server's fan-out on this machine; the `floor` scenario
//! measures it with the same client as any other server. The ideal server runs in a child
//! process ([`FloorProcess`], the hidden `herald-bench floor-server`), as a real server would:
//! its sockets do not count against the bench's file limit, and its CPU and memory are read
//! from `/proc` like any server's. The two talk over the child's stdin and stdout, a line each.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use parking_lot::Mutex;

use crate::conn::SseEndpoint;

/// Bytes of a request head the server reads before giving up on the connection.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// How long a client may take to send its request head; the accept thread waits on it.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A stream that stops reading fails its write after this, instead of stalling broadcasts.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The response head and first event every stream gets.
const GREETING: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\nevent: connected\ndata: {}\n\n";
/// Pause after a failed accept (out of descriptors, say) so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// The frame a broadcast writes. The bench's cost of reading a frame grows with its size, and
/// on two shared cores that cost is in every latency, so a floor meant to stand beside herald
/// can send what herald must (BENCHMARKS.md, "Issue 16, eleventh step").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FloorFrame {
    /// `data: {"message":"SEND_TIME"}`: the least a stream can carry.
    #[default]
    Minimal,
    /// The size and shape of herald's announcement frame: an `id:`, an `event:`, and a `data:`
    /// with herald's five fields (their values stand-ins of the same length).
    Herald,
}

impl FloorFrame {
    /// The frame of the `number`th broadcast (from 1), carrying `send_time`.
    fn encode(self, number: u64, send_time: u64) -> Vec<u8> {
        match self {
            Self::Minimal => format!("data: {{\"message\":\"{send_time}\"}}\n\n"),
            Self::Herald => format!(
                "id: {number}\nevent: announcement\ndata: {{\"id\":\"{number:08x}-0000-7000-8000-000000000000\",\
                 \"type\":\"info\",\"title\":\"t\",\"message\":\"{send_time}\",\
                 \"timestamp\":\"1970-01-01T00:00:00.000Z\"}}\n\n"
            ),
        }
        .into_bytes()
    }

    /// Its name on the command line, in the report, and to the child after the send time of
    /// a `broadcast` line.
    pub fn word(self) -> &'static str {
        match self {
            Self::Minimal => "minimal",
            Self::Herald => "herald",
        }
    }

    /// The frame named `word` (clap's name for it, which [`Self::word`] gives too).
    fn from_word(word: &str) -> Option<Self> {
        <Self as clap::ValueEnum>::from_str(word, false).ok()
    }
}

/// What one broadcast took.
#[derive(Debug, Clone, Copy)]
pub struct Broadcast {
    pub send_time: u64,
    /// From the first write to the last one finishing, over every writer thread.
    pub write_time: Duration,
    /// Streams whose write failed (closed, or not reading for [`WRITE_TIMEOUT`]).
    pub failed: u64,
}

/// A running ideal server; dropping it closes the listener and every stream socket.
struct IdealServer {
    /// The listener's address (127.0.0.1, a port the kernel chose).
    addr: SocketAddrV4,
    /// Every greeted stream, in accept order. A std-thread lock held for a whole broadcast so
    /// the writers' shares stay fixed; the accept thread waits that long to add a stream.
    streams: Arc<Mutex<Vec<TcpStream>>>,
    /// Set when the server is dropped; the accept thread checks it after each accept.
    stopping: Arc<AtomicBool>,
    /// The accept thread, joined on drop.
    acceptor: Option<JoinHandle<()>>,
    /// Threads each broadcast writes from: one per core.
    writer_threads: usize,
    /// Broadcasts so far: the next one's `id:` (for [`FloorFrame::Herald`]) is this plus one.
    broadcasts: AtomicU64,
}

impl IdealServer {
    /// Binds 127.0.0.1 on a free port and starts accepting.
    fn start() -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, listener.local_addr()?.port());
        let streams = Arc::new(Mutex::new(Vec::new()));
        let stopping = Arc::new(AtomicBool::new(false));
        let acceptor = std::thread::Builder::new()
            .name("floor-accept".into())
            .spawn({
                let (streams, stopping) = (streams.clone(), stopping.clone());
                move || accept_streams(&listener, &streams, &stopping)
            })?;
        let writer_threads = std::thread::available_parallelism().map_or(1, usize::from);
        Ok(Self {
            addr,
            streams,
            stopping,
            acceptor: Some(acceptor),
            writer_threads,
            broadcasts: AtomicU64::new(0),
        })
    }

    /// Encodes one `frame` carrying `send_time` and writes it to every stream, blocking, from
    /// the writer threads, each taking a contiguous share of the streams.
    fn broadcast(&self, send_time: u64, frame: FloorFrame) -> Broadcast {
        let number = self.broadcasts.fetch_add(1, Ordering::Relaxed) + 1;
        let frame = frame.encode(number, send_time);
        let streams = self.streams.lock();
        let share = streams.len().div_ceil(self.writer_threads).max(1);
        let began = Instant::now();
        let failed = std::thread::scope(|scope| {
            let writers: Vec<_> = streams
                .chunks(share)
                .map(|share| {
                    (
                        share.len() as u64,
                        scope.spawn(|| write_to_all(share, &frame)),
                    )
                })
                .collect();
            // A writer that panicked wrote to none of its share, as far as anyone can tell.
            writers
                .into_iter()
                .map(|(share_len, writer)| writer.join().unwrap_or(share_len))
                .sum()
        });
        Broadcast {
            send_time,
            write_time: began.elapsed(),
            failed,
        }
    }
}

impl Drop for IdealServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        // A connection of our own wakes the accept thread, which then sees `stopping`. If
        // even that fails the thread is left detached: it ends at its next accept.
        let woken = TcpStream::connect(self.addr).is_ok();
        if let Some(acceptor) = self.acceptor.take().filter(|_| woken) {
            let _ = acceptor.join();
        }
        self.streams.lock().clear();
    }
}

/// The accept thread: greets each connection and keeps it, until `stopping`.
fn accept_streams(listener: &TcpListener, streams: &Mutex<Vec<TcpStream>>, stopping: &AtomicBool) {
    loop {
        let accepted = listener.accept();
        if stopping.load(Ordering::Relaxed) {
            return;
        }
        match accepted {
            Ok((stream, _)) => {
                // A client that sends a bad head or goes away is dropped: it sees the close.
                if greet(&stream).is_ok() {
                    streams.lock().push(stream);
                }
            }
            Err(_) => std::thread::sleep(ACCEPT_RETRY),
        }
    }
}

/// The hidden subcommand that runs the ideal server in its own process.
pub const SERVER_COMMAND: &str = "floor-server";

/// The child's side: starts the server, says `listening PORT THREADS`, then answers each
/// `broadcast SEND_TIME FRAME` line (FRAME a [`FloorFrame`]'s word) with `WRITE_NS FAILED`
/// until stdin closes.
pub fn serve_over_stdio() -> anyhow::Result<()> {
    let server = IdealServer::start().context("could not start the ideal server")?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "listening {} {}",
        server.addr.port(),
        server.writer_threads
    )?;
    out.flush()?;
    for line in io::stdin().lock().lines() {
        let line = line?;
        let mut words = line.split(' ');
        let (Some("broadcast"), Some(Ok(send_time)), Some(frame), None) = (
            words.next(),
            words.next().map(str::parse),
            words.next().and_then(FloorFrame::from_word),
            words.next(),
        ) else {
            bail!("unexpected request {line:?}");
        };
        let broadcast = server.broadcast(send_time, frame);
        writeln!(
            out,
            "{} {}",
            broadcast.write_time.as_nanos(),
            broadcast.failed
        )?;
        out.flush()?;
    }
    Ok(())
}

/// The bench's side: the ideal server running as a child of this process.
pub struct FloorProcess {
    child: Child,
    requests: Option<ChildStdin>,
    answers: BufReader<ChildStdout>,
    addr: SocketAddrV4,
    writer_threads: usize,
    frame: FloorFrame,
}

impl FloorProcess {
    /// Starts this same binary as the ideal server, writing `frame`s, and waits until it
    /// listens.
    pub fn start(frame: FloorFrame) -> anyhow::Result<Self> {
        let (child, requests, answers) = start_child(SERVER_COMMAND)?;
        let mut process = Self {
            child,
            requests: Some(requests),
            answers: BufReader::new(answers),
            addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            writer_threads: 0,
            frame,
        };
        let line = process.answer()?;
        let mut words = line.split_whitespace().skip(1).map(str::parse::<usize>);
        let (Some(Ok(port)), Some(Ok(threads))) = (words.next(), words.next()) else {
            bail!("the ideal server said {line:?}, not where it listens");
        };
        process
            .addr
            .set_port(u16::try_from(port).context("a port out of range")?);
        process.writer_threads = threads;
        Ok(process)
    }

    /// Where the bench's streams connect: any path, every user alike.
    pub fn endpoint(&self) -> SseEndpoint {
        SseEndpoint {
            addr: self.addr,
            authority: self.addr.to_string(),
            path_template: "/events/{user}".into(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn writer_threads(&self) -> usize {
        self.writer_threads
    }

    pub fn frame(&self) -> FloorFrame {
        self.frame
    }

    /// Has the child write one frame carrying `send_time` to every stream; blocks until done.
    pub fn broadcast(&mut self, send_time: u64) -> anyhow::Result<Broadcast> {
        let requests = self
            .requests
            .as_mut()
            .context("the ideal server is stopping")?;
        writeln!(requests, "broadcast {send_time} {}", self.frame.word())?;
        requests.flush()?;
        let line = self.answer()?;
        let mut words = line.split_whitespace().map(str::parse::<u64>);
        let (Some(Ok(write_ns)), Some(Ok(failed))) = (words.next(), words.next()) else {
            bail!("the ideal server answered {line:?}");
        };
        Ok(Broadcast {
            send_time,
            write_time: Duration::from_nanos(write_ns),
            failed,
        })
    }

    fn answer(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        if self.answers.read_line(&mut line)? == 0 {
            bail!("the ideal server exited");
        }
        Ok(line.trim_end().to_owned())
    }
}

impl Drop for FloorProcess {
    fn drop(&mut self) {
        self.requests = None;
        end_child(&mut self.child);
    }
}

/// Starts this same binary with `subcommand` (an ideal server) as a child, with piped stdin
/// and stdout.
pub fn start_child(subcommand: &str) -> anyhow::Result<(Child, ChildStdin, ChildStdout)> {
    let exe =
        std::env::current_exe().context("cannot find this binary to start the ideal server")?;
    let mut child = Command::new(exe)
        .arg(subcommand)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start the ideal server")?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        bail!("the ideal server has no pipes");
    };
    Ok((child, stdin, stdout))
}

/// Waits for a child whose stdin was closed (which ends it) to exit; one that does not go
/// within a few seconds is killed.
pub fn end_child(child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Reads the request head (bounded in size and time) and sends the greeting.
fn greet(mut stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(HEAD_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 2048];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
        match stream.read(&mut buffer)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            read => head.extend_from_slice(&buffer[..read]),
        }
    }
    stream.write_all(GREETING)
}

/// One writer thread's share: the frame to each stream in turn; returns how many failed.
fn write_to_all(streams: &[TcpStream], frame: &[u8]) -> u64 {
    let mut failed = 0;
    for mut stream in streams {
        if stream.write_all(frame).is_err() {
            failed += 1;
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens a stream to `server` the way any client would and reads its greeting.
    fn open_stream(server: &IdealServer) -> TcpStream {
        let mut stream = TcpStream::connect(server.addr).expect("connects");
        stream
            .write_all(b"GET /events/u HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("sends");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut greeting = vec![0; GREETING.len()];
        stream.read_exact(&mut greeting).expect("greeted");
        assert_eq!(greeting, GREETING);
        stream
    }

    /// Waits (a few seconds at most) until the accept thread has kept `count` streams: it
    /// keeps each one just after greeting it.
    fn wait_until_kept(server: &IdealServer, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while server.streams.lock().len() < count {
            assert!(Instant::now() < deadline, "streams were not kept");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_broadcast_writes_one_frame_with_the_send_time_to_every_stream() {
        let server = IdealServer::start().expect("starts");
        let mut streams: Vec<TcpStream> = (0..5).map(|_| open_stream(&server)).collect();
        wait_until_kept(&server, streams.len());
        let broadcast = server.broadcast(1_234, FloorFrame::Minimal);
        assert_eq!(broadcast.failed, 0);
        let frame = b"data: {\"message\":\"1234\"}\n\n";
        for stream in &mut streams {
            let mut received = vec![0; frame.len()];
            stream.read_exact(&mut received).expect("frame");
            assert_eq!(received, frame);
        }
    }

    #[test]
    fn a_herald_frame_has_herald_s_fields_and_length_and_numbers_the_broadcasts() {
        let server = IdealServer::start().expect("starts");
        let mut stream = open_stream(&server);
        wait_until_kept(&server, 1);
        let send_time = 1_765_100_000_123_456_789;
        for number in 1..=2 {
            assert_eq!(server.broadcast(send_time, FloorFrame::Herald).failed, 0);
            let expected = format!(
                "id: {number}\nevent: announcement\ndata: {{\"id\":\"0000000{number}-0000-7000-8000-000000000000\",\
                 \"type\":\"info\",\"title\":\"t\",\"message\":\"{send_time}\",\
                 \"timestamp\":\"1970-01-01T00:00:00.000Z\"}}\n\n"
            );
            let mut received = vec![0; expected.len()];
            stream.read_exact(&mut received).expect("frame");
            assert_eq!(String::from_utf8(received).unwrap(), expected);
        }
        // herald's own announcement for the same send time, as a stream gets it (the id,
        // timestamp and event id differ; the length does not, for ids of one digit).
        let herald = format!(
            "id: 1\nevent: announcement\ndata: {{\"id\":\"01a2500a-4e1d-7242-bdd2-9e6a2ba78f6b\",\
             \"type\":\"info\",\"title\":\"t\",\"message\":\"{send_time}\",\
             \"timestamp\":\"2026-12-07T10:26:22.365Z\"}}\n\n"
        );
        assert_eq!(FloorFrame::Herald.encode(1, send_time).len(), herald.len());
        let data = &FloorFrame::Herald.encode(7, send_time)[..];
        assert_eq!(
            crate::fleet::send_time_in(data, send_time - 1),
            Some(send_time),
            "the bench finds the send time, not a number of the stand-ins"
        );
    }

    #[test]
    fn each_frame_is_known_by_its_word() {
        for frame in [FloorFrame::Minimal, FloorFrame::Herald] {
            assert_eq!(FloorFrame::from_word(frame.word()), Some(frame));
        }
        assert_eq!(FloorFrame::from_word("other"), None);
    }

    #[test]
    fn dropping_the_server_closes_every_stream_and_the_listener() {
        let server = IdealServer::start().expect("starts");
        let mut stream = open_stream(&server);
        wait_until_kept(&server, 1);
        let addr = server.addr;
        drop(server);
        assert_eq!(stream.read(&mut [0; 16]).expect("closed, not reset"), 0);
        assert!(TcpStream::connect(addr).is_err(), "the listener is closed");
    }
}
