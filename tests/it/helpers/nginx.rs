//! [`Nginx`]: the real nginx, as a child process of the test, running `deploy/nginx/herald.conf`
//! in front of a herald on loopback. The file is used as shipped but for the values a test
//! must choose (listen address, certificate, key, access log, herald's address), each swapped
//! where it appears once. Without nginx the tests that need it skip, saying so, unless
//! `HERALD_REQUIRE_DEPLOY_TOOLS=1`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::WAIT;
use super::process::free_port;
use super::tls::SelfSigned;

/// The configuration under test, from the repository.
const HERALD_CONF: &str = include_str!("../../../deploy/nginx/herald.conf");

/// The nginx binary, or `None` (and a line saying the test is skipped) when there is none;
/// with `HERALD_REQUIRE_DEPLOY_TOOLS=1` its absence fails the test instead.
pub fn binary() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"));
    let found = candidates.into_iter().find(|path| path.is_file());
    if found.is_none() {
        assert!(
            std::env::var("HERALD_REQUIRE_DEPLOY_TOOLS").as_deref() != Ok("1"),
            "HERALD_REQUIRE_DEPLOY_TOOLS=1 but nginx is not installed"
        );
        eprintln!(
            "skipping: nginx is not installed (apt-get install nginx-light; set \
             HERALD_REQUIRE_DEPLOY_TOOLS=1 to fail)"
        );
    }
    found
}

/// nginx serving `deploy/nginx/herald.conf` on a free loopback port, killed on drop.
pub struct Nginx {
    child: Child,
    /// nginx's prefix: the configuration, the certificate's trust, logs and temporary files.
    dir: TempDir,
    pub addr: SocketAddr,
}

impl Nginx {
    /// Checks the configuration with `nginx -t`, then starts nginx in front of the herald
    /// listening on `herald`, serving TLS with `certificate`, and waits until it accepts
    /// connections.
    pub fn start(binary: &Path, herald: SocketAddr, certificate: &SelfSigned) -> Self {
        let dir = TempDir::new().expect("temp dir");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = dir.path().join("access.log");
        let conf = swap_once(
            HERALD_CONF,
            &[
                ("listen 443 ssl http2;", format!("listen {addr} ssl http2;")),
                (
                    "ssl_certificate     /etc/ssl/notify.example.com.pem;",
                    format!("ssl_certificate {};", certificate.cert.display()),
                ),
                (
                    "ssl_certificate_key /etc/ssl/notify.example.com.key;",
                    format!("ssl_certificate_key {};", certificate.key.display()),
                ),
                (
                    "access_log /var/log/nginx/herald.log herald_noquery;",
                    format!("access_log {} herald_noquery;", log.display()),
                ),
                ("server 127.0.0.1:3000;", format!("server {herald};")),
            ],
        );
        std::fs::write(dir.path().join("herald.conf"), conf).expect("herald.conf written");
        std::fs::write(dir.path().join("nginx.conf"), wrapper(dir.path())).expect("nginx.conf");

        let checked = nginx(binary, dir.path())
            .arg("-t")
            .output()
            .expect("nginx -t runs");
        assert_checked(&checked);

        let child = nginx(binary, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let nginx = Self { child, dir, addr };
        nginx.wait_until_listening();
        nginx
    }

    fn wait_until_listening(&self) {
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(self.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {} within {WAIT:?}:\n{}",
                self.addr,
                self.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The access log as written so far (`herald_noquery` lines).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// Polls the access log until a line contains `needle`, failing after [`WAIT`]; returns
    /// the whole log.
    pub async fn wait_for_access_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.access_log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "nginx never logged {needle:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // One process (master_process off), so killing it by its id leaves nothing behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nginx` with its prefix, configuration and error log in `dir`, in the foreground as one
/// process, ended with its parent should the test die first.
fn nginx(binary: &Path, dir: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("error.log"))
        .args(["-g", "daemon off; master_process off;"]);
    // SAFETY: prctl is async-signal-safe; it only sets a flag on the child.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    command
}

/// The main configuration around `herald.conf`: as nginx's own would be, with everything
/// that writes kept in `dir`. Its http {} block compresses what it may, as Debian's does, so
/// the stream's `gzip off` is put to the test.
fn wrapper(dir: &Path) -> String {
    let dir = dir.display();
    format!(
        "pid {dir}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    gzip on;
    gzip_min_length 1;
    gzip_types text/event-stream application/json;
    include {dir}/herald.conf;
}}
"
    )
}

/// `text` with each `(from, to)` swapped, failing the test unless `from` appears exactly once
/// (so a changed `herald.conf` fails here rather than testing something else).
fn swap_once(text: &str, swaps: &[(&str, String)]) -> String {
    let mut text = text.to_owned();
    for (from, to) in swaps {
        assert_eq!(
            text.matches(from).count(),
            1,
            "deploy/nginx/herald.conf should hold {from:?} once"
        );
        text = text.replacen(from, to, 1);
    }
    text
}

fn assert_checked(output: &Output) {
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success()
            && said.contains("syntax is ok")
            && said.contains("test is successful"),
        "nginx -t refused the configuration ({}):\n{said}",
        output.status
    );
}
