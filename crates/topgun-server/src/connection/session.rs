//! One client connection's protocol state, without I/O (DESIGN §3): frames and clock ticks
//! go in, messages to send, requests for the data path and close decisions come out.
//!
//! Handshake (PROTOCOL.md §4.1, §6.1, §9.9):
//! * with auth on, `AUTH_REQUIRED` is the first frame; until a valid `AUTH` arrives only
//!   `AUTH` is served (other frames get `ERROR 401`, a token-less `DEVICE_HELLO` is ignored),
//!   and the connection is closed when the auth deadline passes;
//! * `AUTH` → `AUTH_ACK{userId}`, or `AUTH_FAIL` naming the problem, then close; a later
//!   `AUTH` re-authenticates (token refresh) the same way;
//! * with auth off, `AUTH` is still answered with `AUTH_ACK` (the TS client waits for it) and
//!   `DEVICE_HELLO` with `DEVICE_ACK`, so the client proceeds at once.
//!
//! Replies keep request order: every output of a frame is emitted before the next frame is
//! read. Undecodable frames get `ERROR 400` (413 when too large) naming the message type and
//! field; the connection stays usable.

use std::sync::Arc;

use topgun_core::hash::PARTITION_COUNT;
use topgun_core::protocol::messages::{
    AuthAck, AuthFail, AuthRequired, DeviceAck, NodeEndpoints, NodeInfo, PartitionInfo,
    PartitionMap, Pong,
};
use topgun_core::protocol::{ErrorKind, Limits, Message, enums::NodeStatus};

use crate::config::SessionLimits;
use crate::error::code;
use crate::security::auth::{AuthError, JwtVerifier, Principal};

/// What a session asks of the server while it reads a frame: to check a token, and to let
/// an inbound `BATCH` in.
pub trait Authenticator {
    /// Checks a token at a point in time.
    fn verify(&self, token: &str, now_ms: u64) -> Result<Principal, AuthError>;

    /// Charges a `BATCH` frame's `items` to its sender's rate limits before any item is
    /// decoded (COMPAT §4.3); `false` refuses the whole frame.
    fn admit_batch(&self, _user: Option<&str>, _items: usize, _now_ms: u64) -> bool {
        true
    }
}

impl Authenticator for JwtVerifier {
    fn verify(&self, token: &str, now_ms: u64) -> Result<Principal, AuthError> {
        JwtVerifier::verify(self, token, now_ms / 1000)
    }
}

/// WebSocket close codes this layer uses.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const TOO_BIG: u16 = 1009;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const POLICY: u16 = 1008;
}

/// What every session of a server shares.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub auth_required: bool,
    pub limits: SessionLimits,
    pub decode: Limits,
    pub node_id: String,
    /// The `ws://host:port` clients should use for this node (in `PARTITION_MAP`).
    pub advertised_url: String,
    /// In cluster mode: the committed maps and how connections are kept. `None`: a single
    /// node, which owns every partition under version 1.
    pub cluster: Option<ClusterSession>,
}

/// What connections of a cluster member share.
#[derive(Debug, Clone)]
pub struct ClusterSession {
    pub maps: crate::cluster::maps::MapWatch,
    /// At most one `PARTITION_MAP` push per connection this often (the newest).
    pub push_interval: std::time::Duration,
    /// How often a WebSocket ping goes to each connection.
    pub ping_interval: std::time::Duration,
}

impl SessionConfig {
    /// In cluster mode every inbound frame (WebSocket pongs included) is activity: the TS
    /// cluster client pings on its primary connection only, and its secondary connections
    /// would otherwise be closed as idle (CLUSTER.md §15.6).
    pub fn any_frame_is_activity(&self) -> bool {
        self.cluster.is_some()
    }
}

/// One effect the driver must carry out, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Send(Message),
    /// A data-plane request (writes, sync, queries, …) for the rest of the server.
    Dispatch(Message),
    /// Close the connection (after sending what came before).
    Close {
        code: u16,
        reason: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingAuth { deadline_ms: u64 },
    Open,
    Closed,
}

/// The protocol state of one connection.
#[derive(Debug)]
pub struct Session {
    config: Arc<SessionConfig>,
    phase: Phase,
    principal: Option<Principal>,
    /// On a single node only `PING` counts as activity (PROTOCOL.md §7.3); in cluster mode
    /// any frame does ([`SessionConfig::any_frame_is_activity`]).
    last_ping_ms: u64,
    /// The type of the last frame decoded, for the driver's metrics.
    last_type: Option<&'static str>,
}

fn error(code: u32, message: impl Into<String>) -> Output {
    Output::Send(crate::error::error(code, message))
}

impl Session {
    /// A new connection at `now_ms`, with what to send first.
    pub fn open(config: Arc<SessionConfig>, now_ms: u64) -> (Self, Vec<Output>) {
        let (phase, first) = if config.auth_required {
            let deadline_ms = now_ms.saturating_add(config.limits.auth_deadline_ms);
            let hello = Output::Send(Message::AuthRequired(AuthRequired {}));
            (Phase::AwaitingAuth { deadline_ms }, vec![hello])
        } else {
            (Phase::Open, Vec::new())
        };
        let session = Self {
            config,
            phase,
            principal: None,
            last_ping_ms: now_ms,
            last_type: None,
        };
        (session, first)
    }

    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }

    /// Whether data may flow: authenticated, or auth is off.
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The type of the last frame [`Session::on_frame`] decoded (`None` if it failed).
    pub fn last_message_type(&self) -> Option<&'static str> {
        self.last_type
    }

    /// A binary frame from the client.
    pub fn on_frame(&mut self, frame: &[u8], now_ms: u64, auth: &dyn Authenticator) -> Vec<Output> {
        if self.is_closed() {
            return Vec::new();
        }
        self.on_activity(now_ms);
        let decoded = Message::decode(frame, &self.config.decode);
        self.last_type = decoded.as_ref().ok().map(Message::type_name);
        match decoded {
            Ok(msg) => self.on_message(msg, now_ms, auth),
            Err(e) => {
                let code = match e.kind() {
                    ErrorKind::FrameTooLarge { .. } => code::TOO_LARGE,
                    _ => code::BAD_REQUEST,
                };
                vec![error(code, e.to_string())]
            }
        }
    }

    /// A text frame: the protocol is binary MsgPack only.
    pub fn on_text_frame(&mut self) -> Vec<Output> {
        vec![error(
            code::BAD_REQUEST,
            "text frames are not part of the protocol; send one MsgPack message per binary frame",
        )]
    }

    /// Time passing: the auth deadline, the token's expiry and the idle timeout.
    pub fn on_tick(&mut self, now_ms: u64) -> Vec<Output> {
        match self.phase {
            Phase::AwaitingAuth { deadline_ms } if now_ms >= deadline_ms => {
                self.close(close::POLICY, "authentication timeout")
            }
            Phase::Open
                if self
                    .principal
                    .as_ref()
                    .is_some_and(|p| now_ms >= p.expires_at_ms) =>
            {
                self.logout(now_ms)
            }
            Phase::Open
                if now_ms.saturating_sub(self.last_ping_ms)
                    >= self.config.limits.idle_timeout_ms =>
            {
                self.close(close::NORMAL, "idle timeout")
            }
            _ => Vec::new(),
        }
    }

    /// The token expired: the connection is authenticated no more — nothing is served or
    /// delivered until it sends a fresh token (the TS client answers `AUTH_REQUIRED` with
    /// `AUTH`), within the auth deadline, else it is closed.
    fn logout(&mut self, now_ms: u64) -> Vec<Output> {
        self.principal = None;
        let deadline_ms = now_ms.saturating_add(self.config.limits.auth_deadline_ms);
        self.phase = Phase::AwaitingAuth { deadline_ms };
        vec![
            error(
                code::UNAUTHORIZED,
                "the token has expired: authenticate again with a fresh one",
            ),
            Output::Send(Message::AuthRequired(AuthRequired {})),
        ]
    }

    fn close(&mut self, code: u16, reason: &'static str) -> Vec<Output> {
        self.phase = Phase::Closed;
        vec![Output::Close { code, reason }]
    }

    fn on_message(&mut self, msg: Message, now_ms: u64, auth: &dyn Authenticator) -> Vec<Output> {
        if !msg.sent_by_clients() {
            let what = msg.type_name();
            return vec![error(
                code::BAD_REQUEST,
                format!("{what} is sent by servers, not clients"),
            )];
        }
        match msg {
            Message::Auth(a) => self.on_auth(&a.token, now_ms, auth),
            Message::DeviceHello(_) => self.on_device_hello(),
            _ if matches!(self.phase, Phase::AwaitingAuth { .. }) => vec![error(
                code::UNAUTHORIZED,
                format!(
                    "{} needs an authenticated connection: send AUTH first",
                    msg.type_name()
                ),
            )],
            Message::Ping(p) => {
                self.last_ping_ms = now_ms;
                vec![Output::Send(Message::Pong(Pong {
                    timestamp: p.timestamp,
                    server_time: now_ms,
                }))]
            }
            Message::PartitionMapRequest(req) => {
                self.partition_map(req.and_then(|r| r.current_version), now_ms)
            }
            Message::Batch(batch) => self.on_batch(&batch, now_ms, auth),
            other => vec![Output::Dispatch(other)],
        }
    }

    fn on_auth(&mut self, token: &str, now_ms: u64, auth: &dyn Authenticator) -> Vec<Output> {
        if !self.config.auth_required {
            return vec![Output::Send(Message::AuthAck(AuthAck {
                protocol_version: None,
                user_id: None,
                device_id: None,
                device_token: None,
            }))];
        }
        match auth.verify(token, now_ms) {
            Ok(principal) => {
                let user_id = Some(principal.user_id.as_str().into());
                self.principal = Some(principal);
                self.phase = Phase::Open;
                vec![Output::Send(Message::AuthAck(AuthAck {
                    protocol_version: None,
                    user_id,
                    device_id: None,
                    device_token: None,
                }))]
            }
            Err(e) => {
                let mut out = vec![Output::Send(Message::AuthFail(AuthFail {
                    error: Some(format!("Authentication failed: {e}").into()),
                    code: Some(code::UNAUTHORIZED),
                }))];
                out.extend(self.close(close::POLICY, "authentication failed"));
                out
            }
        }
    }

    /// Device identities are not issued yet; in no-auth mode the client is told to proceed.
    fn on_device_hello(&self) -> Vec<Output> {
        if self.config.auth_required {
            return Vec::new();
        }
        vec![Output::Send(Message::DeviceAck(DeviceAck {
            device_id: None,
            device_token: None,
        }))]
    }

    /// The partition map if the client's is older: the committed one in cluster mode
    /// (nothing before the first table commits — it is pushed when it does), else the
    /// single node's.
    fn partition_map(&self, current_version: Option<u32>, now_ms: u64) -> Vec<Output> {
        match &self.config.cluster {
            Some(cluster) => match &*cluster.maps.borrow() {
                Some(out) if current_version.is_none_or(|v| v < out.version()) => {
                    let mut map = out.map.clone();
                    map.generated_at = i64::try_from(now_ms).unwrap_or(i64::MAX);
                    vec![Output::Send(Message::PartitionMap(map))]
                }
                _ => Vec::new(),
            },
            None => self.single_node_map(current_version, now_ms),
        }
    }

    /// Something arrived from the client (a frame or a WebSocket pong) at `now_ms`; in
    /// cluster mode that keeps the connection from idling out.
    pub fn on_activity(&mut self, now_ms: u64) {
        if self.config.any_frame_is_activity() {
            self.last_ping_ms = self.last_ping_ms.max(now_ms);
        }
    }

    /// A single node owns every partition; version 1 never changes while it runs.
    fn single_node_map(&self, current_version: Option<u32>, now_ms: u64) -> Vec<Output> {
        const VERSION: u32 = 1;
        if current_version.is_some_and(|v| v >= VERSION) {
            return Vec::new();
        }
        let node_id = &self.config.node_id;
        let map = PartitionMap {
            version: VERSION,
            partition_count: PARTITION_COUNT,
            nodes: vec![NodeInfo {
                node_id: node_id.as_str().into(),
                endpoints: NodeEndpoints {
                    websocket: self.config.advertised_url.as_str().into(),
                    http: None,
                },
                status: NodeStatus::Active,
            }],
            partitions: (0..PARTITION_COUNT)
                .map(|partition_id| PartitionInfo {
                    partition_id,
                    owner_node_id: node_id.as_str().into(),
                    backup_node_ids: Vec::new(),
                })
                .collect(),
            generated_at: i64::try_from(now_ms).unwrap_or(i64::MAX),
        };
        vec![Output::Send(Message::PartitionMap(map))]
    }

    /// The inner frames of an inbound `BATCH`, in order; a `BATCH` inside one is refused.
    fn on_batch(
        &mut self,
        batch: &topgun_core::protocol::messages::Batch,
        now_ms: u64,
        auth: &dyn Authenticator,
    ) -> Vec<Output> {
        let frames = match batch.frames() {
            Ok(frames) => frames,
            Err(e) => {
                let code = match e.kind() {
                    ErrorKind::TooLong { .. } => code::TOO_LARGE,
                    _ => code::BAD_REQUEST,
                };
                return vec![error(code, e.to_string())];
            }
        };
        let user = self.principal.as_ref().map(|p| p.user_id.as_str());
        if !auth.admit_batch(user, frames.len(), now_ms) {
            return vec![error(code::TOO_MANY, "rate limit exceeded, slow down")];
        }
        let mut out = Vec::new();
        // A bad item is refused on its own; the items after it are still served.
        for (index, frame) in frames.into_iter().enumerate() {
            let refuse = |why: &dyn std::fmt::Display| {
                error(code::BAD_REQUEST, format!("BATCH item {index}: {why}"))
            };
            match Message::decode(frame, &self.config.decode) {
                Ok(Message::Batch(_)) => out.push(refuse(&"BATCH inside BATCH")),
                Ok(msg) => out.extend(self.on_message(msg, now_ms, auth)),
                Err(e) => out.push(refuse(&e)),
            }
            if self.is_closed() {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use topgun_core::protocol::messages::{Auth, Ping, QueryRef};

    /// When the fake "good" token expires.
    const GOOD_UNTIL: u64 = 1_000_000;

    /// Accepts the token "good" as user alice; refuses everything else as expired.
    struct FakeAuth;

    impl Authenticator for FakeAuth {
        fn verify(&self, token: &str, _now_ms: u64) -> Result<Principal, AuthError> {
            if token == "good" {
                Ok(Principal {
                    user_id: "alice".into(),
                    roles: vec![],
                    expires_at_ms: GOOD_UNTIL,
                })
            } else {
                Err(AuthError::Expired)
            }
        }
    }

    fn config(auth_required: bool) -> Arc<SessionConfig> {
        Arc::new(SessionConfig {
            auth_required,
            limits: SessionLimits::default(),
            decode: Limits::default(),
            node_id: "n1".into(),
            advertised_url: "ws://127.0.0.1:8080".into(),
            cluster: None,
        })
    }

    fn auth(token: &str) -> Vec<u8> {
        Message::Auth(Auth {
            token: token.into(),
            protocol_version: None,
            device_token: None,
        })
        .encode()
    }

    fn ping(ts: u64) -> Vec<u8> {
        Message::Ping(Ping { timestamp: ts }).encode()
    }

    fn ack(user: Option<&str>) -> Output {
        Output::Send(Message::AuthAck(AuthAck {
            protocol_version: None,
            user_id: user.map(Into::into),
            device_id: None,
            device_token: None,
        }))
    }

    #[test]
    fn jwt_handshake() {
        let (mut s, first) = Session::open(config(true), 1_000);
        assert_eq!(
            first,
            vec![Output::Send(Message::AuthRequired(AuthRequired {}))]
        );
        let early = s.on_frame(&ping(1), 1_001, &FakeAuth);
        assert!(
            matches!(&early[..], [Output::Send(Message::Error(e))] if e.code == 401),
            "{early:?}"
        );
        assert_eq!(
            s.on_frame(&auth("good"), 1_002, &FakeAuth),
            vec![ack(Some("alice"))]
        );
        assert_eq!(s.principal().map(|p| p.user_id.as_str()), Some("alice"));
        assert_eq!(
            s.on_frame(&ping(7), 1_003, &FakeAuth),
            vec![Output::Send(Message::Pong(Pong {
                timestamp: 7,
                server_time: 1_003
            }))]
        );
    }

    #[test]
    fn a_bad_token_fails_and_closes() {
        let (mut s, _) = Session::open(config(true), 0);
        let out = s.on_frame(&auth("bad"), 1, &FakeAuth);
        assert_eq!(
            out,
            vec![
                Output::Send(Message::AuthFail(AuthFail {
                    error: Some("Authentication failed: token has expired".into()),
                    code: Some(401)
                })),
                Output::Close {
                    code: close::POLICY,
                    reason: "authentication failed"
                },
            ]
        );
        assert!(s.is_closed());
        assert!(s.on_frame(&ping(1), 2, &FakeAuth).is_empty());
    }

    #[test]
    fn re_authentication_refreshes_or_closes() {
        let (mut s, _) = Session::open(config(true), 0);
        s.on_frame(&auth("good"), 1, &FakeAuth);
        assert_eq!(
            s.on_frame(&auth("good"), 2, &FakeAuth),
            vec![ack(Some("alice"))]
        );
        let out = s.on_frame(&auth("stale"), 3, &FakeAuth);
        assert!(matches!(out.last(), Some(Output::Close { .. })));
    }

    #[test]
    fn an_expired_token_logs_the_connection_out_until_it_authenticates_again() {
        let (mut s, _) = Session::open(config(true), 0);
        s.on_frame(&auth("good"), 1, &FakeAuth);
        s.on_frame(&ping(2), GOOD_UNTIL - 100, &FakeAuth);
        assert!(s.on_tick(GOOD_UNTIL - 1).is_empty());
        let out = s.on_tick(GOOD_UNTIL);
        assert!(
            matches!(&out[..], [Output::Send(Message::Error(e)), Output::Send(Message::AuthRequired(_))] if e.code == 401),
            "{out:?}"
        );
        assert!(s.principal().is_none() && !s.is_open());
        let refused = s.on_frame(&ping(3), GOOD_UNTIL + 1, &FakeAuth);
        assert!(matches!(&refused[..], [Output::Send(Message::Error(e))] if e.code == 401));
        // A fresh token opens it again; without one, the auth deadline closes it.
        assert_eq!(
            s.on_frame(&auth("good"), GOOD_UNTIL + 2, &FakeAuth),
            vec![ack(Some("alice"))]
        );
        let (mut t, _) = Session::open(config(true), 0);
        t.on_frame(&auth("good"), 1, &FakeAuth);
        t.on_frame(&ping(2), GOOD_UNTIL - 100, &FakeAuth);
        t.on_tick(GOOD_UNTIL);
        assert!(t.on_tick(GOOD_UNTIL + 9_999).is_empty());
        assert!(matches!(
            t.on_tick(GOOD_UNTIL + 10_000)[..],
            [Output::Close { code: 1008, .. }]
        ));
    }

    #[test]
    fn the_auth_deadline_closes_an_unauthenticated_connection() {
        let (mut s, _) = Session::open(config(true), 1_000);
        assert!(s.on_tick(10_999).is_empty());
        assert_eq!(
            s.on_tick(11_000),
            vec![Output::Close {
                code: close::POLICY,
                reason: "authentication timeout"
            }]
        );
    }

    #[test]
    fn no_auth_mode_acknowledges_auth_and_device_hello() {
        let (mut s, first) = Session::open(config(false), 0);
        assert!(first.is_empty());
        assert_eq!(s.on_frame(&auth("anything"), 1, &FakeAuth), vec![ack(None)]);
        let hello = Message::DeviceHello(topgun_core::protocol::messages::DeviceHello {
            device_token: None,
        });
        assert!(matches!(
            &s.on_frame(&hello.encode(), 2, &FakeAuth)[..],
            [Output::Send(Message::DeviceAck(_))]
        ));
    }

    #[test]
    fn idle_connections_are_closed_and_pings_keep_them_open() {
        let (mut s, _) = Session::open(config(false), 0);
        s.on_frame(&ping(1), 50_000, &FakeAuth);
        assert!(s.on_tick(109_999).is_empty());
        assert_eq!(
            s.on_tick(110_000),
            vec![Output::Close {
                code: close::NORMAL,
                reason: "idle timeout"
            }]
        );
    }

    #[test]
    fn bad_frames_get_precise_errors_and_the_session_continues() {
        let (mut s, _) = Session::open(config(false), 0);
        let garbage = s.on_frame(&[0xc1, 0x00], 1, &FakeAuth);
        assert!(matches!(&garbage[..], [Output::Send(Message::Error(e))] if e.code == 400));
        let server_type = Message::Pong(Pong {
            timestamp: 1,
            server_time: 2,
        })
        .encode();
        let refused = s.on_frame(&server_type, 2, &FakeAuth);
        assert!(
            matches!(&refused[..], [Output::Send(Message::Error(e))] if e.message.contains("PONG"))
        );
        let big = vec![0u8; Limits::default().max_frame_bytes + 1];
        assert!(
            matches!(&s.on_frame(&big, 3, &FakeAuth)[..], [Output::Send(Message::Error(e))] if e.code == 413)
        );
        assert_eq!(s.on_frame(&ping(9), 4, &FakeAuth).len(), 1, "still serving");
    }

    #[test]
    fn data_plane_messages_are_dispatched_in_order() {
        let (mut s, _) = Session::open(config(false), 0);
        let unsub = Message::QueryUnsub(QueryRef {
            query_id: "q".into(),
        });
        assert_eq!(
            s.on_frame(&unsub.encode(), 1, &FakeAuth),
            vec![Output::Dispatch(unsub)]
        );
    }

    #[test]
    fn batches_are_unpacked_in_order() {
        let (mut s, _) = Session::open(config(false), 0);
        let mut data = Vec::new();
        for frame in [ping(1), ping(2)] {
            data.extend_from_slice(&u32::try_from(frame.len()).unwrap().to_be_bytes());
            data.extend_from_slice(&frame);
        }
        let batch = Message::Batch(topgun_core::protocol::messages::Batch {
            count: 2,
            data: topgun_core::protocol::Bin(data),
        });
        let out = s.on_frame(&batch.encode(), 5, &FakeAuth);
        let stamps: Vec<u64> = out
            .iter()
            .filter_map(|o| match o {
                Output::Send(Message::Pong(p)) => Some(p.timestamp),
                _ => None,
            })
            .collect();
        assert_eq!(stamps, vec![1, 2]);
    }

    fn cluster_config(maps: crate::cluster::maps::MapWatch) -> Arc<SessionConfig> {
        let mut config = Arc::unwrap_or_clone(config(false));
        config.cluster = Some(ClusterSession {
            maps,
            push_interval: std::time::Duration::from_millis(100),
            ping_interval: std::time::Duration::from_secs(20),
        });
        Arc::new(config)
    }

    fn bootstrapped(names: &[&str]) -> topgun_cluster::state::ControlState {
        use topgun_cluster::command::{BootstrapMember, Command};
        use topgun_cluster::ids::{ClusterUuid, Incarnation, MemberName};
        use topgun_cluster::member::MemberAddrs;
        let mut state = topgun_cluster::state::ControlState::new();
        let members = names
            .iter()
            .map(|n| BootstrapMember {
                name: MemberName::new(n).unwrap(),
                incarnation: Incarnation(1),
                addrs: MemberAddrs {
                    cluster_addr: format!("{n}:9000"),
                    client_url: format!("ws://{n}:8080"),
                    http_url: format!("http://{n}:8080"),
                },
            })
            .collect();
        let cmd = Command::Bootstrap {
            cluster_uuid: ClusterUuid(7),
            version_base: 1000,
            backups: 0,
            members,
        };
        let outcome = state.apply(cmd, 5);
        assert!(
            !matches!(
                outcome.result,
                topgun_cluster::command::CommandResult::Refused(_)
            ),
            "{outcome:?}"
        );
        state
    }

    #[test]
    fn in_cluster_mode_the_committed_map_is_served_and_nothing_before_it() {
        let (publisher, maps) = crate::cluster::maps::MapPublisher::new();
        let (mut s, _) = Session::open(cluster_config(maps), 0);
        let req = Message::PartitionMapRequest(None).encode();
        assert!(s.on_frame(&req, 1, &FakeAuth).is_empty(), "no table yet");
        let state = bootstrapped(&["n1", "n2", "n3"]);
        assert!(publisher.publish(state.cluster().unwrap(), 10));
        let out = s.on_frame(&req, 42, &FakeAuth);
        let Some(Output::Send(Message::PartitionMap(map))) = out.first() else {
            panic!("{out:?}")
        };
        assert_eq!(map.nodes.len(), 3);
        assert_eq!(map.version, state.cluster().unwrap().map_version());
        assert!(map.version > 1000, "above the version base");
        assert_eq!(map.generated_at, 42);
        let owners: std::collections::BTreeSet<_> = map
            .partitions
            .iter()
            .map(|p| p.owner_node_id.as_str())
            .collect();
        assert_eq!(owners.len(), 3);
        let current = topgun_core::protocol::messages::PartitionMapRequest {
            current_version: Some(map.version),
        };
        let current = Message::PartitionMapRequest(Some(current)).encode();
        assert!(s.on_frame(&current, 43, &FakeAuth).is_empty());
        assert!(
            !publisher.publish(state.cluster().unwrap(), 50),
            "an unchanged table is not published again"
        );
    }

    #[test]
    fn in_cluster_mode_any_frame_keeps_the_connection_alive() {
        let (_publisher, maps) = crate::cluster::maps::MapPublisher::new();
        let idle = SessionLimits::default().idle_timeout_ms;
        let (mut s, _) = Session::open(cluster_config(maps), 0);
        let req = Message::PartitionMapRequest(None).encode();
        let _ = s.on_frame(&req, idle - 1, &FakeAuth);
        assert!(s.on_tick(idle + 1).is_empty(), "a frame is activity");
        s.on_activity(2 * idle);
        assert!(s.on_tick(3 * idle - 1).is_empty(), "so is a pong");
        assert!(!s.on_tick(3 * idle + 1).is_empty(), "silence is not");
        // A single node keeps PROTOCOL.md §7.3: only PING counts.
        let (mut single, _) = Session::open(config(false), 0);
        let _ = single.on_frame(&req, idle - 1, &FakeAuth);
        assert!(!single.on_tick(idle + 1).is_empty());
    }

    #[test]
    fn single_node_partition_map() {
        let (mut s, _) = Session::open(config(false), 0);
        let req = Message::PartitionMapRequest(None).encode();
        let out = s.on_frame(&req, 42, &FakeAuth);
        let Some(Output::Send(Message::PartitionMap(map))) = out.first() else {
            panic!("{out:?}")
        };
        assert_eq!(
            (map.version, map.partition_count, map.partitions.len()),
            (1, 271, 271)
        );
        assert!(map.partitions.iter().all(|p| p.owner_node_id == "n1"));
        let current = Message::PartitionMapRequest(Some(
            topgun_core::protocol::messages::PartitionMapRequest {
                current_version: Some(1),
            },
        ));
        assert!(
            s.on_frame(&current.encode(), 43, &FakeAuth).is_empty(),
            "already current"
        );
    }
}
