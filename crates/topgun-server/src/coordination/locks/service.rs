//! The task that owns the [`LockTable`]: feeds it requests, releases, disconnects and
//! clock ticks, makes token reservations durable through the reserved map, and delivers
//! its answers to connections' outboxes (a grant can come long after its request, so
//! it cannot wait in the reply queue without holding up every later reply).

use std::collections::HashMap;
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
use crate::error;
use crate::security::policy::{Action, Resource};

/// Requests waiting for the lock task.
const QUEUE_LEN: usize = 1024;

#[derive(Debug)]
enum Input {
    Request {
        conn: ConnHandle,
        request_id: String,
        name: String,
        ttl: Option<u64>,
    },
    Release {
        conn: ConnHandle,
        request_id: String,
        name: String,
        token: u64,
    },
    Disconnect(ConnId),
    Reserved {
        through: u64,
        outcome: Result<(), String>,
    },
}

/// A handle on the lock task.
#[derive(Debug, Clone)]
pub struct Locks {
    tx: mpsc::Sender<Input>,
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
        Self { tx }
    }

    /// `LOCK_REQUEST`: answered later, through the connection's outbox.
    pub async fn request(&self, conn: &ConnHandle, request_id: &str, name: &str, ttl: Option<u64>) {
        let input = Input::Request {
            conn: conn.clone(),
            request_id: request_id.to_owned(),
            name: name.to_owned(),
            ttl,
        };
        let _ = self.tx.send(input).await;
    }

    /// `LOCK_RELEASE`: answered with `LOCK_RELEASED` through the outbox.
    pub async fn release(&self, conn: &ConnHandle, request_id: &str, name: &str, token: u64) {
        let input = Input::Release {
            conn: conn.clone(),
            request_id: request_id.to_owned(),
            name: name.to_owned(),
            token,
        };
        let _ = self.tx.send(input).await;
    }

    /// A connection that used locks closed.
    pub async fn disconnect(&self, conn: ConnId) {
        let _ = self.tx.send(Input::Disconnect(conn)).await;
    }
}

struct Task {
    table: LockTable,
    /// Connections with locks held or requested, to deliver to.
    conns: HashMap<ConnId, ConnHandle>,
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
                let id = conn.id;
                self.conns.entry(id).or_insert(conn);
                self.table.request(id, &request_id, &name, ttl, now)
            }
            Input::Release {
                conn,
                request_id,
                name,
                token,
            } => {
                let id = conn.id;
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
    fn may_lock(&self, conn: ConnId, name: &str) -> bool {
        self.conns.get(&conn).is_none_or(|handle| {
            handle
                .access()
                .decide(Resource::Lock, name, Action::Write)
                .allowed()
        })
    }

    /// A connection that is gone or kicked is told nothing more: its disconnect (already
    /// queued, or coming) releases what it holds.
    fn deliver(&self, conn: ConnId, msg: &Message) {
        if let Some(handle) = self.conns.get(&conn) {
            handle.offer(SharedFrame::from(msg.encode()));
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
