//! HTTP/1 on a bare socket, for what an HTTP client library would not send or would hide:
//! [`RawClient`] writes requests as given and reads the bytes back, and [`Api::raw_request`]
//! sends one request exactly as written.

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::WAIT;
use super::api::Api;

impl Api {
    /// Sends one request exactly as written, on a fresh socket: for targets a URL parser would
    /// normalise (`%2E`, `..`) before they reach the server. Reads the response to its end.
    pub async fn raw_request(
        &self,
        method: &str,
        target: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (StatusCode, Value) {
        let addr = self.socket_addr();
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(content_type) = content_type {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        head.push_str("\r\n");
        let exchange = async {
            let mut socket = TcpStream::connect(addr).await?;
            socket.write_all(head.as_bytes()).await?;
            socket.write_all(body).await?;
            let mut response = Vec::new();
            socket.read_to_end(&mut response).await?;
            Ok::<_, std::io::Error>(response)
        };
        let response = tokio::time::timeout(WAIT, exchange)
            .await
            .expect("raw response in time")
            .expect("raw exchange");
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete response head");
        let head = String::from_utf8_lossy(&response[..split]).into_owned();
        let mut body = response[split + 4..].to_vec();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .and_then(|code| StatusCode::from_u16(code).ok())
            .unwrap_or_else(|| panic!("no status line in {head:?}"));
        if head
            .to_ascii_lowercase()
            .contains("\r\ntransfer-encoding: chunked")
        {
            body = dechunk(&body);
        }
        let text = String::from_utf8(body).expect("utf8 body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
        };
        (status, value)
    }

    /// `host:port` of a plain-HTTP server, for requests written on a bare socket.
    pub fn socket_addr(&self) -> &str {
        self.url
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("not a plain HTTP server: {}", self.url))
    }
}

/// A client that writes requests as given and reads the raw bytes back.
/// A connection a [`RawClient`] speaks over: plain TCP, or TLS.
pub trait Wire: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Wire for S {}

pub struct RawClient {
    socket: Box<dyn Wire>,
    /// Everything read so far that the test has not taken yet.
    unread: Vec<u8>,
}

impl RawClient {
    /// A fresh connection to the plain-HTTP server of `api`.
    pub async fn connect(api: &Api) -> Self {
        Self::connect_to(api.socket_addr()).await
    }

    /// A fresh connection to `addr`.
    pub async fn connect_to(addr: &str) -> Self {
        Self::over(TcpStream::connect(addr).await.expect("connect"))
    }

    /// A client on a connection already made (a TLS one, say).
    pub fn over(socket: impl Wire + 'static) -> Self {
        Self {
            socket: Box::new(socket),
            unread: Vec::new(),
        }
    }

    pub async fn send(&mut self, raw: &str) {
        self.send_bytes(raw.as_bytes()).await;
    }

    pub async fn send_bytes(&mut self, raw: &[u8]) {
        self.socket.write_all(raw).await.expect("send");
    }

    /// Everything until the server closes the connection, cleanly or with a reset (`true`
    /// then), within [`WAIT`].
    pub async fn read_until_closed(&mut self) -> (String, bool) {
        let mut all = std::mem::take(&mut self.unread);
        let reset = loop {
            let mut buf = [0u8; 16 * 1024];
            match tokio::time::timeout(WAIT, self.socket.read(&mut buf))
                .await
                .expect("the server closed the connection in time")
            {
                Ok(0) => break false,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(error) => panic!("read failed: {error}"),
            }
        };
        (String::from_utf8_lossy(&all).into_owned(), reset)
    }

    /// Reads until `needle` has arrived; returns everything up to and including it.
    pub async fn read_through(&mut self, needle: &str) -> String {
        loop {
            let text = String::from_utf8_lossy(&self.unread).into_owned();
            if let Some(at) = text.find(needle) {
                let end = at + needle.len();
                self.unread.drain(..end);
                return text[..end].to_owned();
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.socket.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} in time after {text:?}"))
                .expect("read");
            assert!(n > 0, "closed before {needle:?}; got {text:?}");
            self.unread.extend_from_slice(&buf[..n]);
        }
    }

    /// Everything until the server closes the connection.
    pub async fn read_to_end(&mut self) -> String {
        let mut rest = std::mem::take(&mut self.unread);
        tokio::time::timeout(WAIT, self.socket.read_to_end(&mut rest))
            .await
            .expect("the server closed the connection in time")
            .expect("a clean close");
        String::from_utf8(rest).expect("utf8")
    }

    /// One whole response with a `content-length` body: its head and its body.
    pub async fn read_whole_response(&mut self) -> (String, String) {
        let head = self.read_through("\r\n\r\n").await;
        let length: usize = head
            .lines()
            .find_map(|line| {
                line.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("no content-length in {head:?}"))
            .parse()
            .unwrap();
        while self.unread.len() < length {
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.socket.read(&mut buf))
                .await
                .expect("body in time")
                .expect("read");
            assert!(n > 0, "closed inside a body");
            self.unread.extend_from_slice(&buf[..n]);
        }
        let body = self.unread.drain(..length).collect();
        (head, String::from_utf8(body).expect("utf8"))
    }
}

/// A `GET` of `target` as an SSE client writes it.
pub fn get_request(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: herald.test\r\nAccept: text/event-stream\r\n\r\n")
}

/// A `POST` of the JSON `body` to `target`, with its length.
pub fn post_request(target: &str, body: &str) -> String {
    format!(
        "POST {target} HTTP/1.1\r\nHost: herald.test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Opens a stream on `client` and checks it went out on herald's own path.
pub async fn expect_lean_stream(client: &mut RawClient, user: &str) {
    client.send(&get_request(&format!("/events/{user}"))).await;
    let head = client.read_through("\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\ntransfer-encoding: chunked\r\nconnection: close\r\n"),
        "not herald's stream path: {head}"
    );
    client.read_through("event: connected\n").await;
}

/// Joins the chunks of a `Transfer-Encoding: chunked` body.
pub fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("hex chunk size");
        raw = &raw[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}
