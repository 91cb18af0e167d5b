//! `topgun-bench`: a load generator for any server that speaks the TopGun wire protocol
//! (PROTOCOL.md) over WebSocket, and the transport ceiling it is compared with.
//!
//! | module | what it holds |
//! |---|---|
//! | [`cli`] | flags of the binary; every scenario's settings |
//! | [`client`] | one benchmark connection: connect, authenticate, framed MsgPack, byte counts |
//! | [`stats`] | HDR latency histograms and their percentiles |
//! | [`report`] | a scenario's figures, printed for people and as one JSON line |
//! | [`progress`] | the live progress line (a spinner on a terminal, plain lines elsewhere) |
//! | [`scenario`] | `write`, `fanout`, `query`, `conns`, `sync` |
//! | [`ceiling`] | a minimal server: decode, acknowledge, nothing else |
//!
//! Every scenario is a library function, so the smoke tests run exactly what the binary
//! runs, against a real server on real sockets.

// Figures are statistics: counts far below 2^52 become f64 for rates, and rates become
// counts; the casts cannot lose anything that matters.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

pub mod ceiling;
pub mod cli;
pub mod client;
pub mod progress;
pub mod report;
pub mod scenario;
pub mod stats;

/// Milliseconds since the Unix epoch (the HLC's physical clock).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
