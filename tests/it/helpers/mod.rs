//! Test helpers, one job a file; test files hold tests only. The everyday vocabulary is
//! re-exported here; the helpers of one area are reached through their module.
//!
//! - `api`: `Api`, the one HTTP client: every server below dereferences to or hands out one.
//! - `answers`: reading what the API answers: error bodies, history pages, headers, metrics.
//! - `app`: [`TestApp`], herald inside the test process on port 0.
//! - `process`: [`ServerProcess`], the real binary serving, and `herald_command`.
//! - `command`: other `herald` commands: `publish`/`subscribe` read line by line, a refused
//!   `serve`.
//! - `sse`: [`SseClient`] and the [`Received`] events it parses; every wait times out.
//! - `raw_sse`: streams read as bytes: heartbeats, the exact preamble and end, chunk framing.
//! - `wire`: HTTP/1 on a bare socket: requests as written, bytes as sent.
//! - `auth`: [`auth::spawn_secured`] servers, tokens, key pairs and where a token is carried.
//! - `tls`: a self-signed certificate per test, and a [`TestApp`] on HTTPS with it.
//! - `redis`: the backend of the run (`HERALD_TEST_BACKEND`) and `redis-server`s of the tests.
//! - `cluster`: herald binaries sharing a Redis, and the ledgers of what publishers were told.
//! - `durability`: publishers racing a SIGKILL, and what each was told.
//! - `isolation`: many users' tabs under load, and what each must have received.
//! - `fuzz`: the random requests, rules and recorders of the property test in `fuzz.rs`.
//! - `push_service`: [`push_service::FakePushService`], a Web Push service on loopback that
//!   decrypts, verifies and records what herald pushes.
//! - `nginx`: [`nginx::Nginx`], the real nginx running `deploy/nginx/herald.conf` in front of a
//!   herald.

use std::time::Duration;

pub mod answers;
mod api;
mod app;
pub mod auth;
pub mod cluster;
pub mod command;
pub mod durability;
pub mod fuzz;
pub mod isolation;
pub mod nginx;
mod process;
pub mod push_service;
pub mod raw_sse;
pub mod redis;
mod sse;
pub mod tls;
pub mod wire;

pub use api::{Api, client_from, h2c_client, note, padded_body, read_json, send};
pub use app::TestApp;
pub use process::{ServerProcess, assert_healthy, free_port, herald_command};
pub use sse::{
    Received, SseClient, assert_next_is_marker, assert_strictly_increasing, event_id, event_ids,
    expect_resync, titles,
};

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);
