//! `herald serve`'s flags, each also read from `HERALD_<FLAG>` (and `PORT`) and from the
//! configuration file (`file`), validated once into [`Settings`] with messages that name the
//! flag at fault.

pub mod file;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{AuthSettings, PublishKeys, TokenVerifier};
use crate::edge::Deadlines;
use crate::push::VapidKey;
use crate::push::endpoint::{DEFAULT_ALLOW, EndpointPolicy, HostPattern};
use crate::sse::outbox::QueueBounds;
use crate::store::push::PushWhen;
use crate::store::{RedisSettings, Retention, SyncMode};

/// The listen address when neither `--listen` nor `PORT` says otherwise.
pub const DEFAULT_PORT: u16 = 3000;

/// The defaults of `herald serve`, shared by its flags and by [`Settings::new`].
mod defaults {
    pub const HEARTBEAT_SECS: u64 = 30;
    pub const RETRY_MS: u64 = 3000;
    /// As the flag spells it; [`RETENTION_AGE_SECS`] is the same.
    pub const RETENTION_AGE: &str = "24h";
    pub const RETENTION_AGE_SECS: u64 = 24 * 3600;
    pub const RETENTION_EVENTS: u64 = 1_000_000;
    pub const HISTORY_LIMIT: u64 = 1000;
    pub const MAX_CONNECTIONS: usize = 10_000;
    pub const MAX_CONNECTIONS_PER_USER: usize = 32;
    /// Open connections beyond `--max-connections` by default: API calls and idle keep-alives.
    pub const OPEN_CONNECTIONS_HEADROOM: usize = 1024;
    pub const SHUTDOWN_TIMEOUT_SECS: u64 = 10;
    pub const MAX_QUEUED_EVENTS: usize = 1024;
    pub const MAX_QUEUED_BYTES: usize = 1 << 20;
    pub const PUSH_TTL: &str = "24h";
    pub const PUSH_SUBSCRIPTIONS_PER_USER: u32 = 10;
}

/// How long an `Idempotency-Key` is remembered (docs/protocol.md#publishing).
const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How often retention sweeps the log by age: at least once a minute.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// How often notifications past their expiry are deleted (open streams learn within this).
const EXPIRE_EVERY: Duration = Duration::from_secs(2);

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// TOML file of settings, one key per flag spelled as the flag (`data-dir = "..."`);
    /// flags and the environment take precedence over it
    #[arg(long, env = "HERALD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

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

    /// PEM P-256 private key (VAPID): with --vapid-subject, turns Web Push on. `herald vapid-key`
    /// makes one
    #[arg(
        long,
        env = "HERALD_VAPID_KEY",
        value_name = "FILE",
        requires = "vapid_subject"
    )]
    pub vapid_key: Option<PathBuf>,

    /// Who runs this server, for the push services: mailto:ADDRESS or an https:// URL
    #[arg(
        long,
        env = "HERALD_VAPID_SUBJECT",
        value_name = "URI",
        requires = "vapid_key"
    )]
    pub vapid_subject: Option<String>,

    /// When a user's notification is pushed: offline (no open stream on any node) or always
    #[arg(long, env = "HERALD_PUSH_WHEN", value_enum, default_value_t = PushWhen::Offline)]
    pub push_when: PushWhen,

    /// How long a push of a notification without an expiry is tried (e.g. 24h, 30m)
    #[arg(long, env = "HERALD_PUSH_TTL", value_name = "DURATION", default_value = defaults::PUSH_TTL)]
    pub push_ttl: humantime::Duration,

    /// Push subscriptions one user may hold; more get 409
    #[arg(
        long,
        env = "HERALD_PUSH_SUBSCRIPTIONS_PER_USER",
        value_name = "N",
        default_value_t = defaults::PUSH_SUBSCRIPTIONS_PER_USER
    )]
    pub push_subscriptions_per_user: u32,

    /// Push service hosts herald may contact: an exact host or *.SUFFIX; repeatable
    /// [default: *.googleapis.com, *.push.services.mozilla.com, *.push.apple.com,
    /// *.notify.windows.com]
    #[arg(
        long,
        env = "HERALD_PUSH_ENDPOINT_ALLOW",
        value_name = "HOST",
        value_delimiter = ','
    )]
    pub push_endpoint_allow: Vec<String>,

    /// Contact any push endpoint: http, any host, internal addresses. For tests and local
    /// development only
    #[arg(long, env = "HERALD_PUSH_INSECURE_ENDPOINTS", value_parser = clap::builder::FalseyValueParser::new())]
    pub push_insecure_endpoints: bool,

    /// Publishes per second one client address may make (e.g. 50 or 50/s); more get 429
    #[arg(long, env = "HERALD_PUBLISH_RATE", value_name = "N/s")]
    pub publish_rate: Option<String>,

    /// Seconds of silence after which a stream gets a `: heartbeat` comment
    #[arg(
        long,
        env = "HERALD_HEARTBEAT",
        value_name = "SECS",
        default_value_t = defaults::HEARTBEAT_SECS
    )]
    pub heartbeat: u64,

    /// The `retry:` value, in milliseconds, sent to clients
    #[arg(
        long,
        env = "HERALD_RETRY_MS",
        value_name = "MS",
        default_value_t = defaults::RETRY_MS
    )]
    pub retry_ms: u64,

    /// How long events stay replayable (e.g. 90s, 30m, 24h, 7d)
    #[arg(
        long,
        env = "HERALD_RETENTION_AGE",
        value_name = "DUR",
        default_value = defaults::RETENTION_AGE
    )]
    pub retention_age: humantime::Duration,

    /// How many events stay replayable
    #[arg(
        long,
        env = "HERALD_RETENTION_EVENTS",
        value_name = "N",
        default_value_t = defaults::RETENTION_EVENTS
    )]
    pub retention_events: u64,

    /// Stored notifications kept per user
    #[arg(
        long,
        env = "HERALD_HISTORY_LIMIT",
        value_name = "N",
        default_value_t = defaults::HISTORY_LIMIT
    )]
    pub history_limit: u64,

    /// SSE streams this node accepts (more get 503 with Retry-After)
    #[arg(
        long,
        env = "HERALD_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = defaults::MAX_CONNECTIONS
    )]
    pub max_connections: usize,

    /// SSE streams one user may hold on this node (more get 429)
    #[arg(
        long,
        env = "HERALD_MAX_CONNECTIONS_PER_USER",
        value_name = "N",
        default_value_t = defaults::MAX_CONNECTIONS_PER_USER
    )]
    pub max_connections_per_user: usize,

    /// TCP connections this node holds open at once, streams, API calls and idle keep-alives
    /// together; more are closed as they arrive [default: --max-connections + 1024]
    #[arg(long, env = "HERALD_MAX_OPEN_CONNECTIONS", value_name = "N")]
    pub max_open_connections: Option<usize>,

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
        default_value_t = defaults::SHUTDOWN_TIMEOUT_SECS
    )]
    pub shutdown_timeout: u64,

    /// Events one stream may have waiting before it is closed as a slow reader
    #[arg(
        long,
        env = "HERALD_MAX_QUEUED_EVENTS",
        value_name = "N",
        default_value_t = defaults::MAX_QUEUED_EVENTS
    )]
    pub max_queued_events: usize,

    /// Bytes one stream may have waiting before it is closed as a slow reader
    #[arg(
        long,
        env = "HERALD_MAX_QUEUED_BYTES",
        value_name = "BYTES",
        default_value_t = defaults::MAX_QUEUED_BYTES
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
    /// TCP connections held open at once; more are closed as they arrive.
    pub max_open_connections: usize,
    pub queue: QueueBounds,
    pub cors_origins: CorsOrigins,
    pub shutdown_timeout: Duration,
    pub sync: SyncMode,
    /// How often retention sweeps the log by age (at least once a minute).
    pub sweep_every: Duration,
    /// How often notifications past their expiry are deleted.
    pub expire_every: Duration,
    /// How long each part of a connection's life may take.
    pub deadlines: Deadlines,
    /// Web Push; `None` without `--vapid-key`.
    pub push: Option<PushSettings>,
    /// Settings that work but deserve a word in the log.
    pub warnings: Vec<String>,
}

/// Web Push: the key and subject herald signs its requests to push services with, and its
/// rules for when and where to push.
#[derive(Debug, Clone)]
pub struct PushSettings {
    pub key: Arc<VapidKey>,
    /// `mailto:...` or `https://...`, the VAPID `sub`.
    pub subject: String,
    pub when: PushWhen,
    /// How long a push of a notification without an expiry is tried.
    pub ttl: Duration,
    pub subscriptions_per_user: u32,
    pub endpoints: EndpointPolicy,
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
    /// Validates every flag; the first fault names its flag.
    pub fn into_settings(self) -> Result<Settings, ConfigError> {
        let listen = self.listen.unwrap_or_else(|| {
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                self.port.unwrap_or(DEFAULT_PORT),
            )
        });
        self.check_bounds()?;
        let mut settings = Settings::new(listen, self.data_dir.clone());
        settings.warnings = self.warnings();
        settings.auth = self.auth()?;
        settings.tls = self.tls_files()?;
        settings.redis = self.redis()?;
        settings.push = self.push()?;
        settings.publish_rate = self.publish_rate.as_deref().map(parse_rate).transpose()?;
        settings.cors_origins = parse_cors(&self.cors_origin)?;
        settings.allow_anonymous = self.allow_anonymous;
        settings.heartbeat = Duration::from_secs(self.heartbeat);
        settings.retry_ms = self.retry_ms;
        settings.retention.max_age = self.retention_age.into();
        settings.retention.max_events = self.retention_events;
        settings.retention.history_per_user = self.history_limit;
        settings.max_streams = self.max_connections;
        settings.max_streams_per_user = self.max_connections_per_user;
        settings.max_open_connections = self
            .max_open_connections
            .unwrap_or(self.max_connections + defaults::OPEN_CONNECTIONS_HEADROOM);
        settings.queue = QueueBounds {
            max_frames: self.max_queued_events,
            max_bytes: self.max_queued_bytes,
        };
        settings.shutdown_timeout = Duration::from_secs(self.shutdown_timeout);
        settings.sync = self.sync;
        Ok(settings)
    }

    /// Counts and durations that must not be zero, and the smallest queue.
    fn check_bounds(&self) -> Result<(), ConfigError> {
        let positive = [
            ("heartbeat", self.heartbeat),
            ("retention-events", self.retention_events),
            ("history-limit", self.history_limit),
            ("max-connections", self.max_connections as u64),
            (
                "max-connections-per-user",
                self.max_connections_per_user as u64,
            ),
            ("shutdown-timeout", self.shutdown_timeout),
            ("max-queued-events", self.max_queued_events as u64),
        ];
        if let Some((flag, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(invalid(flag, "must be at least 1"));
        }
        if self
            .max_open_connections
            .is_some_and(|open| open < self.max_connections)
        {
            return Err(invalid(
                "max-open-connections",
                "must be at least --max-connections (every stream is a connection)",
            ));
        }
        if self.max_queued_bytes < 64 * 1024 {
            return Err(invalid(
                "max-queued-bytes",
                "must be at least 65536 (one largest event)",
            ));
        }
        if Duration::from(self.retention_age) < Duration::from_secs(1) {
            return Err(invalid("retention-age", "must be at least 1s"));
        }
        Ok(())
    }

    fn warnings(&self) -> Vec<String> {
        let short_secret = self
            .jwt_secret
            .as_ref()
            .is_some_and(|s| !s.is_empty() && s.len() < 32);
        let short_secret = short_secret.then(|| {
            "--jwt-secret is shorter than 32 bytes: tokens signed with it are easier to forge"
                .to_owned()
        });
        let insecure_push = (self.push_insecure_endpoints && self.vapid_key.is_some()).then(|| {
            "--push-insecure-endpoints: pushes go to any endpoint a subscriber names, plain \
             http and internal addresses included; for tests and local development only"
                .to_owned()
        });
        short_secret.into_iter().chain(insecure_push).collect()
    }

    fn auth(&self) -> Result<AuthSettings, ConfigError> {
        if self.publish_key.iter().any(|k| k.trim().is_empty()) {
            return Err(invalid("publish-key", "must not be empty"));
        }
        let tokens = match (&self.jwt_secret, &self.jwt_public_key) {
            (Some(secret), _) if secret.is_empty() => {
                return Err(invalid("jwt-secret", "must not be empty"));
            }
            (Some(secret), _) => Some(Arc::new(TokenVerifier::hs256(secret.as_bytes()))),
            (None, Some(path)) => Some(Arc::new(read_public_key(path)?)),
            (None, None) => None,
        };
        let keys: Vec<&str> = self.publish_key.iter().map(|k| k.trim()).collect();
        Ok(AuthSettings {
            tokens,
            publish_keys: (!keys.is_empty()).then(|| Arc::new(PublishKeys::new(&keys))),
            metrics_public: self.metrics_public,
        })
    }

    fn tls_files(&self) -> Result<Option<TlsFiles>, ConfigError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (None, None) => Ok(None),
            _ => Err(invalid("tls-cert", "--tls-cert and --tls-key go together")),
        }
    }

    fn push(&self) -> Result<Option<PushSettings>, ConfigError> {
        let (path, subject) = match (&self.vapid_key, &self.vapid_subject) {
            (Some(path), Some(subject)) => (path, subject.trim()),
            (None, None) => return Ok(None),
            _ => {
                return Err(invalid(
                    "vapid-key",
                    "--vapid-key and --vapid-subject go together",
                ));
            }
        };
        check_vapid_subject(subject).map_err(|problem| invalid("vapid-subject", problem))?;
        let pem = std::fs::read(path).map_err(|error| {
            invalid(
                "vapid-key",
                format!("cannot read {}: {error}", path.display()),
            )
        })?;
        let key = VapidKey::from_pem(&pem)
            .map_err(|problem| invalid("vapid-key", format!("{}: {problem}", path.display())))?;
        let ttl = Duration::from(self.push_ttl);
        if ttl < Duration::from_secs(1) {
            return Err(invalid("push-ttl", "must be at least 1s"));
        }
        if self.push_subscriptions_per_user == 0 {
            return Err(invalid("push-subscriptions-per-user", "must be at least 1"));
        }
        let allow = if self.push_endpoint_allow.is_empty() {
            DEFAULT_ALLOW
                .iter()
                .map(|host| (*host).to_owned())
                .collect()
        } else {
            self.push_endpoint_allow.clone()
        };
        let allow = allow
            .iter()
            .map(|raw| HostPattern::parse(raw))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|problem| invalid("push-endpoint-allow", problem))?;
        Ok(Some(PushSettings {
            key: Arc::new(key),
            subject: subject.to_owned(),
            when: self.push_when,
            ttl,
            subscriptions_per_user: self.push_subscriptions_per_user,
            endpoints: EndpointPolicy::new(allow, self.push_insecure_endpoints),
        }))
    }

    fn redis(&self) -> Result<Option<RedisSettings>, ConfigError> {
        let Some(url) = &self.redis_url else {
            return Ok(None);
        };
        let parsed = url::Url::parse(url)
            .map_err(|error| invalid("redis-url", format!("{url:?}: {error}")))?;
        if !matches!(parsed.scheme(), "redis" | "rediss" | "redis+unix" | "unix") {
            return Err(invalid("redis-url", "expected redis://HOST:PORT[/DB]"));
        }
        let prefix = self.redis_prefix.trim().to_owned();
        if prefix.is_empty() || prefix.contains(char::is_whitespace) {
            return Err(invalid("redis-prefix", "must be non-empty, without spaces"));
        }
        Ok(Some(RedisSettings {
            url: url.clone(),
            prefix,
        }))
    }
}

fn read_public_key(path: &std::path::Path) -> Result<TokenVerifier, ConfigError> {
    let pem = std::fs::read(path).map_err(|error| {
        invalid(
            "jwt-public-key",
            format!("cannot read {}: {error}", path.display()),
        )
    })?;
    TokenVerifier::from_public_key_pem(&pem).map_err(|problem| invalid("jwt-public-key", problem))
}

/// A VAPID subject is how a push service reaches whoever runs the server (RFC 8292 §2.1).
fn check_vapid_subject(subject: &str) -> Result<(), String> {
    let expected = "expected mailto:ADDRESS or an https:// URL";
    if let Some(address) = subject.strip_prefix("mailto:") {
        let (local, domain) = address.split_once('@').unwrap_or_default();
        if local.is_empty() || domain.is_empty() || address.contains(char::is_whitespace) {
            return Err(format!("{subject:?}: {expected}"));
        }
        return Ok(());
    }
    match url::Url::parse(subject) {
        Ok(url) if url.scheme() == "https" && url.host().is_some() => Ok(()),
        _ => Err(format!("{subject:?}: {expected}")),
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
    /// The defaults of `herald serve` for a listener on `listen` storing in `data_dir`: for
    /// tests and embedders. Reads no environment and cannot fail.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            redis: None,
            allow_anonymous: false,
            auth: AuthSettings::default(),
            tls: None,
            publish_rate: None,
            heartbeat: Duration::from_secs(defaults::HEARTBEAT_SECS),
            retry_ms: defaults::RETRY_MS,
            retention: Retention {
                max_age: Duration::from_secs(defaults::RETENTION_AGE_SECS),
                max_events: defaults::RETENTION_EVENTS,
                history_per_user: defaults::HISTORY_LIMIT,
                idempotency_window: IDEMPOTENCY_WINDOW,
            },
            max_streams: defaults::MAX_CONNECTIONS,
            max_streams_per_user: defaults::MAX_CONNECTIONS_PER_USER,
            max_open_connections: defaults::MAX_CONNECTIONS + defaults::OPEN_CONNECTIONS_HEADROOM,
            queue: QueueBounds {
                max_frames: defaults::MAX_QUEUED_EVENTS,
                max_bytes: defaults::MAX_QUEUED_BYTES,
            },
            cors_origins: CorsOrigins::Any,
            shutdown_timeout: Duration::from_secs(defaults::SHUTDOWN_TIMEOUT_SECS),
            sync: SyncMode::Full,
            sweep_every: SWEEP_EVERY,
            expire_every: EXPIRE_EVERY,
            deadlines: Deadlines::default(),
            push: None,
            warnings: Vec::new(),
        }
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
    fn settings_new_holds_exactly_the_defaults_of_the_flags() {
        let address: SocketAddr = "127.0.0.1:3000".parse().unwrap();
        let parsed = settings(&["--listen", "127.0.0.1:3000"]).expect("valid");
        let built = Settings::new(address, PathBuf::from("./data"));
        assert_eq!(format!("{built:?}"), format!("{parsed:?}"));
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
    fn push_is_on_with_a_readable_p256_key_and_a_subject_a_push_service_can_use() {
        assert!(settings(&[]).unwrap().push.is_none());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vapid.pem");
        let key = VapidKey::generate().unwrap();
        std::fs::write(&path, key.to_pem().unwrap()).unwrap();
        let path = path.to_str().unwrap();
        for subject in ["mailto:ops@example.com", "https://example.com/contact"] {
            let push = settings(&["--vapid-key", path, "--vapid-subject", subject])
                .unwrap()
                .push
                .expect("push on");
            assert_eq!(
                (push.key.public_key(), push.subject.as_str()),
                (key.public_key(), subject)
            );
        }
        for subject in [
            "ops@example.com",
            "mailto:",
            "mailto:ops",
            "http://example.com",
            "https://",
        ] {
            let error = settings(&["--vapid-key", path, "--vapid-subject", subject]).unwrap_err();
            assert_eq!(error.flag, "vapid-subject", "{subject}: {error}");
        }
        let missing = dir.path().join("missing.pem");
        let error = settings(&[
            "--vapid-key",
            missing.to_str().unwrap(),
            "--vapid-subject",
            "mailto:ops@example.com",
        ])
        .unwrap_err();
        assert!(
            error.flag == "vapid-key" && error.problem.starts_with("cannot read"),
            "{error}"
        );
        std::fs::write(
            dir.path().join("cert.pem"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let cert = dir.path().join("cert.pem");
        let error = settings(&[
            "--vapid-key",
            cert.to_str().unwrap(),
            "--vapid-subject",
            "mailto:ops@example.com",
        ])
        .unwrap_err();
        assert!(
            error.flag == "vapid-key" && error.problem.contains("\"CERTIFICATE\""),
            "{error}"
        );
    }

    #[test]
    fn push_policy_flags_have_their_defaults_and_bad_values_name_their_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vapid.pem");
        std::fs::write(&path, VapidKey::generate().unwrap().to_pem().unwrap()).unwrap();
        let on = [
            "--vapid-key",
            path.to_str().unwrap(),
            "--vapid-subject",
            "mailto:a@b.c",
        ];
        let with = |extra: &[&str]| {
            let mut args = on.to_vec();
            args.extend_from_slice(extra);
            settings(&args)
        };
        let push = with(&[]).unwrap().push.unwrap();
        assert_eq!(push.when, PushWhen::Offline);
        assert_eq!(push.ttl, Duration::from_secs(24 * 3600));
        assert_eq!(push.subscriptions_per_user, 10);
        assert!(!push.endpoints.is_insecure());
        let fcm = url::Url::parse("https://fcm.googleapis.com/fcm/send/x").unwrap();
        assert_eq!(push.endpoints.check(&fcm), Ok(()));

        let push = with(&[
            "--push-when",
            "always",
            "--push-ttl",
            "90m",
            "--push-subscriptions-per-user",
            "3",
            "--push-endpoint-allow",
            "push.example.com,*.example.net",
        ])
        .unwrap()
        .push
        .unwrap();
        assert_eq!(push.when, PushWhen::Always);
        assert_eq!(push.ttl, Duration::from_secs(5400));
        assert_eq!(push.subscriptions_per_user, 3);
        assert!(
            push.endpoints.check(&fcm).is_err(),
            "the list replaces the default"
        );
        let ours = url::Url::parse("https://a.example.net/x").unwrap();
        assert_eq!(push.endpoints.check(&ours), Ok(()));

        for (extra, flag) in [
            (&["--push-ttl", "0s"][..], "push-ttl"),
            (
                &["--push-subscriptions-per-user", "0"],
                "push-subscriptions-per-user",
            ),
            (
                &["--push-endpoint-allow", "not a host"],
                "push-endpoint-allow",
            ),
        ] {
            assert_eq!(with(extra).unwrap_err().flag, flag, "{extra:?}");
        }
        let warned = with(&["--push-insecure-endpoints"]).unwrap();
        assert!(warned.push.unwrap().endpoints.is_insecure());
        assert!(
            warned
                .warnings
                .iter()
                .any(|w| w.contains("--push-insecure-endpoints")),
            "{:?}",
            warned.warnings
        );
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
