//! [`ServerProcess`]: the real `herald serve` binary as a child process, found by the address it
//! prints first and reached through its [`Api`] (it dereferences to it); and
//! [`herald_command`], the binary with an environment the test controls.

use std::io::{BufRead, BufReader};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use reqwest::StatusCode;

use super::WAIT;
use super::api::Api;
use super::redis::{Backend, backend, prefix_for};

/// The `herald` binary running as a child process.
pub struct ServerProcess {
    pub child: Child,
    /// Requests to this server, at the address it printed.
    pub api: Api,
    /// The child's stderr; removed on drop.
    pub stderr_log: PathBuf,
}

impl ServerProcess {
    /// Starts `herald serve --listen 127.0.0.1:0 --data-dir DIR EXTRA...` and waits for its
    /// `listening on` line.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_on("127.0.0.1:0", data_dir, extra)
    }

    pub fn start_on(listen: &str, data_dir: &Path, extra: &[&str]) -> Self {
        let mut args = vec!["--listen", listen];
        args.extend_from_slice(extra);
        Self::start_with(data_dir, &args, &[])
    }

    /// Starts `herald serve --data-dir DIR ARGS...` with `envs` set and waits for its
    /// `listening on` line. Nothing else is passed: without `--listen` in `args` or `envs`, the
    /// address comes from `PORT` or the default. `PORT` and `HERALD_*` (but `HERALD_LOG`) are
    /// not inherited from the test's environment.
    pub fn start_with(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::spawn(herald_command(envs), data_dir, args)
    }

    /// [`ServerProcess::start`] in a process that may open at most `files` files.
    pub fn start_with_file_limit(data_dir: &Path, files: u32, extra: &[&str]) -> Self {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n {files} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_herald"));
        clean_environment(&mut command, &[]);
        let mut args = vec!["--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        Self::spawn(command, data_dir, &args)
    }

    /// Runs `command serve --data-dir DIR ARGS...` and waits for its `listening on` line.
    fn spawn(mut command: Command, data_dir: &Path, args: &[&str]) -> Self {
        let stderr_log = data_dir.with_extension(format!("{}.log", std::process::id()));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_log)
            .expect("log file");
        command
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(args);
        if let Backend::Redis { url } = backend() {
            if !args.contains(&"--redis-url") {
                command
                    .args(["--redis-url", url, "--redis-prefix"])
                    .arg(prefix_for(data_dir));
            }
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("herald starts");
        let stdout = child.stdout.take().expect("stdout");
        let (line_tx, line_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = line_tx.send(line);
            }
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let line = line_rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("herald did not print its address; see {stderr_log:?}"));
        let url = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"));
        Self {
            child,
            api: Api::new(url),
            stderr_log,
        }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, signal: Signal) {
        nix::sys::signal::kill(self.pid(), signal).expect("signal sent");
    }

    /// Waits for the process to exit, failing the test after `wait`.
    pub fn wait_exit(&mut self, wait: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "herald did not exit within {wait:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill_hard(&mut self) {
        self.signal(Signal::SIGKILL);
        self.wait_exit(WAIT);
    }

    /// Resident memory of the process, in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS line")
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Polls the server's log until it contains `needle`, failing after [`WAIT`].
    pub async fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.stderr();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "the log never showed {needle:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The port of the address the server printed.
    pub fn port(&self) -> u16 {
        let url = &self.api.url;
        let (_, port) = url
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("no port in {url}"));
        port.parse().unwrap_or_else(|_| panic!("bad port in {url}"))
    }

    /// Stops the server with SIGTERM and asserts a clean exit. Call it after the server has
    /// answered a request: a SIGTERM in the instant after `listening on` kills herald outright
    /// (see `shutdown::sigterm_right_after_the_listening_line_drains_and_exits_zero`).
    pub fn stop(mut self) {
        self.signal(Signal::SIGTERM);
        let status = self.wait_exit(WAIT);
        assert_eq!(status.code(), Some(0), "stderr: {}", self.stderr());
    }
}

impl Deref for ServerProcess {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.stderr_log);
    }
}

/// The `herald` binary with `envs` set and none of the test's own `PORT` or `HERALD_*`
/// variables (but `HERALD_LOG`), so what a test passes is all the binary sees.
pub fn herald_command(envs: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    clean_environment(&mut command, envs);
    command
}

/// `envs`, and none of the test's own `PORT` or `HERALD_*` variables (but `HERALD_LOG`).
fn clean_environment(command: &mut Command, envs: &[(&str, &str)]) {
    command.env_remove("PORT");
    for (name, _) in std::env::vars_os() {
        let inherited = name.to_string_lossy();
        if inherited.starts_with("HERALD_") && inherited != "HERALD_LOG" {
            command.env_remove(&name);
        }
    }
    command.envs(envs.iter().copied());
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// Asserts `/healthz` answers `200` on `port` of the loopback address.
pub async fn assert_healthy(port: u16) {
    let response = Api::new(format!("http://127.0.0.1:{port}"))
        .get("/healthz")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}
