//! [`TestApp`]: a herald server inside the test process, on port 0 with a fresh data directory
//! (and, on the Redis backend, a key prefix of its own). It dereferences to its [`Api`].

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use herald::Settings;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::api::Api;
use super::redis::{Backend, backend, prefix_for};

/// A herald server running inside the test process.
pub struct TestApp {
    /// Requests to this server: `app.publish(..)` is `app.api.publish(..)`.
    pub api: Api,
    pub addr: SocketAddr,
    /// Kept for restarts; deleted when the last owner drops.
    pub data_dir: Arc<TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestApp {
    /// A server with default settings on a fresh data directory.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// A server whose settings `configure` may change first.
    pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> Self {
        let data_dir = Arc::new(TempDir::new().expect("temp dir"));
        Self::spawn_in(data_dir, "127.0.0.1:0".parse().expect("addr"), configure).await
    }

    /// A server on `data_dir`, bound to `addr`.
    pub async fn spawn_in(
        data_dir: Arc<TempDir>,
        addr: SocketAddr,
        configure: impl FnOnce(&mut Settings),
    ) -> Self {
        init_test_log();
        let mut settings = Settings::new(addr, data_dir.path().to_path_buf());
        if let Backend::Redis { url } = backend() {
            settings.redis = Some(herald::store::RedisSettings {
                url: url.clone(),
                prefix: prefix_for(data_dir.path()),
            });
        }
        configure(&mut settings);
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            herald::run(listener, settings, async {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
        });
        Self {
            api: Api::new(format!("http://{addr}")),
            addr,
            data_dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Drains and stops the server, waiting until it has finished.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("server stops in time")
                .expect("server task did not panic");
        }
    }

    /// Stops this server and starts another on the same data directory (and a new port).
    pub async fn restart(mut self, configure: impl FnOnce(&mut Settings)) -> Self {
        self.shutdown().await;
        Self::spawn_in(
            self.data_dir.clone(),
            "127.0.0.1:0".parse().unwrap(),
            configure,
        )
        .await
    }
}

impl Deref for TestApp {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// With `TEST_LOG` set, the server's tracing (`herald=debug`) goes to the test's output.
fn init_test_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("herald=debug"))
            .with_test_writer()
            .try_init();
    }
}
