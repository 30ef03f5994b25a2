//! `herald serve`'s flags, each also read from `HERALD_<FLAG>` (and `PORT`), validated once
//! into [`Settings`] with messages that name the flag at fault.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use std::num::NonZeroU32;
use std::sync::Arc;

use crate::auth::{AuthSettings, PublishKeys, TokenVerifier};
use crate::sse::outbox::QueueBounds;
use crate::store::RedisSettings;
use crate::store::{Retention, SyncMode};

/// The listen address when neither `--listen` nor `PORT` says otherwise.
pub const DEFAULT_PORT: u16 = 3000;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to bind; port 0 picks a free one [default: 127.0.0.1:3000, or 127.0.0.1:$PORT]
    #[arg(long, env = "HERALD_LISTEN", value_name = "ADDR", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,

    /// Port to bind on 127.0.0.1 when --listen is not given (as in the original design)
    #[arg(long, env = "PORT", hide = true)]
    pub port: Option<u16>,

    /// Directory for the SQLite database (created if missing)
    #[arg(
        long,
        env = "HERALD_DATA_DIR",
        value_name = "DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,

    /// Cluster mode: the event log, history and fan-out live in this Redis (redis://HOST:PORT/DB);
    /// every node with the same URL and prefix is one cluster
    #[arg(long, env = "HERALD_REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key (several clusters can share one Redis)
    #[arg(
        long,
        env = "HERALD_REDIS_PREFIX",
        value_name = "PREFIX",
        default_value = "herald"
    )]
    pub redis_prefix: String,

    /// Run without auth on a non-loopback address
    #[arg(long, env = "HERALD_ALLOW_ANONYMOUS", value_parser = clap::builder::FalseyValueParser::new())]
    pub allow_anonymous: bool,

    /// HS256 secret for subscriber tokens
    #[arg(
        long,
        env = "HERALD_JWT_SECRET",
        value_name = "S",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,

    /// PEM public key (RS256, ES256 or EdDSA) for subscriber tokens issued elsewhere
    #[arg(
        long,
        env = "HERALD_JWT_PUBLIC_KEY",
        value_name = "FILE",
        conflicts_with = "jwt_secret"
    )]
    pub jwt_public_key: Option<PathBuf>,

    /// A bearer key allowed to publish, broadcast and read any history; repeatable or
    /// comma-separated
    #[arg(
        long,
        env = "HERALD_PUBLISH_KEY",
        value_name = "K",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub publish_key: Vec<String>,

    /// Serve /metrics and /api/stats without a publish key
    #[arg(long, env = "HERALD_METRICS_PUBLIC", value_parser = clap::builder::FalseyValueParser::new())]
    pub metrics_public: bool,

    /// PEM certificate chain: serve HTTPS (HTTP/2 and HTTP/1.1)
    #[arg(
        long,
        env = "HERALD_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert
    #[arg(
        long,
        env = "HERALD_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Publishes per second one client address may make (e.g. 50 or 50/s); more get 429
    #[arg(long, env = "HERALD_PUBLISH_RATE", value_name = "N/s")]
    pub publish_rate: Option<String>,

    /// Seconds of silence after which a stream gets a `: heartbeat` comment
    #[arg(
        long,
        env = "HERALD_HEARTBEAT",
        value_name = "SECS",
        default_value_t = 30
    )]
    pub heartbeat: u64,

    /// The `retry:` value, in milliseconds, sent to clients
    #[arg(
        long,
        env = "HERALD_RETRY_MS",
        value_name = "MS",
        default_value_t = 3000
    )]
    pub retry_ms: u64,

    /// How long events stay replayable (e.g. 90s, 30m, 24h, 7d)
    #[arg(
        long,
        env = "HERALD_RETENTION_AGE",
        value_name = "DUR",
        default_value = "24h"
    )]
    pub retention_age: humantime::Duration,

    /// How many events stay replayable
    #[arg(
        long,
        env = "HERALD_RETENTION_EVENTS",
        value_name = "N",
        default_value_t = 1_000_000
    )]
    pub retention_events: u64,

    /// Stored notifications kept per user
    #[arg(
        long,
        env = "HERALD_HISTORY_LIMIT",
        value_name = "N",
        default_value_t = 1000
    )]
    pub history_limit: u64,

    /// SSE streams this node accepts (more get 503 with Retry-After)
    #[arg(
        long,
        env = "HERALD_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = 10_000
    )]
    pub max_connections: usize,

    /// SSE streams one user may hold on this node (more get 429)
    #[arg(
        long,
        env = "HERALD_MAX_CONNECTIONS_PER_USER",
        value_name = "N",
        default_value_t = 32
    )]
    pub max_connections_per_user: usize,

    /// Origins allowed to call the API from a browser; repeatable or comma-separated; `*` for
    /// any origin without credentials
    #[arg(
        long,
        env = "HERALD_CORS_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub cors_origin: Vec<String>,

    /// Seconds to drain on SIGTERM/SIGINT before exiting
    #[arg(
        long,
        env = "HERALD_SHUTDOWN_TIMEOUT",
        value_name = "SECS",
        default_value_t = 10
    )]
    pub shutdown_timeout: u64,

    /// Events one stream may have waiting before it is closed as a slow reader
    #[arg(
        long,
        env = "HERALD_MAX_QUEUED_EVENTS",
        value_name = "N",
        default_value_t = 1024
    )]
    pub max_queued_events: usize,

    /// Bytes one stream may have waiting before it is closed as a slow reader
    #[arg(
        long,
        env = "HERALD_MAX_QUEUED_BYTES",
        value_name = "BYTES",
        default_value_t = 1 << 20
    )]
    pub max_queued_bytes: usize,

    /// `full` fsyncs every commit (survives power loss); `normal` survives a crash of herald
    /// but not of the machine
    #[arg(long, env = "HERALD_SYNC", value_enum, default_value = "full")]
    pub sync: SyncMode,
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Cluster mode; `None` for the embedded SQLite store in `data_dir`.
    pub redis: Option<RedisSettings>,
    pub allow_anonymous: bool,
    pub auth: AuthSettings,
    pub tls: Option<TlsFiles>,
    /// Publishes per second per client address; `None` for no limit.
    pub publish_rate: Option<NonZeroU32>,
    pub heartbeat: Duration,
    pub retry_ms: u64,
    pub retention: Retention,
    pub max_streams: usize,
    pub max_streams_per_user: usize,
    pub queue: QueueBounds,
    pub cors_origins: CorsOrigins,
    pub shutdown_timeout: Duration,
    pub sync: SyncMode,
    /// How often retention sweeps the log by age (SPEC: at least once a minute).
    pub sweep_every: Duration,
    /// Settings that work but deserve a word in the log.
    pub warnings: Vec<String>,
}

/// The certificate and key files for HTTPS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Which browser origins may call the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: any origin, never with credentials.
    Any,
    /// These origins, with credentials.
    Listed(Vec<String>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--{flag}: {problem}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub problem: String,
}

fn invalid(flag: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        problem: problem.into(),
    }
}

impl ServeArgs {
    pub fn into_settings(self) -> Result<Settings, ConfigError> {
        let listen = self.listen.unwrap_or_else(|| {
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                self.port.unwrap_or(DEFAULT_PORT),
            )
        });
        let at_least_one = |flag, value: u64| {
            if value == 0 {
                Err(invalid(flag, "must be at least 1"))
            } else {
                Ok(value)
            }
        };
        let heartbeat = at_least_one("heartbeat", self.heartbeat)?;
        at_least_one("retention-events", self.retention_events)?;
        at_least_one("history-limit", self.history_limit)?;
        at_least_one("max-connections", self.max_connections as u64)?;
        at_least_one(
            "max-connections-per-user",
            self.max_connections_per_user as u64,
        )?;
        at_least_one("shutdown-timeout", self.shutdown_timeout)?;
        at_least_one("max-queued-events", self.max_queued_events as u64)?;
        if self.max_queued_bytes < 64 * 1024 {
            return Err(invalid(
                "max-queued-bytes",
                "must be at least 65536 (one largest event)",
            ));
        }
        let mut warnings = Vec::new();
        if self
            .jwt_secret
            .as_ref()
            .is_some_and(|s| !s.is_empty() && s.len() < 32)
        {
            warnings.push(
                "--jwt-secret is shorter than 32 bytes: tokens signed with it are easier to forge"
                    .to_owned(),
            );
        }
        if self.publish_key.iter().any(|k| k.trim().is_empty()) {
            return Err(invalid("publish-key", "must not be empty"));
        }
        let tokens = match (&self.jwt_secret, &self.jwt_public_key) {
            (Some(secret), _) if secret.is_empty() => {
                return Err(invalid("jwt-secret", "must not be empty"));
            }
            (Some(secret), _) => Some(Arc::new(TokenVerifier::hs256(secret.as_bytes()))),
            (None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|error| {
                    invalid(
                        "jwt-public-key",
                        format!("cannot read {}: {error}", path.display()),
                    )
                })?;
                Some(Arc::new(
                    TokenVerifier::from_public_key_pem(&pem)
                        .map_err(|problem| invalid("jwt-public-key", problem))?,
                ))
            }
            (None, None) => None,
        };
        let keys: Vec<&str> = self
            .publish_key
            .iter()
            .map(|k| k.trim())
            .filter(|k| !k.is_empty())
            .collect();
        let publish_keys = (!keys.is_empty()).then(|| Arc::new(PublishKeys::new(&keys)));
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => return Err(invalid("tls-cert", "--tls-cert and --tls-key go together")),
        };
        let publish_rate = self.publish_rate.as_deref().map(parse_rate).transpose()?;
        let redis = match self.redis_url {
            None => None,
            Some(url) => {
                let parsed = url::Url::parse(&url)
                    .map_err(|error| invalid("redis-url", format!("{url:?}: {error}")))?;
                if !matches!(parsed.scheme(), "redis" | "rediss" | "redis+unix" | "unix") {
                    return Err(invalid("redis-url", "expected redis://HOST:PORT[/DB]"));
                }
                let prefix = self.redis_prefix.trim().to_owned();
                if prefix.is_empty() || prefix.contains(char::is_whitespace) {
                    return Err(invalid("redis-prefix", "must be non-empty, without spaces"));
                }
                Some(RedisSettings { url, prefix })
            }
        };
        let retention_age: Duration = self.retention_age.into();
        if retention_age < Duration::from_secs(1) {
            return Err(invalid("retention-age", "must be at least 1s"));
        }
        Ok(Settings {
            listen,
            data_dir: self.data_dir,
            redis,
            allow_anonymous: self.allow_anonymous,
            auth: AuthSettings {
                tokens,
                publish_keys,
                metrics_public: self.metrics_public,
            },
            tls,
            publish_rate,
            heartbeat: Duration::from_secs(heartbeat),
            retry_ms: self.retry_ms,
            retention: Retention {
                max_age: retention_age,
                max_events: self.retention_events,
                history_per_user: self.history_limit,
                idempotency_window: Duration::from_secs(24 * 3600),
            },
            max_streams: self.max_connections,
            max_streams_per_user: self.max_connections_per_user,
            queue: QueueBounds {
                max_frames: self.max_queued_events,
                max_bytes: self.max_queued_bytes,
            },
            cors_origins: parse_cors(&self.cors_origin)?,
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout),
            sync: self.sync,
            sweep_every: Duration::from_secs(30),
            warnings,
        })
    }
}

/// `IP:PORT`, or `HOST:PORT` resolved now (e.g. `localhost:3000`).
fn parse_listen(raw: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(address) = raw.parse() {
        return Ok(address);
    }
    raw.to_socket_addrs()
        .map_err(|error| format!("{raw:?} is not an address like 127.0.0.1:3000 ({error})"))?
        .next()
        .ok_or_else(|| format!("{raw:?} resolves to no address"))
}

/// `50`, `50/s` or `50/sec`: a whole number of publishes per second, at least 1.
fn parse_rate(raw: &str) -> Result<NonZeroU32, ConfigError> {
    let number = raw
        .trim()
        .trim_end_matches("/sec")
        .trim_end_matches("/s")
        .trim();
    number
        .parse::<NonZeroU32>()
        .map_err(|_| invalid("publish-rate", format!("{raw:?} is not a rate like 50/s")))
}

fn parse_cors(origins: &[String]) -> Result<CorsOrigins, ConfigError> {
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() || origins == ["*"] {
        return Ok(CorsOrigins::Any);
    }
    if origins.contains(&"*") {
        return Err(invalid(
            "cors-origin",
            "`*` cannot be combined with listed origins (credentials are never sent to `*`)",
        ));
    }
    for origin in &origins {
        let url = url::Url::parse(origin)
            .map_err(|_| invalid("cors-origin", format!("{origin:?} is not an origin")))?;
        let is_origin = matches!(url.scheme(), "http" | "https")
            && url.has_host()
            && url.path() == "/"
            && !origin.ends_with('/')
            && url.query().is_none();
        if !is_origin {
            return Err(invalid(
                "cors-origin",
                format!("{origin:?} is not an origin like https://app.example.com"),
            ));
        }
    }
    Ok(CorsOrigins::Listed(
        origins.into_iter().map(str::to_owned).collect(),
    ))
}

impl Settings {
    /// Defaults for a listener on `listen` storing in `data_dir` (used by tests and embedders).
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            args: ServeArgs,
        }
        let mut args = Defaults::parse_from(["herald"]).args;
        args.listen = Some(listen);
        args.data_dir = data_dir;
        args.into_settings().expect("the defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn settings(argv: &[&str]) -> Result<Settings, ConfigError> {
        let mut full = vec!["herald"];
        full.extend_from_slice(argv);
        Cli::try_parse_from(full)
            .expect("parses")
            .args
            .into_settings()
    }

    #[test]
    fn defaults_match_the_spec() {
        let s = settings(&["--listen", "127.0.0.1:3000"]).expect("valid");
        assert_eq!(s.heartbeat, Duration::from_secs(30));
        assert_eq!(s.retry_ms, 3000);
        assert_eq!(s.retention.max_age, Duration::from_secs(24 * 3600));
        assert_eq!(s.retention.max_events, 1_000_000);
        assert_eq!(s.retention.history_per_user, 1000);
        assert_eq!((s.max_streams, s.max_streams_per_user), (10_000, 32));
        assert_eq!(s.cors_origins, CorsOrigins::Any);
        assert_eq!(s.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(s.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn invalid_values_name_their_flag() {
        assert_eq!(
            settings(&["--heartbeat", "0"]).unwrap_err().flag,
            "heartbeat"
        );
        assert_eq!(
            settings(&["--retention-age", "0s"]).unwrap_err().flag,
            "retention-age"
        );
        assert_eq!(
            settings(&["--cors-origin", "*", "--cors-origin", "https://a.example"])
                .unwrap_err()
                .flag,
            "cors-origin"
        );
        assert_eq!(
            settings(&["--cors-origin", "https://a.example/path"])
                .unwrap_err()
                .flag,
            "cors-origin"
        );
    }

    #[test]
    fn cors_origins_are_repeatable_and_comma_separated() {
        let s = settings(&[
            "--cors-origin",
            "https://a.example,https://b.example",
            "--cors-origin",
            "http://localhost:5173",
        ])
        .expect("valid");
        assert_eq!(
            s.cors_origins,
            CorsOrigins::Listed(vec![
                "https://a.example".into(),
                "https://b.example".into(),
                "http://localhost:5173".into()
            ])
        );
    }

    #[test]
    fn auth_flags_are_validated() {
        assert_eq!(
            settings(&["--jwt-secret", ""]).unwrap_err().flag,
            "jwt-secret"
        );
        assert_eq!(
            settings(&["--jwt-public-key", "/nonexistent.pem"])
                .unwrap_err()
                .flag,
            "jwt-public-key"
        );
        let s = settings(&[
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef",
            "--publish-key",
            "k1-0123456789abcdef,k2-0123456789abcdef",
            "--publish-rate",
            "20/s",
        ])
        .expect("valid");
        assert!(s.auth.tokens.is_some());
        assert!(
            s.auth
                .publish_keys
                .as_ref()
                .unwrap()
                .matches("k2-0123456789abcdef")
        );
        assert_eq!(s.publish_rate.map(NonZeroU32::get), Some(20));
        assert_eq!(
            settings(&["--publish-rate", "fast"]).unwrap_err().flag,
            "publish-rate"
        );
    }

    #[test]
    fn durations_read_human_units() {
        let s = settings(&["--retention-age", "90s"]).expect("valid");
        assert_eq!(s.retention.max_age, Duration::from_secs(90));
    }
}
