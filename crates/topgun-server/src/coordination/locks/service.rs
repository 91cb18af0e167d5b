//! The task that owns the [`LockTable`]: feeds it requests, releases, disconnects and
//! clock ticks, makes token reservations durable through the reserved map, and delivers
//! its answers to connections' outboxes (a grant can come long after its request, so
//! it cannot wait in the reply queue without holding up every later reply).
//!
//! In a cluster, until locks are a CP structure (CLUSTER.md §10), one *designated* member —
//! the owner of the fencing mark's partition — holds every lock: the others send it their
//! connections' requests, releases and disconnects in order ([`LockPeers`]) and it answers
//! each through the asking member ([`LockSink`]). A member that becomes designated starts
//! its tokens above the wall clock's microseconds, so tokens still increase across a change
//! of designated member (unless its clock is behind the previous one's by more than the time
//! between them); its predecessor's holders are not known to it. A member that stops being
//! designated forgets every lock, so two members never grant one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use topgun_core::Value;
use topgun_core::protocol::Message;
use topgun_core::protocol::messages::{LockGranted, LockReleased};

use crate::clock::now_ms;
use crate::connection::ConnId;
use crate::connection::fanout::ConnHandle;
use crate::connection::outbox::SharedFrame;
use crate::coordination::internal::{FENCING_KEY, InternalWriter, LOCKS_MAP};
use crate::coordination::locks::{Effect, LockTable};
use crate::data::forward::writer_origin;
use crate::error;
use crate::security::policy::{Action, Resource};

/// Requests waiting for the lock task.
const QUEUE_LEN: usize = 1024;

/// Who asks for a lock: a connection here, or one on another member (by its
/// [`remote_writer`](crate::data::forward::remote_writer) id) answered through `sink`.
#[derive(Debug, Clone)]
pub enum Requester {
    Local(ConnHandle),
    Remote(ConnId, Arc<dyn LockSink>),
}

impl Requester {
    fn id(&self) -> ConnId {
        match self {
            Self::Local(conn) => conn.id,
            Self::Remote(id, _) => *id,
        }
    }
}

/// One lock operation another member sends the designated one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOp {
    Request {
        request_id: String,
        name: String,
        ttl: Option<u64>,
    },
    Release {
        request_id: String,
        name: String,
        token: u64,
    },
    Disconnect,
}

/// The designated member, as the others reach it (cluster mode).
pub trait LockPeers: Send + Sync + std::fmt::Debug {
    /// Sends `op` of this member's connection `conn` to the designated member, if that is
    /// another one; `false` when this member is designated (or none is known yet).
    fn send(&self, conn: ConnId, op: &LockOp) -> bool;
}

/// Where the designated member's answers to another member's connection go.
pub trait LockSink: Send + Sync + std::fmt::Debug {
    /// Delivers a frame to connection `conn` of that member.
    fn deliver(&self, conn: ConnId, frame: &SharedFrame);
}

#[derive(Debug)]
enum Input {
    Request {
        conn: Requester,
        request_id: String,
        name: String,
        ttl: Option<u64>,
    },
    Release {
        conn: Requester,
        request_id: String,
        name: String,
        token: u64,
    },
    Disconnect(ConnId),
    Reserved {
        through: u64,
        outcome: Result<(), String>,
    },
    /// This member became the designated one (`Some`: tokens continue above the floor),
    /// or stopped being it (`None`: it holds nothing any more).
    Designation(Option<u64>),
    /// A member left: its connections' locks are released.
    ForgetMember(u64),
}

/// A handle on the lock task.
#[derive(Debug, Clone)]
pub struct Locks {
    tx: mpsc::Sender<Input>,
    /// Cluster mode: the designated member, when it is another one.
    peers: Arc<OnceLock<Arc<dyn LockPeers>>>,
    /// This member's connections whose lock operations went to the designated member, to
    /// deliver its answers to.
    remote_users: Arc<Mutex<HashMap<ConnId, ConnHandle>>>,
}

impl Locks {
    /// Starts the task; tokens continue above `durable_high`.
    pub fn start(durable_high: u64, writer: InternalWriter) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_LEN);
        let task = Task {
            table: LockTable::new(durable_high),
            conns: HashMap::new(),
            writer,
            me: tx.downgrade(),
        };
        tokio::spawn(task.run(rx));
        Self {
            tx,
            peers: Arc::default(),
            remote_users: Arc::default(),
        }
    }

    /// Cluster mode: lock operations go to the designated member through `peers`. Set
    /// once.
    pub fn set_peers(&self, peers: Arc<dyn LockPeers>) -> bool {
        self.peers.set(peers).is_ok()
    }

    /// Sends `op` to the designated member if that is another one (remembering the
    /// connection, to deliver its answers); `false` to serve it here.
    fn sent_away(&self, conn: &ConnHandle, op: &LockOp) -> bool {
        let Some(peers) = self.peers.get() else {
            return false;
        };
        let mut users = self
            .remote_users
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !peers.send(conn.id, op) {
            return false;
        }
        users.insert(conn.id, conn.clone());
        true
    }

    /// `LOCK_REQUEST`: answered later, through the connection's outbox.
    pub async fn request(&self, conn: &ConnHandle, request_id: &str, name: &str, ttl: Option<u64>) {
        let op = LockOp::Request {
            request_id: request_id.to_owned(),
            name: name.to_owned(),
            ttl,
        };
        if self.sent_away(conn, &op) {
            return;
        }
        let input = Input::Request {
            conn: Requester::Local(conn.clone()),
            request_id: request_id.to_owned(),
            name: name.to_owned(),
            ttl,
        };
        let _ = self.tx.send(input).await;
    }

    /// `LOCK_RELEASE`: answered with `LOCK_RELEASED` through the outbox.
    pub async fn release(&self, conn: &ConnHandle, request_id: &str, name: &str, token: u64) {
        let op = LockOp::Release {
            request_id: request_id.to_owned(),
            name: name.to_owned(),
            token,
        };
        if self.sent_away(conn, &op) {
            return;
        }
        let input = Input::Release {
            conn: Requester::Local(conn.clone()),
            request_id: request_id.to_owned(),
            name: name.to_owned(),
            token,
        };
        let _ = self.tx.send(input).await;
    }

    /// A connection that used locks closed.
    pub async fn disconnect(&self, conn: ConnId) {
        let remote = self
            .remote_users
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&conn);
        if remote.is_some()
            && let Some(peers) = self.peers.get()
        {
            peers.send(conn, &LockOp::Disconnect);
        }
        let _ = self.tx.send(Input::Disconnect(conn)).await;
    }

    /// The designated member's answer for this member's connection `conn`.
    pub fn deliver_remote(&self, conn: ConnId, frame: &SharedFrame) {
        let users = self
            .remote_users
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(handle) = users.get(&conn) {
            handle.offer(frame.clone());
        }
    }

    /// Another member's connection's operation, served here (the designated member);
    /// `false` if the task's queue is full (the operation is dropped).
    pub fn serve_remote(&self, author: ConnId, sink: Arc<dyn LockSink>, op: LockOp) -> bool {
        let conn = Requester::Remote(author, sink);
        let input = match op {
            LockOp::Request {
                request_id,
                name,
                ttl,
            } => Input::Request {
                conn,
                request_id,
                name,
                ttl,
            },
            LockOp::Release {
                request_id,
                name,
                token,
            } => Input::Release {
                conn,
                request_id,
                name,
                token,
            },
            LockOp::Disconnect => Input::Disconnect(author),
        };
        self.tx.try_send(input).is_ok()
    }

    /// This member became the designated one (`Some(floor)`: tokens continue above it), or
    /// stopped being it (`None`).
    pub async fn designation(&self, floor: Option<u64>) {
        let _ = self.tx.send(Input::Designation(floor)).await;
    }

    /// A member left the cluster: its connections' locks are released.
    pub async fn forget_member(&self, member: u64) {
        let _ = self.tx.send(Input::ForgetMember(member)).await;
    }

    /// Like [`Locks::forget_member`] without waiting (on the cluster's inbox loop, in order
    /// with the operations queued after it); `false` if the queue is full.
    pub fn try_forget_member(&self, member: u64) -> bool {
        self.tx.try_send(Input::ForgetMember(member)).is_ok()
    }
}

struct Task {
    table: LockTable,
    /// Connections with locks held or requested, to deliver to.
    conns: HashMap<ConnId, Requester>,
    writer: InternalWriter,
    /// Weak, so that the task ends once every [`Locks`] handle is gone.
    me: mpsc::WeakSender<Input>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Input>) {
        loop {
            let wait = self
                .table
                .next_deadline()
                .map_or(Duration::from_hours(1), |at| {
                    Duration::from_millis(at.saturating_sub(now_ms()))
                });
            let effects = tokio::select! {
                input = rx.recv() => match input {
                    Some(input) => self.serve(input),
                    None => break,
                },
                () = tokio::time::sleep(wait) => self.table.tick(now_ms()),
            };
            self.carry_out(effects);
        }
    }

    fn serve(&mut self, input: Input) -> Vec<Effect> {
        let now = now_ms();
        match input {
            Input::Request {
                conn,
                request_id,
                name,
                ttl,
            } => {
                let id = conn.id();
                self.conns.entry(id).or_insert(conn);
                self.table.request(id, &request_id, &name, ttl, now)
            }
            Input::Release {
                conn,
                request_id,
                name,
                token,
            } => {
                let id = conn.id();
                self.conns.entry(id).or_insert(conn);
                self.table.release(id, &request_id, &name, token, now)
            }
            Input::Disconnect(conn) => {
                self.conns.remove(&conn);
                self.table.disconnect(conn, now)
            }
            Input::Reserved { through, outcome } => match outcome {
                Ok(()) => self.table.reserved(through, now),
                Err(why) => {
                    tracing::error!(%why, "fencing tokens could not be made durable");
                    self.table.reserve_failed(&why)
                }
            },
            Input::Designation(Some(floor)) => {
                self.table.raise(floor);
                Vec::new()
            }
            Input::Designation(None) => {
                // Another member holds the locks now: nothing is granted here any more.
                // Waiters are not answered (any answer but a grant reads as one, §9.6):
                // their clients' own timeouts end their waits.
                self.table = LockTable::new(self.table.high());
                self.conns.clear();
                Vec::new()
            }
            Input::ForgetMember(member) => {
                let gone: Vec<ConnId> = self
                    .conns
                    .keys()
                    .copied()
                    .filter(|id| writer_origin(*id).is_some_and(|(m, _)| m == member))
                    .collect();
                let mut effects = Vec::new();
                for id in gone {
                    self.conns.remove(&id);
                    effects.extend(self.table.disconnect(id, now));
                }
                effects
            }
        }
    }

    fn carry_out(&mut self, effects: Vec<Effect>) {
        let mut effects: std::collections::VecDeque<Effect> = effects.into();
        while let Some(effect) = effects.pop_front() {
            let (conn, msg) = match effect {
                Effect::Reserve { through } => {
                    self.reserve(through);
                    continue;
                }
                Effect::Grant {
                    conn,
                    request_id,
                    name,
                    token,
                } => {
                    // A grant that waited may go to a connection whose access changed since
                    // it asked: it is taken back (and the lock handed on) instead.
                    if !self.may_lock(conn, &name) {
                        effects.extend(self.table.revoke(conn, &name, now_ms()));
                        let refused = error::forbidden(Resource::Lock, &name, Action::Write);
                        self.deliver(conn, &refused);
                        continue;
                    }
                    (
                        conn,
                        Message::LockGranted(LockGranted {
                            request_id: request_id.into(),
                            name: name.into(),
                            fencing_token: token,
                        }),
                    )
                }
                Effect::Released {
                    conn,
                    request_id,
                    name,
                    success,
                } => (
                    conn,
                    Message::LockReleased(LockReleased {
                        request_id: request_id.into(),
                        name: name.into(),
                        success,
                    }),
                ),
                Effect::Refuse {
                    conn,
                    code,
                    message,
                } => (conn, error::error(code, message)),
            };
            self.deliver(conn, &msg);
        }
    }

    /// Whether the connection may still take the lock (at the moment of the grant).
    /// (Another member's connection was admitted there, and its member checks again.)
    fn may_lock(&self, conn: ConnId, name: &str) -> bool {
        self.conns
            .get(&conn)
            .is_none_or(|requester| match requester {
                Requester::Local(handle) => handle
                    .access()
                    .decide(Resource::Lock, name, Action::Write)
                    .allowed(),
                Requester::Remote(..) => true,
            })
    }

    /// A connection that is gone or kicked is told nothing more: its disconnect (already
    /// queued, or coming) releases what it holds.
    fn deliver(&self, conn: ConnId, msg: &Message) {
        match self.conns.get(&conn) {
            Some(Requester::Local(handle)) => {
                handle.offer(SharedFrame::from(msg.encode()));
            }
            Some(Requester::Remote(id, sink)) => {
                if let Some((_, theirs)) = writer_origin(*id) {
                    sink.deliver(theirs, &SharedFrame::from(msg.encode()));
                }
            }
            None => {}
        }
    }

    /// Persists the high-water mark off the task, then reports back.
    fn reserve(&self, through: u64) {
        let writer = self.writer.clone();
        let me = self.me.clone();
        let value = Value::Int(i64::try_from(through).unwrap_or(i64::MAX));
        let record = writer.stamp(value);
        tokio::spawn(async move {
            let outcome = writer.put(LOCKS_MAP, FENCING_KEY, record).await;
            if let Some(me) = me.upgrade() {
                let _ = me.send(Input::Reserved { through, outcome }).await;
            }
        });
    }
}
