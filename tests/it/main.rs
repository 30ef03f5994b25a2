//! herald's integration tests: one binary, a module per area. Every test talks to a real
//! server over loopback HTTP with a real SQLite file in its own temporary directory.

mod api;
mod cli;
mod config;
mod durability;
mod fuzz;
mod helpers;
mod retention;
mod shutdown;
mod slow_reader;
mod streams;
mod tls;
