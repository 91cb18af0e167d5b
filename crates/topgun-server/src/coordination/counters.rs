//! PN counters (PROTOCOL §4.10, with the state spellings of §9.1): one task owns every
//! counter, merges clients' states by per-node maximum, makes each merged state durable in
//! the reserved map `__topgun_counters`, and only then answers and tells the subscribers.
//!
//! * `COUNTER_REQUEST` answers `COUNTER_RESPONSE` with the counter's durable state (a
//!   counter never written reads as empty) and subscribes the caller.
//! * `COUNTER_SYNC` merges, subscribes the caller, and once the merged state is durable
//!   answers the caller with `COUNTER_UPDATE` and sends it to every other subscriber. A
//!   sync that changes nothing is answered once the writes before it are durable.
//! * Answers are never older than the durable state, so a crash cannot take back a value
//!   a client has seen. The wire state carries both `{p, n}` and `{positive, negative}`.

use std::collections::{HashMap, HashSet};

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};
use topgun_core::PnCounter;
use topgun_core::protocol::Message;
use topgun_core::protocol::messages::CounterState;

use crate::connection::ConnId;
use crate::connection::fanout::{ConnHandle, Outbound};
use crate::connection::outbox::SharedFrame;
use crate::coordination::internal::{COUNTERS_MAP, InternalWriter, counter_to_value};
use crate::error::code::{BAD_REQUEST, TOO_LARGE, TOO_MANY, UNAVAILABLE};
use crate::error::error;
use crate::security::policy::{Action, Resource};

/// Requests waiting for the counter task.
const QUEUE_LEN: usize = 1024;
/// Counters one connection may subscribe to.
pub const PER_CONNECTION_MAX: usize = 1024;
/// Longest counter name, in bytes.
pub const NAME_MAX_BYTES: usize = 256;
/// Nodes one counter may count (each side); a sync that would add more is refused, so no
/// client can grow a counter's state — and every update of it — without bound.
pub const NODES_MAX: usize = 1024;

/// Why a request was refused: an `ERROR` code and message.
type Refusal = (u32, String);

/// One counter: what is merged, what is durable, and who listens.
#[derive(Debug, Default)]
struct Counter {
    current: PnCounter,
    durable: PnCounter,
    /// Generation of `current`; each merge that changes it adds one.
    generation: u64,
    durable_generation: u64,
    /// Syncs waiting for a generation to be durable: (generation, connection, answer).
    waiting: Vec<(u64, ConnId, oneshot::Sender<Message>)>,
    subscribers: Vec<ConnHandle>,
}

fn checked_name(name: &str) -> Result<(), Refusal> {
    if name.is_empty() || name.len() > NAME_MAX_BYTES {
        return Err((
            BAD_REQUEST,
            format!("counter name must be 1 to {NAME_MAX_BYTES} bytes long"),
        ));
    }
    Ok(())
}

fn state(name: &str, counter: &PnCounter) -> CounterState {
    CounterState {
        name: name.into(),
        state: counter.clone(),
    }
}

#[derive(Debug)]
enum Input {
    Request {
        conn: ConnHandle,
        name: String,
        reply: oneshot::Sender<Message>,
    },
    Sync {
        conn: ConnHandle,
        name: String,
        state: PnCounter,
        reply: oneshot::Sender<Message>,
    },
    Persisted {
        name: String,
        generation: u64,
        state: PnCounter,
        outcome: Result<(), String>,
    },
    Disconnect(ConnId),
}

/// A handle on the counter task.
#[derive(Debug, Clone)]
pub struct Counters {
    tx: mpsc::Sender<Input>,
}

impl Counters {
    /// Starts the task over the counters recovered from storage.
    pub fn start(recovered: Vec<(String, PnCounter)>, writer: InternalWriter) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_LEN);
        let counters = recovered
            .into_iter()
            .map(|(name, c)| {
                let counter = Counter {
                    current: c.clone(),
                    durable: c,
                    ..Counter::default()
                };
                (name, counter)
            })
            .collect();
        let task = Task {
            counters,
            by_conn: HashMap::new(),
            writer,
            me: tx.downgrade(),
        };
        tokio::spawn(task.run(rx));
        Self { tx }
    }

    /// `COUNTER_REQUEST`: the reply, in request order.
    pub async fn request(&self, conn: &ConnHandle, name: &str) -> Outbound {
        let (reply, answer) = oneshot::channel();
        let input = Input::Request {
            conn: conn.clone(),
            name: name.to_owned(),
            reply,
        };
        self.ask(input, answer).await
    }

    /// `COUNTER_SYNC`: the reply, in request order, once the merged state is durable.
    pub async fn sync(&self, conn: &ConnHandle, msg: CounterState) -> Outbound {
        let (reply, answer) = oneshot::channel();
        let input = Input::Sync {
            conn: conn.clone(),
            name: msg.name.to_string(),
            state: msg.state,
            reply,
        };
        self.ask(input, answer).await
    }

    async fn ask(&self, input: Input, answer: oneshot::Receiver<Message>) -> Outbound {
        let stopped = || error(UNAVAILABLE, "the counter service stopped");
        if self.tx.send(input).await.is_err() {
            return Outbound::Message(Box::new(stopped()));
        }
        Outbound::Later(async move { vec![answer.await.unwrap_or_else(|_| stopped())] }.boxed())
    }

    /// A connection that used counters closed.
    pub async fn disconnect(&self, conn: ConnId) {
        let _ = self.tx.send(Input::Disconnect(conn)).await;
    }
}

struct Task {
    counters: HashMap<String, Counter>,
    /// Counters each connection subscribes to.
    by_conn: HashMap<ConnId, HashSet<String>>,
    writer: InternalWriter,
    me: mpsc::WeakSender<Input>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Input>) {
        while let Some(input) = rx.recv().await {
            match input {
                Input::Request { conn, name, reply } => {
                    let answer = self
                        .subscribe(&conn, &name)
                        .map(|counter| Message::CounterResponse(state(&name, &counter.durable)));
                    let _ = reply.send(answer.unwrap_or_else(|(code, why)| error(code, why)));
                }
                Input::Sync {
                    conn,
                    name,
                    state,
                    reply,
                } => {
                    if let Err((code, why)) = self.sync(&conn, &name, &state, reply) {
                        tracing::debug!(code, %why, "counter sync refused");
                    }
                }
                Input::Persisted {
                    name,
                    generation,
                    state,
                    outcome,
                } => self.persisted(&name, generation, state, outcome),
                Input::Disconnect(conn) => self.forget(conn),
            }
        }
    }

    /// Subscribes `conn` to the counter (creating it empty).
    fn subscribe(&mut self, conn: &ConnHandle, name: &str) -> Result<&mut Counter, Refusal> {
        checked_name(name)?;
        let names = self.by_conn.entry(conn.id).or_default();
        if !names.contains(name) {
            if names.len() >= PER_CONNECTION_MAX {
                return Err((
                    TOO_MANY,
                    format!(
                        "this connection already uses {PER_CONNECTION_MAX} counters, the most \
                         allowed; counter {name:?} is not served"
                    ),
                ));
            }
            names.insert(name.to_owned());
            let counter = self.counters.entry(name.to_owned()).or_default();
            counter.subscribers.push(conn.clone());
        }
        Ok(self.counters.entry(name.to_owned()).or_default())
    }

    /// Merges a client's state; the answer waits for durability.
    fn sync(
        &mut self,
        conn: &ConnHandle,
        name: &str,
        incoming: &PnCounter,
        reply: oneshot::Sender<Message>,
    ) -> Result<(), Refusal> {
        let counter = match self.subscribe(conn, name) {
            Ok(counter) => counter,
            Err((code, why)) => {
                let _ = reply.send(error(code, why.clone()));
                return Err((code, why));
            }
        };
        let new_nodes = |ours: &std::collections::BTreeMap<String, f64>,
                         theirs: &std::collections::BTreeMap<String, f64>| {
            ours.len() + theirs.keys().filter(|k| !ours.contains_key(*k)).count()
        };
        let current = &counter.current;
        if new_nodes(current.positive(), incoming.positive()) > NODES_MAX
            || new_nodes(current.negative(), incoming.negative()) > NODES_MAX
        {
            let why = format!("counter {name:?} may count at most {NODES_MAX} nodes");
            let _ = reply.send(error(TOO_LARGE, why.clone()));
            return Err((TOO_LARGE, why));
        }
        let changed = match counter.current.merge(incoming) {
            Ok(changed) => changed,
            Err(e) => {
                let why = format!("counter {name:?}: {e}");
                let _ = reply.send(error(BAD_REQUEST, why.clone()));
                return Err((BAD_REQUEST, why));
            }
        };
        if changed {
            counter.generation += 1;
            let (generation, merged) = (counter.generation, counter.current.clone());
            self.persist(name, generation, merged);
        }
        let counter = self.counters.get_mut(name).expect("subscribed above");
        if counter.durable_generation >= counter.generation {
            let _ = reply.send(Message::CounterUpdate(state(name, &counter.durable)));
        } else {
            counter.waiting.push((counter.generation, conn.id, reply));
        }
        Ok(())
    }

    /// Writes a merged state off the task, then reports back.
    fn persist(&self, name: &str, generation: u64, merged: PnCounter) {
        let record = self.writer.stamp(counter_to_value(&merged));
        let (writer, me, name) = (self.writer.clone(), self.me.clone(), name.to_owned());
        tokio::spawn(async move {
            let outcome = writer.put(COUNTERS_MAP, &name, record).await;
            if let Some(me) = me.upgrade() {
                let input = Input::Persisted {
                    name,
                    generation,
                    state: merged,
                    outcome,
                };
                let _ = me.send(input).await;
            }
        });
    }

    /// A merged state is durable (or could not be made so): answers the syncs it covers
    /// and tells the other subscribers.
    fn persisted(
        &mut self,
        name: &str,
        generation: u64,
        merged: PnCounter,
        outcome: Result<(), String>,
    ) {
        let Some(counter) = self.counters.get_mut(name) else {
            return;
        };
        // Writes of one counter may report back out of order; a later generation's state
        // includes every earlier one's.
        let covered = |(g, _, _): &(u64, ConnId, oneshot::Sender<Message>)| *g <= generation;
        let (settled, still): (Vec<_>, Vec<_>) = std::mem::take(&mut counter.waiting)
            .into_iter()
            .partition(covered);
        counter.waiting = still;
        if let Err(why) = outcome {
            tracing::error!(counter = name, %why, "a counter state could not be made durable");
            for (_, _, reply) in settled {
                let why = format!("counter {name:?} could not be made durable: {why}");
                let _ = reply.send(error(UNAVAILABLE, why));
            }
            return;
        }
        if generation <= counter.durable_generation {
            return;
        }
        counter.durable = merged;
        counter.durable_generation = generation;
        let update = Message::CounterUpdate(state(name, &counter.durable));
        let answered: HashSet<ConnId> = settled.iter().map(|(_, conn, _)| *conn).collect();
        for (_, _, reply) in settled {
            let _ = reply.send(update.clone());
        }
        let frame = SharedFrame::from(update.encode());
        counter.subscribers.retain(|conn| {
            let may_read = || {
                conn.access()
                    .decide(Resource::Counter, name, Action::Read)
                    .allowed()
            };
            answered.contains(&conn.id)
                || !may_read()
                || !matches!(
                    conn.offer(frame.clone()),
                    crate::connection::fanout::Offer::Gone
                        | crate::connection::fanout::Offer::Kicked
                )
        });
    }

    /// Drops a closed connection's subscriptions, and the counters it only asked about:
    /// a counter nobody listens to and nobody ever wrote is not kept (so requests for
    /// made-up names cannot pile up).
    fn forget(&mut self, conn: ConnId) {
        for name in self.by_conn.remove(&conn).unwrap_or_default() {
            if let Some(counter) = self.counters.get_mut(&name) {
                counter.subscribers.retain(|c| c.id != conn);
                let unused = counter.subscribers.is_empty()
                    && counter.generation == 0
                    && counter.durable == PnCounter::new();
                if unused {
                    self.counters.remove(&name);
                }
            }
        }
    }
}
