//! TopGun server: serves the TopGun wire protocol over WebSocket.
//!
//! | module | what it holds |
//! |---|---|
//! | [`config`] | command line, TOML file and auth environment → [`config::Config`] |
//! | [`auth`] | JWT verification (HS256 / RS256) → [`auth::Principal`] |
//! | [`session`] | one connection's protocol state, sans I/O: handshake, heartbeat, errors |
//! | [`access`] | the policies in force and each connection's subject, checked at use |
//! | [`policy`] | role-based access policies, sans I/O: patterns, decisions, field limits |
//! | [`ops`] | a client op → a validated write, or a rejection with its reason |
//! | [`shard`] | the records of a set of partitions, sans I/O: merges, partial Merkle trees |
//! | [`shard_task`] | the task owning a shard: applies, commits through the log, publishes |
//! | [`wal`] | the write-ahead log: segments, CRC32C frames, group commit, recovery |
//! | [`checkpoint`] | drains the log into the store and releases checkpointed segments |
//! | [`store`] | the storage trait, entries' byte form, and the in-memory store |
//! | [`store_redb`] | the embedded default store (redb) |
//! | [`store_pg`] | the PostgreSQL store |
//! | [`backup`] | backups of a running server, and restoring one into a data directory |
//! | [`storage`] | opens the configured store and log and recovers the records at start-up |
//! | [`data_dir`] | the data directory's lock: one server per directory |
//! | [`fanout`] | the per-connection outbound queue, and map subscribers for events |
//! | [`dataplane`] | routes data requests to shard tasks and assembles their replies |
//! | [`queries`] | live queries: subscriptions, snapshots, `QUERY_RESP`/`QUERY_UPDATE` |
//! | [`topics`] | pub/sub topics: subscriptions and `TOPIC_MESSAGE` fan-out |
//! | [`names`] | the rules for topic and lock names |
//! | [`locks`] | distributed locks and fencing tokens, sans I/O |
//! | [`lock_service`] | the task owning the lock table: timers, durable tokens, delivery |
//! | [`counters`] | PN counters: merge, persist, answer, broadcast |
//! | [`journal`] | the event journal, sans I/O: events in log frames, retention, paging |
//! | [`journal_service`] | the task serving `JOURNAL_READ` and `JOURNAL_SUBSCRIBE` |
//! | [`guard`] | connections waiting to authenticate, failed `AUTH`s per IP, connections per user |
//! | [`listener`] | accepts connections; bounds what unauthenticated ones may cost |
//! | [`interceptor`] | hooks on connections and ops; the rate limiter and server timestamps |
//! | [`internal`] | the server's own durable state, kept in reserved maps |
//! | [`extensions`] | entry processors and conflict resolvers: declined with a clear answer |
//! | [`metrics`] | counters and latency histograms, rendered for `/metrics` (Prometheus) |
//! | [`server`] | the I/O driver: routes, WebSocket connections, health, shutdown |
//!
//! Data requests leave the session as [`session::Output::Dispatch`] and are served by
//! [`dataplane::DataPlane`]; what it does not serve yet (search, SQL) is
//! answered with `ERROR 501`.

pub mod access;
pub mod auth;
pub mod backup;
pub mod by_name;
pub mod checkpoint;
pub mod config;
pub mod counters;
pub mod data_dir;
pub mod dataplane;
pub mod extensions;
pub mod fanout;
pub mod guard;
pub mod interceptor;
pub mod internal;
pub mod journal;
pub mod journal_service;
pub mod listener;
pub mod lock_service;
pub mod locks;
pub mod metrics;
pub mod names;
pub mod ops;
pub mod outbox;
pub mod policy;
pub mod queries;
pub mod server;
pub mod session;
pub mod shard;
pub mod shard_task;
pub mod storage;
pub mod store;
pub mod store_pg;
pub mod store_redb;
pub mod topics;
pub mod wal;

pub use config::Config;
pub use server::Server;
