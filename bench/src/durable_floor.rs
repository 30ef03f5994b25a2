//! The durable floor: an ideal server for the targeted case that keeps every publish on disk
//! before it answers or delivers it, the least any durable server must do. One thread and one
//! poll loop (mio). A publish is read just far enough to find its user (the path) and its body
//! (by `content-length`); every publish read in one pass over the ready sockets is written to a
//! preallocated log file with one write, and one `fdatasync` covers them all. Only then does
//! each go to its user's streams as one frame and its publisher get `201`. What a real server
//! spends beyond this (routing, JSON, an index per user, threads) is what the gap to this floor
//! measures (BENCHMARKS.md). Like [`crate::floor`]'s server it runs as a child process, the
//! hidden `herald-bench durable-floor-server`, so that its CPU is read from `/proc` like any
//! server's.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

/// The hidden subcommand that runs the durable floor in its own process.
pub const SERVER_COMMAND: &str = "durable-floor-server";

const LISTENER: Token = Token(usize::MAX);
const STOP: Token = Token(usize::MAX - 1);
/// The log's size, written once at start so that appends never grow the file (an `fdatasync`
/// then writes data, not the inode): a ring, reused from the start when full, as a WAL is.
const LOG_BYTES: u64 = 64 << 20;
/// A request head or body larger than this closes its connection.
const MAX_REQUEST: usize = 64 * 1024;
/// A connection that stops reading is closed once this much waits for it.
const MAX_OUTPUT: usize = 1 << 20;
/// The answer to a stream's request: headers and a first event (the bench times the open to it).
const GREETING: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\nevent: connected\ndata: {}\n\n";
const CREATED: &[u8] =
    b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
const NOT_FOUND: &[u8] =
    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// What a connection turned out to be, from its first request.
enum Role {
    Unknown,
    Stream(String),
    Publisher,
    /// Answered 404; closed once the answer is out.
    Refused,
}

struct Connection {
    socket: TcpStream,
    role: Role,
    input: Vec<u8>,
    /// Bytes the socket did not take yet; sent when it becomes writable.
    output: Vec<u8>,
    waits_to_write: bool,
}

/// A publish read from its publisher, waiting for the group's `fdatasync`.
struct Publish {
    publisher: Token,
    user: String,
    body: Vec<u8>,
}

/// The server's whole state; [`DurableServer::run`] owns the thread it runs on.
pub struct DurableServer {
    poll: Poll,
    listener: TcpListener,
    connections: Vec<Option<Connection>>,
    /// Slots a new connection may take.
    free: Vec<usize>,
    /// Slots closed in this pass: free only after its commit, so that a publish whose
    /// publisher went away is never answered on a new connection in the same slot.
    closed: Vec<usize>,
    streams: HashMap<String, Vec<Token>>,
    log: File,
    log_path: PathBuf,
    log_offset: u64,
    seq: u64,
    pending: Vec<Publish>,
    /// Buffers [`Self::commit`] reuses: the group's log record, one event's frame, and the
    /// streams it goes to.
    group: Vec<u8>,
    frame: Vec<u8>,
    targets: Vec<Token>,
}

impl DurableServer {
    /// Binds 127.0.0.1 on a free port; the log is a new file in `dir`.
    pub fn bind(dir: &std::path::Path) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let log_path = dir.join(format!("herald-durable-floor-{}.log", std::process::id()));
        let log = File::options()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&log_path)?;
        let zeros = vec![0u8; 1 << 20];
        for offset in (0..LOG_BYTES).step_by(zeros.len()) {
            log.write_all_at(&zeros, offset)?;
        }
        log.sync_all()?;
        Ok(Self {
            poll,
            listener,
            connections: Vec::new(),
            free: Vec::new(),
            closed: Vec::new(),
            streams: HashMap::new(),
            log,
            log_path,
            log_offset: 0,
            seq: 0,
            pending: Vec::new(),
            group: Vec::new(),
            frame: Vec::new(),
            targets: Vec::new(),
        })
    }

    pub fn port(&self) -> io::Result<u16> {
        Ok(self.listener.local_addr()?.port())
    }

    /// A waker that ends [`Self::run`] from another thread.
    pub fn stopper(&self) -> io::Result<Arc<Waker>> {
        Ok(Arc::new(Waker::new(self.poll.registry(), STOP)?))
    }

    /// Serves until `stop` is set and the stopper wakes the loop.
    pub fn run(&mut self, stop: &AtomicBool) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        while !stop.load(Ordering::Acquire) {
            match self.poll.poll(&mut events, None) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
            for event in &events {
                match event.token() {
                    LISTENER => self.accept(),
                    STOP => {}
                    token => {
                        if event.is_writable() {
                            self.flush(token);
                        }
                        if event.is_readable() || event.is_read_closed() {
                            self.read(token);
                        }
                    }
                }
            }
            self.end_pass()?;
        }
        Ok(())
    }

    /// After a pass over the ready sockets: the group's commit, then the slots closed during
    /// the pass are free again.
    fn end_pass(&mut self) -> io::Result<()> {
        self.commit()?;
        self.free.append(&mut self.closed);
        Ok(())
    }

    /// Takes every connection waiting; one that cannot be set up is dropped, not the server.
    fn accept(&mut self) {
        loop {
            let (mut socket, _) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                // None left, or out of descriptors (the connection waits in the backlog).
                Err(_) => return,
            };
            let slot = self.free.pop().unwrap_or_else(|| {
                self.connections.push(None);
                self.connections.len() - 1
            });
            let registered = socket.set_nodelay(true).and_then(|()| {
                self.poll
                    .registry()
                    .register(&mut socket, Token(slot), Interest::READABLE)
            });
            if registered.is_err() {
                self.free.push(slot);
                continue;
            }
            self.connections[slot] = Some(Connection {
                socket,
                role: Role::Unknown,
                input: Vec::new(),
                output: Vec::new(),
                waits_to_write: false,
            });
        }
    }

    /// Reads what the socket has and takes every whole request out of it.
    fn read(&mut self, token: Token) {
        let Some(connection) = self.connections.get_mut(token.0).and_then(Option::as_mut) else {
            return;
        };
        let mut buffer = [0u8; 16 * 1024];
        let mut closed = false;
        loop {
            match connection.socket.read(&mut buffer) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(read) => connection.input.extend_from_slice(&buffer[..read]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        while let Some(request) = take_request(&mut connection.input) {
            match request {
                Request::Stream(user) if matches!(connection.role, Role::Unknown) => {
                    connection.role = Role::Stream(user.clone());
                    connection.output.extend_from_slice(GREETING);
                    self.streams.entry(user).or_default().push(token);
                }
                Request::Publish { user, body } if !matches!(connection.role, Role::Stream(_)) => {
                    connection.role = Role::Publisher;
                    self.pending.push(Publish {
                        publisher: token,
                        user,
                        body,
                    });
                }
                _ => {
                    connection.role = Role::Refused;
                    connection.output.extend_from_slice(NOT_FOUND);
                    break;
                }
            }
        }
        if closed || connection.input.len() > MAX_REQUEST {
            self.close(token);
        } else {
            self.flush(token);
        }
    }

    /// Writes every pending publish to the log, syncs it once, then delivers and answers each.
    fn commit(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.group.clear();
        let first_seq = self.seq + 1;
        for publish in &self.pending {
            self.seq += 1;
            write!(self.group, "{} {} ", self.seq, publish.user)?;
            self.group.extend_from_slice(&publish.body);
            self.group.push(b'\n');
        }
        let length = self.group.len() as u64;
        if self.log_offset + length > LOG_BYTES {
            self.log_offset = 0;
        }
        self.log.write_all_at(&self.group, self.log_offset)?;
        self.log.sync_data()?;
        self.log_offset += length;
        // Taken out while sending (a send may close a stream); their buffers are reused.
        let (mut pending, mut frame, mut targets) = (
            std::mem::take(&mut self.pending),
            std::mem::take(&mut self.frame),
            std::mem::take(&mut self.targets),
        );
        for (seq, publish) in (first_seq..).zip(&pending) {
            frame.clear();
            write!(frame, "id: {seq}\nevent: notification\ndata: ")?;
            frame.extend_from_slice(&publish.body);
            frame.extend_from_slice(b"\n\n");
            targets.clear();
            targets.extend_from_slice(
                self.streams
                    .get(&publish.user)
                    .map_or(&[][..], Vec::as_slice),
            );
            for &stream in &targets {
                self.send(stream, &frame);
            }
            self.send(publish.publisher, CREATED);
        }
        pending.clear();
        (self.pending, self.frame, self.targets) = (pending, frame, targets);
        Ok(())
    }

    fn send(&mut self, token: Token, bytes: &[u8]) {
        if let Some(connection) = self.connections.get_mut(token.0).and_then(Option::as_mut) {
            connection.output.extend_from_slice(bytes);
            self.flush(token);
        }
    }

    /// Writes what the socket takes; asks to hear when it takes more, if anything is left.
    fn flush(&mut self, token: Token) {
        let Some(connection) = self.connections.get_mut(token.0).and_then(Option::as_mut) else {
            return;
        };
        let mut written = 0;
        let mut failed = false;
        while written < connection.output.len() {
            match connection.socket.write(&connection.output[written..]) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(count) => written += count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        connection.output.drain(..written);
        let left = !connection.output.is_empty();
        let refused_and_done = matches!(connection.role, Role::Refused) && !left;
        if failed || refused_and_done || connection.output.len() > MAX_OUTPUT {
            self.close(token);
            return;
        }
        if left != connection.waits_to_write {
            let interest = if left {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self
                .poll
                .registry()
                .reregister(&mut connection.socket, token, interest)
                .is_err()
            {
                self.close(token);
                return;
            }
            connection.waits_to_write = left;
        }
    }

    fn close(&mut self, token: Token) {
        let Some(mut connection) = self.connections.get_mut(token.0).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut connection.socket);
        if let Role::Stream(user) = &connection.role {
            if let Some(streams) = self.streams.get_mut(user) {
                streams.retain(|stream| *stream != token);
                if streams.is_empty() {
                    self.streams.remove(user);
                }
            }
        }
        // A publish still waiting for the sync is answered to nobody; its event still goes out.
        self.closed.push(token.0);
    }
}

impl Drop for DurableServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log_path);
    }
}

enum Request {
    Stream(String),
    Publish { user: String, body: Vec<u8> },
    Other,
}

/// Takes the first whole request (head and body) out of `input`, if one is there. A body
/// declared longer than [`MAX_REQUEST`] (or a head that is not UTF-8) is [`Request::Other`].
fn take_request(input: &mut Vec<u8>) -> Option<Request> {
    let head_end = input.windows(4).position(|window| window == b"\r\n\r\n")? + 4;
    let Ok(head) = std::str::from_utf8(&input[..head_end]) else {
        input.drain(..head_end);
        return Some(Request::Other);
    };
    let mut lines = head.split("\r\n");
    let mut words = lines.next().unwrap_or_default().split(' ');
    let (method, path) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let path = path.split('?').next().unwrap_or_default();
    let length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .map_or(Some(0), |(_, value)| value.trim().parse::<usize>().ok());
    let Some(length) = length.filter(|&length| length <= MAX_REQUEST) else {
        input.drain(..head_end);
        return Some(Request::Other);
    };
    if input.len() < head_end + length {
        return None;
    }
    let user = |prefix: &str| path.strip_prefix(prefix).filter(|user| !user.is_empty());
    let request = match (method, user("/events/"), user("/api/notifications/")) {
        ("GET", Some(user), _) => Request::Stream(user.to_owned()),
        ("POST", _, Some(user)) => Request::Publish {
            user: user.to_owned(),
            body: input[head_end..head_end + length].to_vec(),
        },
        _ => Request::Other,
    };
    input.drain(..head_end + length);
    Some(request)
}

/// The child's side: starts the server, says `listening PORT`, and serves until stdin closes.
pub fn serve_over_stdio() -> anyhow::Result<()> {
    let mut server =
        DurableServer::bind(&std::env::temp_dir()).context("could not start the durable floor")?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = server.stopper()?;
    std::thread::spawn({
        let stop = stop.clone();
        move || {
            for line in io::stdin().lock().lines() {
                if line.is_err() {
                    break;
                }
            }
            stop.store(true, Ordering::Release);
            let _ = stopper.wake();
        }
    });
    let mut out = io::stdout().lock();
    writeln!(out, "listening {}", server.port()?)?;
    out.flush()?;
    drop(out);
    server.run(&stop)?;
    Ok(())
}

/// The bench's side: the durable floor running as a child of this process.
pub struct DurableFloorProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    port: u16,
}

impl DurableFloorProcess {
    /// Starts this same binary as the durable floor and waits until it listens.
    pub fn start() -> anyhow::Result<Self> {
        let (child, stdin, stdout) = crate::floor::start_child(SERVER_COMMAND)?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(Ok(port)) = line
            .trim()
            .strip_prefix("listening ")
            .map(str::parse::<u16>)
        else {
            bail!("the durable floor said {line:?}, not where it listens");
        };
        Ok(Self {
            child,
            stdin: Some(stdin),
            port,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for DurableFloorProcess {
    fn drop(&mut self) {
        self.stdin = None;
        crate::floor::end_child(&mut self.child);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    use super::*;

    /// A server on a free port, its log in a directory of its own (kept while the test runs).
    fn started() -> (tempfile::TempDir, DurableServer, u16) {
        let dir = tempfile::tempdir().expect("dir");
        let server = DurableServer::bind(dir.path()).expect("server");
        let port = server.port().expect("port");
        (dir, server, port)
    }

    /// Reads from `socket` until `wanted` has arrived (5 s at most); returns everything read.
    fn read_until(socket: &mut TcpStream, wanted: &[u8]) -> Vec<u8> {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        while !seen.windows(wanted.len()).any(|window| window == wanted) {
            let read = socket
                .read(&mut buffer)
                .expect("the server answers within 5 s");
            assert!(
                read > 0,
                "closed before {:?}",
                String::from_utf8_lossy(wanted)
            );
            seen.extend_from_slice(&buffer[..read]);
        }
        seen
    }

    #[test]
    fn a_body_longer_than_the_bound_is_refused_without_waiting_for_it() {
        for length in [
            (MAX_REQUEST + 1).to_string(),
            usize::MAX.to_string(),
            "x".into(),
        ] {
            let mut input = format!(
                "POST /api/notifications/alice HTTP/1.1\r\ncontent-length: {length}\r\n\r\n{{}}"
            )
            .into_bytes();
            assert!(
                matches!(take_request(&mut input), Some(Request::Other)),
                "content-length {length}"
            );
        }
        let mut whole =
            b"POST /api/notifications/bob HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}GET".to_vec();
        assert!(matches!(
            take_request(&mut whole),
            Some(Request::Publish { user, body }) if user == "bob" && body == b"{}"
        ));
        assert_eq!(whole, b"GET", "the next request's bytes stay");
    }

    #[test]
    fn a_stream_that_stops_reading_is_closed_once_its_backlog_passes_the_bound() {
        let (_dir, mut server, port) = started();
        // Never read from: the kernel's buffers fill, then the server's.
        let _silent = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        server.accept();
        let frame = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while server.connections[0].is_some() {
            assert!(sent < 1_000, "64 MB queued for a stream that does not read");
            server.send(Token(0), &frame);
            sent += 1;
        }
        assert_eq!(server.closed, [0]);
    }

    #[test]
    fn a_slot_closed_in_a_pass_is_not_reused_before_that_pass_s_answers_are_out() {
        let (_dir, mut server, port) = started();
        // On loopback a connect has been queued, and a write and a close delivered, by the
        // time the call returns: no waiting needed.
        let mut gone = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        server.accept();
        gone.write_all(b"POST /api/notifications/alice HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}")
            .expect("publish");
        drop(gone);
        server.read(Token(0));
        assert_eq!(
            (server.pending.len(), server.closed.as_slice()),
            (1, &[0][..])
        );

        let mut next = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        server.accept();
        assert!(
            server.connections[0].is_none(),
            "slot 0 waits for the commit"
        );
        assert!(server.connections[1].is_some());
        server.end_pass().expect("commit");
        next.set_nonblocking(true).expect("nonblocking");
        let mut buffer = [0u8; 64];
        let read = next.read(&mut buffer);
        assert!(
            matches!(&read, Err(error) if error.kind() == io::ErrorKind::WouldBlock),
            "the new connection got the old one's answer: {read:?}"
        );
        assert_eq!(server.free, [0]);
    }

    #[test]
    fn a_publish_is_in_the_log_before_its_user_s_stream_and_its_publisher_hear_of_it() {
        let (_dir, mut server, port) = started();
        let log_path = server.log_path.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopper = server.stopper().expect("waker");
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || server.run(&stop)
        });

        let mut alice = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        alice
            .write_all(b"GET /events/alice HTTP/1.1\r\nhost: x\r\n\r\n")
            .expect("stream request");
        read_until(&mut alice, b"event: connected\ndata: {}\n\n");
        let mut bob = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        bob.write_all(b"GET /events/bob HTTP/1.1\r\n\r\n")
            .expect("stream request");
        read_until(&mut bob, b"data: {}\n\n");

        let mut publisher = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let body = br#"{"title":"t","message":"1"}"#;
        for _ in 0..2 {
            write!(
                publisher,
                "POST /api/notifications/alice HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .expect("head");
            publisher.write_all(body).expect("body");
            let answer = read_until(&mut publisher, b"\r\n\r\n{}");
            assert!(answer.starts_with(b"HTTP/1.1 201 Created\r\n"));
        }
        let log = std::fs::read(&log_path).expect("log");
        let expected = br#"1 alice {"title":"t","message":"1"}
2 alice {"title":"t","message":"1"}
"#;
        assert_eq!(&log[..expected.len()], expected);
        let events = read_until(&mut alice, b"id: 2\n");
        let events = String::from_utf8_lossy(&events);
        assert!(
            events.contains(
                "id: 1\nevent: notification\ndata: {\"title\":\"t\",\"message\":\"1\"}\n\n"
            ),
            "{events}"
        );

        let mut stranger = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stranger
            .write_all(b"DELETE /api/notifications/alice HTTP/1.1\r\n\r\n")
            .expect("request");
        let answer = read_until(&mut stranger, b"\r\n\r\n");
        assert!(answer.starts_with(b"HTTP/1.1 404 Not Found\r\n"));

        stop.store(true, Ordering::Release);
        stopper.wake().expect("wake");
        thread.join().expect("thread").expect("served");
        // Bob heard nothing of alice's: after his greeting, his socket is quiet.
        bob.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut rest = Vec::new();
        let _ = bob.read_to_end(&mut rest);
        assert!(!String::from_utf8_lossy(&rest).contains("notification"));
        assert!(!log_path.exists(), "the log goes with the server");
    }
}
