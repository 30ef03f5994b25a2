//! `herald` commands other than a server that keeps serving, each wait with a timeout:
//! [`Herald`] (`publish`, `update`, `subscribe` and the rest, read line by line), [`run_herald`]
//! to completion, and [`run_serve`], a `serve` expected to refuse and exit by itself.

use std::process::{ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::WAIT;
use super::process::herald_command;

/// Runs `herald ARGS` to completion (killed after [`WAIT`]) with no `HERALD_*` from the test's
/// environment.
pub async fn run_herald(args: &[&str]) -> Output {
    let mut command = Command::from(herald_command(&[]));
    command.args(args).stdin(Stdio::null()).kill_on_drop(true);
    timeout(WAIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("herald {args:?} did not finish in time"))
        .expect("herald runs")
}

/// `herald ARGS` as a child process whose output is read line by line, each read with a timeout.
pub struct Herald {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: JoinHandle<String>,
}

/// What a finished `herald` command left behind.
pub struct Finished {
    pub status: ExitStatus,
    /// Its lines, in order.
    pub stdout: Vec<String>,
    pub stderr: String,
}

impl Herald {
    /// Starts `herald ARGS` with no `PORT` or `HERALD_*` from the test's environment.
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::from(herald_command(&[]))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("herald starts");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut stderr = child.stderr.take().expect("piped stderr");
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// Runs `herald ARGS` to completion within [`WAIT`].
    pub async fn run(args: &[&str]) -> Finished {
        let output = run_herald(args).await;
        Finished {
            status: output.status,
            stdout: String::from_utf8(output.stdout)
                .expect("utf-8 stdout")
                .lines()
                .map(str::to_owned)
                .collect(),
            stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
        }
    }

    /// The next stdout line within `wait`; `None` once stdout is closed.
    pub async fn next_line(&mut self, wait: Duration) -> Option<String> {
        timeout(wait, self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("herald printed nothing within {wait:?}"))
            .expect("stdout readable")
    }

    /// The next printed event, parsed.
    pub async fn next_event(&mut self, wait: Duration) -> Value {
        let line = self
            .next_line(wait)
            .await
            .expect("subscribe ended before the next event");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON line: {line:?}"))
    }

    /// Reads the `connected` line every stream opens with.
    pub async fn expect_connected(&mut self, wait: Duration) {
        let connected = self.next_event(wait).await;
        assert_eq!(connected["event"], "connected", "{connected}");
        assert!(
            connected.get("id").is_none(),
            "connected has no id: {connected}"
        );
    }

    pub async fn wait_exit(&mut self, wait: Duration) -> ExitStatus {
        timeout(wait, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("herald did not exit within {wait:?}"))
            .expect("exit status")
    }

    /// Everything written to stderr, once the child has closed it.
    pub async fn stderr(self) -> String {
        timeout(WAIT, self.stderr)
            .await
            .expect("stderr closed in time")
            .expect("stderr reader did not panic")
    }
}

impl Finished {
    /// The one JSON line a successful client command (`publish`, `archive`, ...) prints.
    pub fn printed_json(&self) -> Value {
        assert!(self.status.success(), "herald failed: {}", self.stderr);
        assert_eq!(self.stdout.len(), 1, "exactly one line: {:?}", self.stdout);
        serde_json::from_str(&self.stdout[0]).expect("stdout is JSON")
    }

    /// Asserts the command failed with one line on stderr that contains every one of `words`.
    pub fn assert_failed_saying(&self, words: &[&str]) {
        self.assert_failed_quietly();
        assert_one_line_saying(&self.stderr, words);
    }

    /// Asserts the command failed with exactly `line` (and its newline) on stderr and nothing
    /// on stdout.
    pub fn assert_failed_with(&self, line: &str) {
        self.assert_failed_quietly();
        assert_eq!(self.stderr, format!("{line}\n"));
    }

    /// Asserts the command failed and printed nothing on stdout.
    fn assert_failed_quietly(&self) {
        assert!(
            !self.status.success(),
            "herald succeeded: {:?}",
            self.stdout
        );
        assert!(
            self.stdout.is_empty(),
            "nothing on stdout: {:?}",
            self.stdout
        );
    }

    /// Asserts clap refused the arguments (exit status 2) with exactly `line` on stderr.
    pub fn assert_usage_error(&self, line: &str) {
        self.assert_failed_with(line);
        assert_eq!(self.status.code(), Some(2), "a usage error exits 2");
    }
}

/// The one line a client command prints when the server refuses: what the server answers
/// `request`, as `herald: server answered STATUS: ERROR`.
pub async fn refusal_line(request: reqwest::RequestBuilder) -> String {
    let (status, body) = super::read_json(super::send(request).await).await;
    assert!(!status.is_success(), "the server accepted: {body}");
    let error = body["error"].as_str().expect("an {\"error\"} body");
    format!("herald: server answered {status}: {error}")
}

/// The titles of printed events, in order.
pub fn printed_titles(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|event| event["data"]["title"].as_str().unwrap_or_default())
        .collect()
}

/// Asserts every printed event has an id and that no id repeats.
pub fn assert_distinct_ids(events: &[Value]) {
    let ids: Vec<&str> = events
        .iter()
        .map(|event| event["id"].as_str().expect("an event with an id"))
        .collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "duplicate ids: {ids:?}");
}

/// A `herald serve` that ran to its end.
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// From the start to the exit.
    took: Duration,
}

/// Runs `herald serve --data-dir DIR ARGS...` with `envs`, expecting it to exit by itself
/// within [`WAIT`]; a process still running then is killed and the test fails.
pub fn run_serve(args: &[&str], envs: &[(&str, &str)]) -> Exited {
    let data = TempDir::new().expect("temp dir");
    let started = Instant::now();
    let mut child = herald_command(envs)
        .args(["serve", "--data-dir"])
        .arg(data.path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("herald starts");
    let read_all = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read_all(Box::new(child.stderr.take().expect("stderr")));
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > WAIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("herald serve {args:?} {envs:?} was still running after {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Exited {
        status,
        took: started.elapsed(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

impl Exited {
    /// Asserts a quick non-zero exit with nothing on stdout and one line on stderr that
    /// contains each of `words`.
    pub fn assert_refused_saying(&self, words: &[&str]) {
        assert!(!self.status.success(), "herald started: {:?}", self.stdout);
        assert_eq!(self.stdout, "", "nothing served, nothing printed");
        assert!(
            self.took < Duration::from_secs(5),
            "refused only after {:?}",
            self.took
        );
        assert_one_line_saying(&self.stderr, words);
    }
}

/// `stderr` is one line, and it contains each of `words`.
fn assert_one_line_saying(stderr: &str, words: &[&str]) {
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    for word in words {
        assert!(stderr.contains(word), "{word:?} missing from {stderr:?}");
    }
}
