//! A minimal push service inside the bench, on a loopback port the kernel picks: it answers
//! `201` to `POST /p/{user}` at once and records who each push was for, when it arrived and
//! whether it looked like a push (docs/protocol.md, "What a push service receives"). Nothing
//! is decrypted; a push counts as malformed when its `Content-Encoding` is not `aes128gcm`,
//! it lacks a VAPID `Authorization`, `TTL` or `Topic`, or its body is not one `aes128gcm`
//! record.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderMap;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::fleet::now_ns;

/// How often a waiter looks at the count of pushes received.
const POLL: Duration = Duration::from_millis(5);
/// The smallest one-record `aes128gcm` body: salt 16, record size 4, key id length 1, key id
/// 65 (the sender's P-256 point), then the padding delimiter 1 and the tag 16.
const MIN_RECORD_BYTES: usize = 16 + 4 + 1 + 65 + 1 + 16;
/// The most a push service must take (and so the most herald sends).
const MAX_RECORD_BYTES: usize = 4096;

/// One push as it arrived.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The `{user}` of its path.
    pub user: String,
    /// When its body had been read, in ns since the epoch.
    pub at_ns: u64,
    /// Why it is not a well-formed push, if it is not.
    pub problem: Option<&'static str>,
    /// A repeat of a `Topic` already received (a push made twice).
    pub repeat: bool,
}

/// What the service has recorded; shared by its connection tasks.
#[derive(Default)]
struct Record {
    arrivals: parking_lot::Mutex<Vec<Arrival>>,
    /// Topics seen, so a repeat is told from a new push.
    topics: parking_lot::Mutex<HashSet<String>>,
    /// Pushes received (to `/p/{user}`), each `Topic` once (one without a `Topic` counts each
    /// time).
    distinct: AtomicU64,
}

/// The running service; it stops when dropped.
pub struct PushService {
    addr: SocketAddr,
    record: Arc<Record>,
    stop: CancellationToken,
}

impl PushService {
    /// Starts the service on a thread of its own at the OS's idle priority (`SCHED_IDLE`):
    /// it stands for a push service on another machine, so it takes only CPU that the server
    /// and the load leave over (BENCHMARKS.md, "Web Push").
    pub async fn start() -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("cannot bind the push service to 127.0.0.1")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let record = Arc::new(Record::default());
        let stop = CancellationToken::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (served_record, served_stop) = (record.clone(), stop.clone());
        std::thread::Builder::new()
            .name("push-service".into())
            .spawn(move || {
                lower_priority();
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => accept(listener, served_record, served_stop).await,
                        Err(error) => eprintln!("bench: the push service cannot listen: {error}"),
                    }
                });
            })?;
        Ok(Self { addr, record, stop })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint a subscription of `user` names.
    pub fn endpoint(&self, user: &str) -> String {
        format!("http://{}/p/{user}", self.addr)
    }

    /// Pushes received so far, each `Topic` once.
    pub fn received(&self) -> u64 {
        self.record.distinct.load(Ordering::Relaxed)
    }

    /// Waits until `target` pushes have been received or `deadline` passes; returns when the
    /// target was reached, if it was.
    pub async fn wait_received(&self, target: u64, deadline: Instant) -> Option<Instant> {
        loop {
            if self.received() >= target {
                return Some(Instant::now());
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Everything received so far, in order of arrival.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.record.arrivals.lock().clone()
    }
}

impl Drop for PushService {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Puts the calling thread in `SCHED_IDLE`, or says why it stays where it is.
fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(error) =
        set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle)
    {
        eprintln!("bench: the push service runs at normal priority: {error:?}");
    }
}

/// Serves each connection on its own task until `stop`.
async fn accept(listener: TcpListener, record: Arc<Record>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors, say: the pusher retries, and the run reports what arrived.
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let (record, stop) = (record.clone(), stop.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let record = record.clone();
                async move { Ok::<_, hyper::Error>(receive(&record, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = stop.cancelled() => {}
                _ = connection => {}
            }
        });
    }
}

/// Reads one request to its end, records it and answers `201` (`404` to anything but
/// `POST /p/{user}`, which is recorded as malformed too).
async fn receive(record: &Record, request: Request<Incoming>) -> Response<Empty<Bytes>> {
    let (head, body) = request.into_parts();
    let body = body.collect().await.map(|body| body.to_bytes());
    let at_ns = now_ns();
    let user = user_of(&head.method, head.uri.path());
    let problem = match (&user, &body) {
        (None, _) => Some("not POST /p/{user}"),
        (_, Err(_)) => Some("body not read to its end"),
        (Some(_), Ok(body)) => check_push(&head.headers, body).err(),
    };
    let topic = head
        .headers
        .get("topic")
        .and_then(|value| value.to_str().ok());
    let repeat = match topic {
        Some(topic) => !record.topics.lock().insert(topic.to_owned()),
        None => false,
    };
    if !repeat && user.is_some() {
        record.distinct.fetch_add(1, Ordering::Relaxed);
    }
    record.arrivals.lock().push(Arrival {
        user: user.unwrap_or_default().to_owned(),
        at_ns,
        problem,
        repeat,
    });
    let status = if problem == Some("not POST /p/{user}") {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::CREATED
    };
    let mut response = Response::new(Empty::new());
    *response.status_mut() = status;
    response
}

/// The `{user}` of `POST /p/{user}`.
fn user_of<'a>(method: &Method, path: &'a str) -> Option<&'a str> {
    let user = path.strip_prefix("/p/")?;
    (method == Method::POST && !user.is_empty() && !user.contains('/')).then_some(user)
}

/// Whether a push has what every push must: `aes128gcm` content, a VAPID `Authorization`
/// (`vapid t=JWT, k=KEY`), a `TTL` in seconds, a `Topic` of at most 32 base64url characters,
/// and a body that is one record whose key id is a P-256 point.
pub fn check_push(headers: &HeaderMap, body: &[u8]) -> Result<(), &'static str> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if header("content-encoding") != Some("aes128gcm") {
        return Err("Content-Encoding is not aes128gcm");
    }
    let vapid = header("authorization")
        .and_then(|value| value.strip_prefix("vapid t="))
        .is_some_and(|rest| rest.contains(", k="));
    if !vapid {
        return Err("no VAPID Authorization");
    }
    if header("ttl")
        .and_then(|ttl| ttl.parse::<u64>().ok())
        .is_none()
    {
        return Err("no TTL");
    }
    let topic_ok = header("topic").is_some_and(|topic| {
        (1..=32).contains(&topic.len())
            && topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !topic_ok {
        return Err("no Topic");
    }
    // The header's key id length (byte 20) is 65: the sender's uncompressed P-256 point.
    if !(MIN_RECORD_BYTES..=MAX_RECORD_BYTES).contains(&body.len()) || body[20] != 65 {
        return Err("body is not one aes128gcm record");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn push_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("content-encoding", "aes128gcm"),
            ("authorization", "vapid t=a.b.c, k=BKey"),
            ("ttl", "86400"),
            ("topic", "0193a0c47b1e7cc29a431b1f1c7d2e01"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        headers
    }

    fn record(len: usize) -> Vec<u8> {
        let mut body = vec![0u8; len];
        body[20] = 65;
        body
    }

    #[test]
    fn a_push_with_every_header_and_one_record_is_well_formed() {
        assert_eq!(check_push(&push_headers(), &record(200)), Ok(()));
        assert_eq!(
            check_push(&push_headers(), &record(MIN_RECORD_BYTES)),
            Ok(())
        );
        assert_eq!(
            check_push(&push_headers(), &record(MAX_RECORD_BYTES)),
            Ok(())
        );
    }

    #[test]
    fn a_push_missing_a_header_or_with_another_body_is_malformed_and_says_why() {
        let without = |name: &str| {
            let mut headers = push_headers();
            headers.remove(name);
            check_push(&headers, &record(200))
        };
        assert_eq!(
            without("content-encoding"),
            Err("Content-Encoding is not aes128gcm")
        );
        assert_eq!(without("authorization"), Err("no VAPID Authorization"));
        assert_eq!(without("ttl"), Err("no TTL"));
        assert_eq!(without("topic"), Err("no Topic"));

        let mut headers = push_headers();
        headers.insert("content-encoding", HeaderValue::from_static("aesgcm"));
        assert!(check_push(&headers, &record(200)).is_err());
        let mut headers = push_headers();
        headers.insert("authorization", HeaderValue::from_static("Bearer x"));
        assert_eq!(
            check_push(&headers, &record(200)),
            Err("no VAPID Authorization")
        );
        let mut headers = push_headers();
        headers.insert("topic", HeaderValue::from_static("has spaces in it"));
        assert_eq!(check_push(&headers, &record(200)), Err("no Topic"));

        let not_a_record = Err("body is not one aes128gcm record");
        assert_eq!(check_push(&push_headers(), b"{\"id\":1}"), not_a_record);
        assert_eq!(
            check_push(&push_headers(), &record(MAX_RECORD_BYTES + 1)),
            not_a_record
        );
        assert_eq!(check_push(&push_headers(), &[0u8; 200]), not_a_record);
    }

    #[test]
    fn only_post_to_a_user_path_is_a_push() {
        assert_eq!(user_of(&Method::POST, "/p/b1-0"), Some("b1-0"));
        assert_eq!(user_of(&Method::GET, "/p/b1-0"), None);
        assert_eq!(user_of(&Method::POST, "/p/"), None);
        assert_eq!(user_of(&Method::POST, "/p/a/b"), None);
        assert_eq!(user_of(&Method::POST, "/q/a"), None);
    }

    #[tokio::test]
    async fn the_service_answers_201_and_records_each_topic_once() {
        let service = PushService::start().await.expect("starts");
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let push = |user: &str, topic: &'static str| {
            client
                .post(service.endpoint(user))
                .header("content-encoding", "aes128gcm")
                .header("authorization", "vapid t=a.b.c, k=BKey")
                .header("ttl", "60")
                .header("topic", topic)
                .body(record(150))
                .send()
        };
        let first = push("u1", "t1").await.expect("answered");
        assert_eq!(first.status(), 201);
        push("u1", "t1").await.expect("answered");
        push("u2", "t2").await.expect("answered");
        let stray = client
            .get(format!("http://{}/elsewhere", service.addr()))
            .send()
            .await
            .expect("answered");
        assert_eq!(stray.status(), 404);
        assert_eq!(
            service.received(),
            2,
            "two topics; a stray request is no push"
        );
        let arrivals = service.arrivals();
        let repeats: Vec<bool> = arrivals.iter().map(|a| a.repeat).collect();
        assert_eq!(repeats, [false, true, false, false]);
        assert_eq!(arrivals[2].user, "u2");
        assert_eq!(arrivals[0].problem, None);
        assert_eq!(arrivals[3].problem, Some("not POST /p/{user}"));
    }
}
