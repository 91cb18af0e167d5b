//! The settings other modules take, as resolved from the numeric keys. Their defaults are
//! the keys' defaults, declared in [`keys`](super::keys).

use super::keys::Numbers;

/// Abuse limits and the built-in interceptors' settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guards {
    /// Ops in one `OP_BATCH`; more: `ERROR 413`, nothing applied.
    pub ops_per_batch_max: usize,
    /// Encoded bytes of one op's value; more: `OP_REJECTED 413`. 0: only the frame bound.
    pub value_bytes_max: usize,
    /// Live queries one connection may hold.
    pub queries_per_connection_max: usize,
    /// Authenticated connections one user may hold at once; 0: no limit.
    pub connections_per_user_max: usize,
    /// Failed `AUTH`s one IP address may make per minute before its connections are
    /// refused for a while; 0: no limit.
    pub auth_failures_per_ip_per_minute: u32,
    /// Ops per second one connection may send (bursts of twice that); 0: no limit.
    pub ops_per_sec_per_connection: u32,
    /// Ops per second one user may send over all its connections; 0: no limit.
    pub ops_per_sec_per_user: u32,
    /// Stamp writes with the server's clock instead of the client's (see
    /// `interceptor::ServerTimestamps` for the trade-off).
    pub server_timestamps: bool,
}

impl Guards {
    pub(super) fn new(n: &Numbers, server_timestamps: bool) -> Self {
        Self {
            ops_per_batch_max: n.ops_per_batch_max,
            value_bytes_max: n.value_bytes_max,
            queries_per_connection_max: n.queries_per_connection_max,
            connections_per_user_max: n.connections_per_user_max,
            auth_failures_per_ip_per_minute: n.auth_failures_per_ip_per_minute,
            ops_per_sec_per_connection: n.ops_per_sec_per_connection,
            ops_per_sec_per_user: n.ops_per_sec_per_user,
            server_timestamps,
        }
    }
}

impl Default for Guards {
    fn default() -> Self {
        Self::new(&Numbers::defaults(), false)
    }
}

/// Per-connection timing and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Time from connect to a successful `AUTH` (JWT mode).
    pub auth_deadline_ms: u64,
    /// Time without a `PING` after which a connection is closed.
    pub idle_timeout_ms: u64,
    /// Replies queued for one connection's socket writer.
    pub outbound_queue_len: usize,
    /// How long a connection's socket may take no data before it is closed as a slow
    /// consumer.
    pub write_timeout_ms: u64,
    /// Maps one connection may sync (and receive events of) at once.
    pub maps_per_connection_max: usize,
    /// Topics one connection may subscribe to at once.
    pub topics_per_connection_max: usize,
}

impl SessionLimits {
    pub(super) fn new(n: &Numbers) -> Self {
        Self {
            auth_deadline_ms: n.auth_deadline_ms,
            idle_timeout_ms: n.idle_timeout_ms,
            outbound_queue_len: n.outbound_queue_len,
            write_timeout_ms: n.write_timeout_ms,
            maps_per_connection_max: n.maps_per_connection_max,
            topics_per_connection_max: n.topics_per_connection_max,
        }
    }
}

/// Bounds on connections that have not authenticated yet. They apply with JWT auth only:
/// without auth every connection is authenticated from the start. The bytes the server holds
/// for such connections are at most `connections_max` × 2 × `bytes_max` (`listener.rs` says
/// why twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreAuthLimits {
    /// Bytes a connection may send before its `AUTH` succeeds, counted from its latest HTTP
    /// request (the upgrade, for a WebSocket): the request's headers, the `AUTH` frame and
    /// anything sent with it. More: close 1009.
    pub bytes_max: usize,
    /// Connections not yet authenticated, in total; more: HTTP 503 at once.
    pub connections_max: usize,
    /// Connections not yet authenticated from one IP address; 0: no limit.
    pub connections_per_ip_max: usize,
}

impl PreAuthLimits {
    pub(super) fn new(n: &Numbers) -> Self {
        Self {
            bytes_max: n.preauth_bytes_max,
            connections_max: n.preauth_connections_max,
            connections_per_ip_max: n.preauth_connections_per_ip_max,
        }
    }
}

/// `Default` for settings built from the numeric keys alone: the keys' declared defaults.
macro_rules! defaults_from_the_keys {
    ($($settings:ty),*) => {$(
        impl Default for $settings {
            fn default() -> Self {
                Self::new(&Numbers::defaults())
            }
        }
    )*};
}

defaults_from_the_keys!(SessionLimits, PreAuthLimits);
