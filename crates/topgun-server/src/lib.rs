//! TopGun server: serves the TopGun wire protocol over WebSocket.
//!
//! The crate is a house of subsystems, each a folder whose `mod.rs` says what it owns, its
//! invariants and its public face:
//!
//! | module | what it holds |
//! |---|---|
//! | [`config`] | command line, TOML file and environment → [`config::Config`], cluster settings included |
//! | [`connection`] | sessions (sans I/O), outboxes, fan-out handles, the listener |
//! | [`security`] | JWT auth, role policies, access checks, guards, interceptors |
//! | [`data`] | the data path: shards and their tasks, op validation, the data plane |
//! | [`query`] | live queries: subscriptions, snapshots, `QUERY_RESP`/`QUERY_UPDATE` |
//! | [`coordination`] | topics, locks with fencing tokens, PN counters, reserved maps |
//! | [`journal`] | the event journal (sans I/O) and the task serving it |
//! | [`storage`] | write-ahead log, stores, checkpoints, backups, recovery |
//! | [`http`] | `POST /sync` (HTTP sync), the admin REST API and its dashboard |
//! | [`cluster`] | between members: frames, the authenticated handshake, links with backoff |
//! | [`metrics`] | counters and latency histograms, rendered for `/metrics` (Prometheus) |
//! | [`error`] | every `ERROR` code and the refusals built from them |
//! | [`clock`] | the wall clock, and the server's shared hybrid logical clock |
//! | [`by_name`] | maps keyed by a name, looked up without copying it |
//! | [`services`] | starts the data-plane services and wires their handles together |
//! | [`server`] | the I/O driver: routes, WebSocket connections, health, shutdown |
//!
//! Data requests leave the session as [`connection::session::Output::Dispatch`] and are
//! served by [`data::plane::DataPlane`]; what it does not serve yet (search, SQL) is
//! answered with `ERROR 501`.

pub mod by_name;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod coordination;
pub mod data;
pub mod error;
pub mod http;
pub mod journal;
pub mod metrics;
pub mod query;
pub mod security;
pub mod server;
pub mod services;
pub mod storage;

pub use config::Config;
pub use server::Server;
