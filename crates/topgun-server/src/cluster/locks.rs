//! Locks on one designated member (CLUSTER.md §9, until §10 makes them a CP structure):
//! the owner of the fencing mark's partition holds every lock; the other members send it
//! their connections' operations and deliver its answers.
//!
//! * `LOCK_OP` (one-way on the data channel, so one member's operations arrive in the order
//!   its connections made them): the connection ([`remote_writer`] id) and the operation.
//! * `LOCK_DELIVER` (one-way back): the connection on the receiving member and the frame
//!   to offer it (`LOCK_GRANTED`, `LOCK_RELEASED` or an `ERROR`).
//! * A *hello* `LOCK_OP` (no operation): sent by each member to the designated one as soon
//!   as it knows which member that is. Lock operations carry the sender's incarnation, so
//!   the designated member learns of a restart — a durable member resuming its Raft id —
//!   from the hello and drops the previous life's locks at once, not at the new life's
//!   first lock operation.
//!
//! Operations received wait in the lock task's bounded queue; past it they are dropped and
//! logged (a request then goes unanswered until the client's own timeout; a lost release
//! leaves the lock to its lease or its connection's close — never to two holders).

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use topgun_cluster::table::partition_of;

use super::frame::Frame;
use super::hello::{Channel, PeerIdentity};
use super::reads::{Reads, RelayLink};
use super::routes::{Routes, RoutesWatch};
use super::rpc::Rpc;
use crate::connection::ConnId;
use crate::connection::outbox::SharedFrame;
use crate::coordination::internal::FENCING_KEY;
use crate::coordination::locks::service::{LockOp, LockPeers, LockSink};
use crate::data::forward::{remote_writer, writer_origin};
use crate::metrics::cluster::RelayStats;

/// The message kind of a lock operation sent to the designated member.
pub const LOCK_OP: u8 = 20;
/// The message kind of the designated member's answer to another member's connection.
pub const LOCK_DELIVER: u8 = 21;

/// The member holding every lock under `routes`: the owner of the fencing mark's partition.
pub fn designated(routes: &Routes) -> topgun_cluster::ids::RaftId {
    routes.owner(partition_of(FENCING_KEY))
}

#[derive(Debug, Serialize, Deserialize)]
struct OpWire {
    author: u64,
    /// 0: request, 1: release, 2: disconnect, 3: hello.
    op: u8,
    request_id: String,
    name: String,
    ttl: Option<u64>,
    token: u64,
}

fn encode_op(author: u64, op: &LockOp) -> Vec<u8> {
    let mut wire = OpWire {
        author,
        op: 2,
        request_id: String::new(),
        name: String::new(),
        ttl: None,
        token: 0,
    };
    match op {
        LockOp::Request {
            request_id,
            name,
            ttl,
        } => {
            (wire.op, wire.request_id, wire.name, wire.ttl) =
                (0, request_id.clone(), name.clone(), *ttl);
        }
        LockOp::Release {
            request_id,
            name,
            token,
        } => {
            (wire.op, wire.request_id, wire.name, wire.token) =
                (1, request_id.clone(), name.clone(), *token);
        }
        LockOp::Disconnect => {}
    }
    super::wire::encode(&wire)
}

const HELLO: u8 = 3;

/// The hello of member `me` (see the module's notes): the member in `token`, as it names
/// no connection.
fn encode_hello(me: u64) -> Vec<u8> {
    super::wire::encode(&OpWire {
        author: 0,
        op: HELLO,
        request_id: String::new(),
        name: String::new(),
        ttl: None,
        token: me,
    })
}

/// What a `LOCK_OP` carries.
#[derive(Debug, PartialEq, Eq)]
enum Incoming {
    /// An operation of another member's connection.
    Op(ConnId, LockOp),
    /// A member's hello.
    Hello { member: u64 },
}

impl Incoming {
    /// The member it comes from.
    fn member(&self) -> u64 {
        match self {
            Self::Op(author, _) => writer_origin(*author).map_or(0, |(member, _)| member),
            Self::Hello { member } => *member,
        }
    }
}

/// An operation and its author, or a hello; an error for bytes that are neither, or an
/// author that is not another member's connection.
fn decode_op(bytes: &[u8]) -> Result<Incoming, String> {
    let wire: OpWire = super::wire::decode(bytes)?;
    if wire.op == HELLO {
        return Ok(Incoming::Hello { member: wire.token });
    }
    if writer_origin(wire.author).is_none() {
        return Err("a lock operation without its connection".into());
    }
    let op = match wire.op {
        0 => LockOp::Request {
            request_id: wire.request_id,
            name: wire.name,
            ttl: wire.ttl,
        },
        1 => LockOp::Release {
            request_id: wire.request_id,
            name: wire.name,
            token: wire.token,
        },
        2 => LockOp::Disconnect,
        other => return Err(format!("an unknown lock operation {other}")),
    };
    Ok(Incoming::Op(wire.author, op))
}

/// This member's way to the designated member.
#[derive(Debug)]
pub struct RemoteLocks {
    pub rpc: Arc<Rpc>,
    pub routes: RoutesWatch,
    pub stats: Arc<RelayStats>,
}

impl LockPeers for RemoteLocks {
    fn send(&self, conn: ConnId, op: &LockOp) -> bool {
        let Some(routes) = self.routes.borrow().clone() else {
            return false;
        };
        let holder = designated(&routes);
        if holder == routes.me {
            return false;
        }
        let Some((_, addr)) = routes.members().find(|(id, _)| *id == holder) else {
            return false;
        };
        let body = encode_op(remote_writer(routes.me.0, conn), op);
        let frame = Frame::new(LOCK_OP, Bytes::from(body));
        let counter = match self.rpc.send(&addr, Channel::Data, frame) {
            Ok(()) => &self.stats.locks_sent,
            Err(_) => &self.stats.dropped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        true
    }
}

impl LockSink for RelayLink {
    fn deliver(&self, conn: ConnId, frame: &SharedFrame) {
        let mut body = BytesMut::with_capacity(8 + frame.len());
        body.put_u64(conn);
        body.put_slice(&frame.bytes());
        self.send(LOCK_DELIVER, body.freeze());
    }
}

/// A lock operation from another member (on the inbox loop: handed to the lock task
/// without waiting).
pub fn on_op(reads: &Reads, from: &PeerIdentity, body: &[u8]) {
    let incoming = match decode_op(body) {
        Ok(decoded) => decoded,
        Err(why) => {
            tracing::warn!(peer = %from.name, %why, "a lock operation dropped");
            return;
        }
    };
    let Some(data) = reads.data() else { return };
    let member = incoming.member();
    if matches!(incoming, Incoming::Hello { .. }) && !reads.listed_at(member, &from.addr) {
        // A hello names its member rather than a connection: believed only from it.
        tracing::warn!(peer = %from.name, member, "a lock hello from another member dropped");
        return;
    }
    let restarted = {
        let mut users = reads
            .lock_users
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let before = users.insert(member, from.incarnation);
        before.is_some_and(|old| old != from.incarnation)
    };
    if restarted {
        // The member restarted (resuming its Raft id): its previous life's connections are
        // gone, and so are their locks — queued ahead of the new life's first operation.
        tracing::info!(peer = %from.name, "a member restarted: its previous life's locks go");
        data.locks().try_forget_member(member);
    }
    let Incoming::Op(author, op) = incoming else {
        return;
    };
    let sink: Arc<dyn LockSink> = reads.link(member, from);
    if !data.locks().serve_remote(author, sink, op) {
        reads.stats.dropped.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(peer = %from.name, "the lock task is full: a lock operation dropped");
    }
}

/// The designated member's answer for one of this member's connections.
pub fn on_deliver(reads: &Reads, mut body: Bytes) {
    if body.len() < 8 {
        return;
    }
    let conn = body.get_u64();
    if let Some(data) = reads.data() {
        data.locks()
            .deliver_remote(conn, &SharedFrame::from(body.to_vec()));
    }
}

/// Follows the table: when this member becomes the designated one, its lock task continues
/// tokens above the wall clock's microseconds (above every token its predecessor could have
/// handed out, unless its clock is far behind); when it stops being it, it forgets every
/// lock. Each other member that becomes designated is sent this member's hello.
pub async fn follow_designation(reads: Weak<Reads>, mut routes: RoutesWatch) {
    let mut was = false;
    let mut greeted = None;
    loop {
        let current = routes.borrow_and_update().clone();
        let is = current.as_ref().is_some_and(|r| designated(r) == r.me);
        if let Some(routes) = current.as_ref()
            && !is
            && greeted != Some(designated(routes))
            && let Some(reads) = reads.upgrade()
            && hello(&reads.rpc, routes)
        {
            greeted = Some(designated(routes));
        }
        if is != was {
            let Some(data) = reads.upgrade().and_then(|r| r.data()) else {
                return;
            };
            let floor = is.then(|| crate::clock::now_ms().saturating_mul(1000));
            if is {
                tracing::info!(?floor, "this member now holds the cluster's locks");
            } else {
                tracing::info!("another member holds the cluster's locks now");
            }
            data.locks().designation(floor).await;
        }
        was = is;
        if routes.changed().await.is_err() {
            return;
        }
    }
}

/// Sends this member's hello to the designated member; `false` when it could not be sent.
fn hello(rpc: &Rpc, routes: &Routes) -> bool {
    let holder = designated(routes);
    let Some((_, addr)) = routes.members().find(|(id, _)| *id == holder) else {
        return false;
    };
    let frame = Frame::new(LOCK_OP, Bytes::from(encode_hello(routes.me.0)));
    rpc.send(&addr, Channel::Data, frame).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_read_back_and_others_are_refused() {
        let author = remote_writer(2, 9);
        let ops = [
            LockOp::Request {
                request_id: "r1".into(),
                name: "job".into(),
                ttl: Some(5000),
            },
            LockOp::Release {
                request_id: "r2".into(),
                name: "job".into(),
                token: 77,
            },
            LockOp::Disconnect,
        ];
        for op in ops {
            let decoded = decode_op(&encode_op(author, &op)).unwrap();
            assert_eq!(decoded.member(), 2);
            assert_eq!(decoded, Incoming::Op(author, op));
        }
        let hello = decode_op(&encode_hello(5)).unwrap();
        assert_eq!(hello, Incoming::Hello { member: 5 });
        assert_eq!(hello.member(), 5);
        assert!(
            decode_op(&encode_op(9, &LockOp::Disconnect)).is_err(),
            "a local id"
        );
        assert!(decode_op(b"junk").is_err());
    }
}
