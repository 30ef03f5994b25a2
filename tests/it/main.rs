//! herald's integration tests: one binary, a module per area. Every test talks to a real
//! server over loopback HTTP with a real SQLite file in its own temporary directory.

mod api;
mod assets;
mod auth;
mod cli;
mod cluster;
mod config;
mod config_file;
mod cors;
mod deploy;
mod durability;
mod edge;
mod fuzz;
mod helpers;
mod http1;
mod isolation;
mod lifecycle;
mod limits;
mod logs;
mod packaging;
mod push;
mod push_delivery;
mod push_subscriptions;
mod retention;
mod shutdown;
mod slow_reader;
mod streams;
mod tls;
