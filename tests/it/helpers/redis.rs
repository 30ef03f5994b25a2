//! Real `redis-server` processes for the tests, each on a free loopback port with its own
//! directory, and the choice of backend for the whole run: `HERALD_TEST_BACKEND=redis` runs
//! every behavioural test against Redis instead of SQLite (one suite, two stores).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::process::free_port;

/// Which store the in-process and child-process servers of this run use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Redis { url: String },
}

/// The backend of this run, decided once from `HERALD_TEST_BACKEND`.
pub fn backend() -> &'static Backend {
    static BACKEND: OnceLock<Backend> = OnceLock::new();
    BACKEND.get_or_init(|| match std::env::var("HERALD_TEST_BACKEND").as_deref() {
        Ok("redis") => Backend::Redis {
            url: shared().url(),
        },
        _ => Backend::Sqlite,
    })
}

/// A Redis prefix unique to `seed` (a data directory, say), so restarts find their data and
/// tests never see each other's.
pub fn prefix_for(seed: &Path) -> String {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(seed);
    format!("t{hash:016x}")
}

/// Whether `redis-server` can be run here; with `HERALD_REQUIRE_REDIS=1` its absence fails the
/// test instead of skipping it.
pub fn available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found && std::env::var("HERALD_REQUIRE_REDIS").as_deref() == Ok("1") {
        panic!("HERALD_REQUIRE_REDIS=1 but redis-server is not installed");
    }
    if !found {
        eprintln!("skipping: redis-server is not installed (set HERALD_REQUIRE_REDIS=1 to fail)");
    }
    found
}

/// One `redis-server` for the whole test process, started on first use. It is started from a
/// thread that lives as long as the process, with a parent-death signal, so it ends with us.
pub fn shared() -> &'static RedisServer {
    static SHARED: OnceLock<RedisServer> = OnceLock::new();
    SHARED.get_or_init(|| {
        assert!(available(), "the Redis backend needs redis-server");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let dir = tempfile::TempDir::new().expect("temp dir").keep();
            let server = RedisServer::start_in(&dir, &[]);
            tx.send(server).expect("send");
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("redis started")
    })
}

/// A `redis-server` child process.
pub struct RedisServer {
    child: Option<Child>,
    /// Removed on drop when this server made it.
    owned_dir: Option<tempfile::TempDir>,
    pub port: u16,
    pub dir: PathBuf,
    args: Vec<String>,
}

impl RedisServer {
    /// Starts one in a fresh directory with `extra` arguments (e.g. `--appendonly yes`).
    pub fn start(extra: &[&str]) -> Self {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let mut server = Self::start_in(dir.path(), extra);
        server.owned_dir = Some(dir);
        server
    }

    pub fn start_in(dir: &Path, extra: &[&str]) -> Self {
        let port = free_port();
        let mut server = Self {
            child: None,
            owned_dir: None,
            port,
            dir: dir.to_path_buf(),
            args: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.run();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn run(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--dir"])
            .arg(&self.dir)
            .args(["--logfile", "redis.log"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; it only sets a flag on the child.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        self.child = Some(command.spawn().expect("redis-server starts"));
        self.wait_until_ready();
    }

    fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it hard (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
