//! Flags of the `topgun-bench` binary.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Drives a TopGun server over real `WebSocket`s and reports what it sustained.
#[derive(Debug, Parser)]
#[command(name = "topgun-bench", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// Settings every scenario shares.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// WebSocket URL of the server under test.
    #[arg(long, global = true, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Signs an HS256 token with this secret and authenticates every connection with it;
    /// without it connections use no-auth mode.
    #[arg(long, global = true, env = "TOPGUN_BENCH_JWT_SECRET")]
    pub jwt_secret: Option<String>,
    /// How long the measured phase lasts (e.g. `10s`, `500ms`, `2m`).
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load before measuring starts; nothing from it is counted.
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// How long an answer may take before the request counts as timed out.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Prints every figure as one JSON object on the last line of output.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Default for Common {
    fn default() -> Self {
        Self {
            url: "ws://127.0.0.1:8080/ws".into(),
            jwt_secret: None,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
            json: false,
        }
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// Acknowledged write throughput and batch latency.
    Write(WriteArgs),
    /// Event delivery from one writer to many subscribers of one map.
    Fanout(FanoutArgs),
    /// Idle authenticated connections, and the server memory each one costs.
    Conns(ConnsArgs),
    /// Merkle sync of a large map into an empty client, and a resync after a few changes.
    Sync(SyncArgs),
    /// Write → `QUERY_UPDATE` latency with many live queries on one map.
    Query(QueryArgs),
    /// Serves the transport ceiling: a minimal server that decodes frames, answers
    /// `OP_ACK`/`PONG`/`AUTH_ACK`, and relays PUTs to the map's subscribers, with no CRDT,
    /// storage or security work.
    Ceiling(CeilingArgs),
}

#[derive(Debug, Clone, Args)]
pub struct WriteArgs {
    /// Connections, each writing on its own.
    #[arg(long, short = 'c', default_value_t = 200)]
    pub connections: usize,
    /// PUTs per `OP_BATCH`.
    #[arg(long, short = 'b', default_value_t = 10)]
    pub batch: usize,
    /// Batches a connection keeps in flight.
    #[arg(long, short = 'p', default_value_t = 1)]
    pub in_flight: usize,
    /// Bytes of each value (a string).
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
    /// Maps written to (connection i writes map i mod N); 0 gives every connection its own,
    /// so that the figure is write throughput and not fan-out (see `fanout` for that).
    #[arg(long, default_value_t = 0)]
    pub maps: usize,
    /// Write concern asked for on every batch (`APPLIED`, `PERSISTED`, …); the server's
    /// default when absent.
    #[arg(long, value_parser = parse_write_concern)]
    pub write_concern: Option<topgun_core::protocol::enums::WriteConcern>,
    /// Total ops/s to offer, paced; without it every connection sends as fast as its acks
    /// return. Paced latency counts from when a batch was due, not when it went out.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Order of the fresh keys each connection writes. A B-tree store takes keys that
    /// follow each other far more cheaply than scattered ones, so the two measure
    /// different things.
    #[arg(long, value_enum, default_value_t = KeyOrder::Sequential)]
    pub keys: KeyOrder,
}

/// How a `write` connection names its fresh keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyOrder {
    /// `k<connection>-<n>`: each connection's keys sort together.
    Sequential,
    /// A 64-bit mix of connection and counter, as random IDs (UUIDs) are: every key lands
    /// somewhere new in the key space.
    Scattered,
}

impl Default for WriteArgs {
    fn default() -> Self {
        Self {
            connections: 200,
            batch: 10,
            in_flight: 1,
            value_size: 64,
            maps: 0,
            write_concern: None,
            rate: None,
            keys: KeyOrder::Sequential,
        }
    }
}

/// How a subscriber asks for a map's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SubscribeBy {
    /// `SYNC_INIT` (our server sends a map's events to the connections that sync it).
    Sync,
    /// `QUERY_SUB` with an empty query (servers that push events only to query subscribers).
    Query,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Subscriber connections.
    #[arg(long, short = 's', default_value_t = 1000)]
    pub subscribers: usize,
    /// Writes per second from the one writer.
    #[arg(long, short = 'r', default_value_t = 1000.0)]
    pub rate: f64,
    /// How subscribers subscribe.
    #[arg(long, value_enum, default_value_t = SubscribeBy::Sync)]
    pub subscribe: SubscribeBy,
    /// After the last write, how long to wait for events still on their way.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain: Duration,
}

impl Default for FanoutArgs {
    fn default() -> Self {
        Self {
            subscribers: 1000,
            rate: 1000.0,
            subscribe: SubscribeBy::Sync,
            drain: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ConnsArgs {
    /// Connections to reach.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    pub connections: usize,
    /// Connections added per step.
    #[arg(long, default_value_t = 1000)]
    pub step: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// PID of the server process (same machine): its RSS is read at every step.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Pause after each step before the server's memory is read.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub settle: Duration,
}

impl Default for ConnsArgs {
    fn default() -> Self {
        Self {
            connections: 10_000,
            step: 1000,
            concurrency: 64,
            server_pid: None,
            settle: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct SyncArgs {
    /// Keys preloaded into the map.
    #[arg(long, short = 'k', default_value_t = 100_000)]
    pub keys: usize,
    /// Fraction of keys changed before the resync.
    #[arg(long, default_value_t = 0.01)]
    pub changed: f64,
    /// Bytes of each value (a string).
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
    /// PUTs per preload batch.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
}

impl Default for SyncArgs {
    fn default() -> Self {
        Self {
            keys: 100_000,
            changed: 0.01,
            value_size: 64,
            batch: 1000,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// Live queries on the map.
    #[arg(long, short = 'q', default_value_t = 10_000)]
    pub queries: usize,
    /// Fraction of the queries each write matches.
    #[arg(long, default_value_t = 0.01)]
    pub matching: f64,
    /// Writes per second.
    #[arg(long, short = 'r', default_value_t = 1000.0)]
    pub rate: f64,
    /// Connections the queries are spread over (a server allows a few hundred per connection).
    #[arg(long, short = 'c', default_value_t = 100)]
    pub connections: usize,
    /// After the last write, how long to wait for updates on their way.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain: Duration,
}

impl Default for QueryArgs {
    fn default() -> Self {
        Self {
            queries: 10_000,
            matching: 0.01,
            rate: 1000.0,
            connections: 100,
            drain: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct CeilingArgs {
    /// Port to listen on (0: any free port); `PORT=<n>` is printed once listening.
    #[arg(long, default_value_t = 8090)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
}

/// `250ms`, `10s`, `2m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (try 500ms, 10s or 2m)"))?;
    Duration::try_from_secs_f64(value * scale)
        .map_err(|_| format!("{text:?} is not a duration (try 500ms, 10s or 2m)"))
}

fn parse_write_concern(text: &str) -> Result<topgun_core::protocol::enums::WriteConcern, String> {
    use topgun_core::protocol::enums::WriteConcern;
    WriteConcern::parse(&text.to_ascii_uppercase()).ok_or_else(|| {
        let names: Vec<_> = WriteConcern::ALL.iter().map(|w| w.as_str()).collect();
        format!(
            "{text:?} is not a write concern; one of {}",
            names.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_mins(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn write_concerns_parse_in_any_case() {
        use topgun_core::protocol::enums::WriteConcern;
        assert_eq!(
            parse_write_concern("persisted"),
            Ok(WriteConcern::Persisted)
        );
        assert!(
            parse_write_concern("DURABLE")
                .unwrap_err()
                .contains("PERSISTED")
        );
    }

    #[test]
    fn the_flags_parse() {
        let cli = Cli::try_parse_from([
            "topgun-bench",
            "write",
            "--url",
            "ws://h:1/ws",
            "-c",
            "5",
            "--duration",
            "1s",
            "--json",
        ])
        .unwrap();
        assert_eq!(cli.common.url, "ws://h:1/ws");
        assert!(cli.common.json);
        assert!(matches!(
            cli.scenario,
            Scenario::Write(WriteArgs { connections: 5, .. })
        ));
    }
}
