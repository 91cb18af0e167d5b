//! TopGun server: serves the TopGun wire protocol over WebSocket.
//!
//! | module | what it holds |
//! |---|---|
//! | [`config`] | command line, TOML file and auth environment → [`config::Config`] |
//! | [`auth`] | JWT verification (HS256 / RS256) → [`auth::Principal`] |
//! | [`session`] | one connection's protocol state, sans I/O: handshake, heartbeat, errors |
//! | [`metrics`] | counters and a latency histogram, rendered for `/metrics` (Prometheus) |
//! | [`server`] | the I/O driver: routes, WebSocket connections, health, shutdown |
//!
//! The data path (partition shards, writes, Merkle sync, events) plugs in behind
//! [`session::Output::Dispatch`]; until it lands, data-plane requests are answered with
//! `ERROR 501`.

pub mod auth;
pub mod config;
pub mod metrics;
pub mod server;
pub mod session;

pub use config::Config;
pub use server::Server;
