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
//! * In a cluster (CLUSTER.md §9) a counter lives on the member owning its name's
//!   partition (its record is in `__topgun_counters` under the name). Another member
//!   forwards requests and syncs to it ([`CounterPeers`]) and answers with the owner's
//!   durable state; each subscription counts towards the member's interest in the counter,
//!   and the owner relays every durable update to the interested members ([`CounterSink`]),
//!   which tell their subscribers — so a counter reads the same on every member.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use topgun_core::PnCounter;
use topgun_core::protocol::Message;
use topgun_core::protocol::messages::CounterState;

use crate::connection::ConnId;
use crate::connection::fanout::{ConnHandle, Outbound};
use crate::connection::outbox::SharedFrame;
use crate::coordination::internal::{COUNTERS_MAP, InternalWriter, counter_to_value};
use crate::data::forward::{Owner, writer_origin};
use crate::data::peers::{Cluster, Followed, MemberInterest, add_interest, end_interest};
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

/// A counter another member owns, as this member reaches it (cluster mode).
pub trait CounterPeers: Send + Sync + std::fmt::Debug {
    /// The member owning `name`'s partition, when it is not this one.
    fn owner_elsewhere(&self, name: &str) -> Option<Owner>;

    /// Asks `owner` for the counter's durable state, merging `sync` first (answered once
    /// the merged state is durable); `author` is the asking connection here. With a
    /// non-zero `follow` (this member's interest generation in the counter) the owner starts
    /// relaying the counter's updates here in the same step as it answers, so that none
    /// falls between the answer and the interest.
    fn ask(&self, owner: Owner, ask: Ask) -> BoxFuture<'static, Result<PnCounter, Refusal>>;
}

/// One ask of a counter's owner.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub name: String,
    pub sync: Option<PnCounter>,
    pub author: ConnId,
    pub follow: u64,
}

/// Where a counter's durable updates go for another member's subscribers.
pub trait CounterSink: Send + Sync + std::fmt::Debug {
    /// Sends one `COUNTER_UPDATE` frame under the receiver's interest `generation`; `except`
    /// is the syncing connection on the receiver (0: none).
    fn relay(&self, name: &str, generation: u64, except: ConnId, frame: &SharedFrame);
}

/// Another member's interest in a counter.
type Remote = MemberInterest<dyn CounterSink>;

/// A counter name's check: 1 to [`NAME_MAX_BYTES`] bytes.
pub fn checked_name(name: &str) -> Result<(), Refusal> {
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
    /// The owner (another member) answered a request or sync made here.
    Owner {
        name: String,
        sync: bool,
        answer: Result<PnCounter, Refusal>,
        reply: oneshot::Sender<Message>,
    },
    /// A durable update the owner relayed.
    Relayed {
        name: String,
        state: PnCounter,
        except: ConnId,
    },
    /// Another member asks this one, the owner: its answer is a `COUNTER_RESPONSE`, a
    /// `COUNTER_UPDATE` once durable, or an `ERROR`.
    Serve {
        name: String,
        sync: Option<PnCounter>,
        author: ConnId,
        reply: oneshot::Sender<Message>,
    },
    Interest {
        name: String,
        member: u64,
        generation: u64,
        /// `Some` begins the interest, `None` ends it.
        sink: Option<Arc<dyn CounterSink>>,
    },
    ForgetMember(u64),
}

/// A handle on the counter task.
#[derive(Debug, Clone)]
pub struct Counters {
    tx: mpsc::Sender<Input>,
    peers: Arc<OnceLock<Arc<dyn CounterPeers>>>,
}

impl Counters {
    /// Starts the task over the counters recovered from storage; in a `cluster` (set once
    /// the member starts) each subscription counts towards this member's interests.
    pub fn start(
        recovered: Vec<(String, PnCounter)>,
        writer: InternalWriter,
        cluster: Arc<OnceLock<Cluster>>,
    ) -> Self {
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
        let peers: Arc<OnceLock<Arc<dyn CounterPeers>>> = Arc::default();
        let task = Task {
            counters,
            by_conn: HashMap::new(),
            writer,
            me: tx.downgrade(),
            peers: Arc::clone(&peers),
            cluster,
            remote: HashMap::new(),
        };
        tokio::spawn(task.run(rx));
        Self { tx, peers }
    }

    /// Cluster mode: counters other members own are reached through `peers`. Set once.
    pub fn set_peers(&self, peers: Arc<dyn CounterPeers>) -> bool {
        self.peers.set(peers).is_ok()
    }

    /// Another member asks this one (the owner) for a counter's state, merging `sync`
    /// first: the answer, once durable.
    pub async fn serve(&self, name: String, sync: Option<PnCounter>, author: ConnId) -> Message {
        let (reply, answer) = oneshot::channel();
        let input = Input::Serve {
            name,
            sync,
            author,
            reply,
        };
        let stopped = || error(UNAVAILABLE, "the counter service stopped");
        if self.tx.send(input).await.is_err() {
            return stopped();
        }
        answer.await.unwrap_or_else(|_| stopped())
    }

    /// A durable update the owner relayed, for this member's subscribers but `except`.
    pub async fn relayed(&self, name: String, state: PnCounter, except: ConnId) {
        let _ = self
            .tx
            .send(Input::Relayed {
                name,
                state,
                except,
            })
            .await;
    }

    /// Like [`Counters::relayed`] without waiting (on the cluster's inbox loop): a full
    /// queue drops the update, which the next one (the whole state again) makes good.
    pub fn try_relayed(&self, name: String, state: PnCounter, except: ConnId) {
        let _ = self.tx.try_send(Input::Relayed {
            name,
            state,
            except,
        });
    }

    /// Another member's interest in a counter began (`sink`) or ended.
    pub async fn interest(
        &self,
        name: String,
        member: u64,
        generation: u64,
        sink: Option<Arc<dyn CounterSink>>,
    ) {
        let input = Input::Interest {
            name,
            member,
            generation,
            sink,
        };
        let _ = self.tx.send(input).await;
    }

    /// A member left the cluster: relay it nothing more.
    pub async fn forget_member(&self, member: u64) {
        let _ = self.tx.send(Input::ForgetMember(member)).await;
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
    /// Cluster mode: where counters other members own are asked.
    peers: Arc<OnceLock<Arc<dyn CounterPeers>>>,
    /// Cluster mode: this member's interests, which each subscription counts towards.
    cluster: Arc<OnceLock<Cluster>>,
    /// Other members interested in each counter owned here.
    remote: HashMap<String, Vec<Remote>>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Input>) {
        while let Some(input) = rx.recv().await {
            let Some(input) = self.forwarded(input) else {
                continue;
            };
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
                other => self.cluster_input(other),
            }
        }
    }

    /// A request or sync of a counter another member owns: subscribed here, then asked of
    /// the owner off the task (`None`). Anything else is returned to be served here.
    fn forwarded(&mut self, input: Input) -> Option<Input> {
        let (conn, name, sync, reply) = match input {
            Input::Request { conn, name, reply } => (conn, name, None, reply),
            Input::Sync {
                conn,
                name,
                state,
                reply,
            } => (conn, name, Some(state), reply),
            other => return Some(other),
        };
        let owner = self.peers.get().cloned();
        let owner = owner.and_then(|p| Some((p.owner_elsewhere(&name)?, p)));
        let Some((owner, peers)) = owner else {
            return Some(match sync {
                Some(state) => Input::Sync {
                    conn,
                    name,
                    state,
                    reply,
                },
                None => Input::Request { conn, name, reply },
            });
        };
        if let Err((code, why)) = self.subscribe(&conn, &name) {
            let _ = reply.send(error(code, why));
            return None;
        }
        let follow = self.cluster.get().map_or(0, |c| {
            c.interests
                .generation(Followed::Counter, &name)
                .unwrap_or(0)
        });
        let ask = Ask {
            name: name.clone(),
            sync: sync.clone(),
            author: conn.id,
            follow,
        };
        let asked = peers.ask(owner, ask);
        let me = self.me.clone();
        tokio::spawn(async move {
            let answer = asked.await;
            if let Some(me) = me.upgrade() {
                let sync = sync.is_some();
                let input = Input::Owner {
                    name,
                    sync,
                    answer,
                    reply,
                };
                let _ = me.send(input).await;
            }
        });
        None
    }

    /// What the cluster brings: owners' answers and relays, other members' asks and
    /// interests.
    fn cluster_input(&mut self, input: Input) {
        match input {
            Input::Owner {
                name,
                sync,
                answer,
                reply,
            } => {
                let answer = answer.map(|mut theirs| {
                    // Cached only while someone here listens (the asker may be gone by now).
                    if let Some(counter) = self.counters.get_mut(&name) {
                        let _ = counter.durable.merge(&theirs);
                        let _ = counter.current.merge(&theirs);
                        theirs = counter.durable.clone();
                    }
                    let state = state(&name, &theirs);
                    if sync {
                        Message::CounterUpdate(state)
                    } else {
                        Message::CounterResponse(state)
                    }
                });
                let _ = reply.send(answer.unwrap_or_else(|(code, why)| error(code, why)));
            }
            Input::Relayed {
                name,
                state: theirs,
                except,
            } => self.relayed(&name, &theirs, except),
            Input::Serve {
                name,
                sync,
                author,
                reply,
            } => self.serve(&name, sync, author, reply),
            Input::Interest {
                name,
                member,
                generation,
                sink,
            } => self.interest(&name, member, generation, sink),
            Input::ForgetMember(member) => self.remote.retain(|_, list| {
                list.retain(|r| r.member != member);
                !list.is_empty()
            }),
            _ => unreachable!("served by `run`"),
        }
    }

    /// The owner's durable update: merged into what this member knows, told to its
    /// subscribers but the one whose sync it answers (who was answered already).
    fn relayed(&mut self, name: &str, theirs: &PnCounter, except: ConnId) {
        let Some(counter) = self.counters.get_mut(name) else {
            return; // nobody here listens any more
        };
        let _ = counter.durable.merge(theirs);
        let _ = counter.current.merge(theirs);
        let update = Message::CounterUpdate(state(name, &counter.durable));
        offer(
            name,
            &mut counter.subscribers,
            &SharedFrame::from(update.encode()),
            |id| id == except,
        );
    }

    /// Another member's ask of a counter owned here: answered at once, or (a sync) once
    /// its merged state is durable.
    fn serve(
        &mut self,
        name: &str,
        sync: Option<PnCounter>,
        author: ConnId,
        reply: oneshot::Sender<Message>,
    ) {
        if let Err((code, why)) = checked_name(name) {
            let _ = reply.send(error(code, why));
            return;
        }
        if let Some(incoming) = sync {
            let _ = self.merge_in(name, author, &incoming, reply);
        } else {
            let durable = self.counters.get(name).map(|c| c.durable.clone());
            let answer = state(name, &durable.unwrap_or_default());
            let _ = reply.send(Message::CounterResponse(answer));
        }
    }

    fn interest(
        &mut self,
        name: &str,
        member: u64,
        generation: u64,
        sink: Option<Arc<dyn CounterSink>>,
    ) {
        let list = self.remote.entry(name.to_owned()).or_default();
        match sink {
            Some(sink) => {
                let interest = Remote {
                    member,
                    generation,
                    sink,
                };
                add_interest(list, interest);
            }
            None => end_interest(list, member, generation),
        }
        if list.is_empty() {
            self.remote.remove(name);
        }
    }

    /// Counts a subscription begun (`on`) or ended towards this member's interests.
    fn follow(&self, name: &str, on: bool) {
        if let Some(cluster) = self.cluster.get() {
            let peers = cluster.peers.as_ref();
            if on {
                cluster.interests.join(peers, Followed::Counter, name);
            } else {
                cluster.interests.leave(peers, Followed::Counter, name);
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
            self.follow(name, true);
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
        if let Err((code, why)) = self.subscribe(conn, name) {
            let _ = reply.send(error(code, why.clone()));
            return Err((code, why));
        }
        self.merge_in(name, conn.id, incoming, reply)
    }

    /// Merges `author`'s state into the counter; the answer waits for durability.
    fn merge_in(
        &mut self,
        name: &str,
        author: ConnId,
        incoming: &PnCounter,
        reply: oneshot::Sender<Message>,
    ) -> Result<(), Refusal> {
        let counter = self.counters.entry(name.to_owned()).or_default();
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
        let counter = self.counters.get_mut(name).expect("merged above");
        if counter.durable_generation >= counter.generation {
            let _ = reply.send(Message::CounterUpdate(state(name, &counter.durable)));
        } else {
            counter.waiting.push((counter.generation, author, reply));
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
        offer(name, &mut counter.subscribers, &frame, |id| {
            answered.contains(&id)
        });
        for r in self.remote.get(name).into_iter().flatten() {
            // The member whose connection synced is told which one: it was answered.
            let except = answered
                .iter()
                .find_map(|a| writer_origin(*a).filter(|(m, _)| *m == r.member))
                .map_or(0, |(_, conn)| conn);
            r.sink.relay(name, r.generation, except, &frame);
        }
    }

    /// Drops a closed connection's subscriptions, and the counters it only asked about:
    /// a counter nobody listens to and nobody ever wrote is not kept (so requests for
    /// made-up names cannot pile up).
    fn forget(&mut self, conn: ConnId) {
        for name in self.by_conn.remove(&conn).unwrap_or_default() {
            self.follow(&name, false);
            if let Some(counter) = self.counters.get_mut(&name) {
                counter.subscribers.retain(|c| c.id != conn);
                // A counter another member owns is only a cache for subscribers here.
                let elsewhere = self
                    .peers
                    .get()
                    .is_some_and(|p| p.owner_elsewhere(&name).is_some());
                let unused = counter.subscribers.is_empty()
                    && (elsewhere
                        || counter.generation == 0 && counter.durable == PnCounter::new());
                if unused {
                    self.counters.remove(&name);
                }
            }
        }
    }
}

/// Offers a `COUNTER_UPDATE` frame to the subscribers `skip` does not name (and that may
/// read the counter); forgets those that are gone or were kicked.
fn offer(
    name: &str,
    subscribers: &mut Vec<ConnHandle>,
    frame: &SharedFrame,
    skip: impl Fn(ConnId) -> bool,
) {
    subscribers.retain(|conn| {
        let may_read = || {
            conn.access()
                .decide(Resource::Counter, name, Action::Read)
                .allowed()
        };
        skip(conn.id)
            || !may_read()
            || !matches!(
                conn.offer(frame.clone()),
                crate::connection::fanout::Offer::Gone | crate::connection::fanout::Offer::Kicked
            )
    });
}
