//! Cross-node reads and event relays (CLUSTER.md §9): the data path's [`Peers`], and the
//! services that answer other members.
//!
//! * **Reads** (`FWD_READ`, a request on the data channel): the entry member asks every
//!   other live member for its part under the table it routes by; each answers for the
//!   partitions it owns, once its own table is at least that new. An answer under another
//!   table means ownership moved meanwhile, and the entry member reads again
//!   ([`GatherError::Moved`]).
//! * **Interest** (`INTEREST`, a request): a member tells every other one when its interest
//!   in a map begins and ends; each then relays (or stops relaying) the map's events to it,
//!   in every shard. A read that follows a map starts the relay in the same shard step as
//!   its sums.
//! * **Topics** (`TOPIC_RELAY`, one-way on the data channel): a publication is relayed, encoded
//!   once, to every member interested in the topic, which delivers it to its subscribers.
//!   Best-effort, as on one node: no numbering.
//! * **Relays** (`EVENT_RELAY`, one-way on the data channel): an owner's shard hands each
//!   event frame, encoded once, to the [`RelayLink`] of every interested member, which
//!   numbers it. The receiver offers it to its subscribers through one shard per map, so a
//!   map's relayed events keep their order. A gap in the numbers (a frame lost to a broken or
//!   full link) closes the receiver's followers of relayed maps, who resync: nothing is
//!   silently missed. A relay under an interest that has ended is answered with its end.
//!
//! Invariant: every queue is bounded — relays wait in the link's queue and in
//! [`INBOUND_MAX`] frames here; past either, frames are dropped and counted, and the gap
//! is detected as above.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use topgun_cluster::ids::RaftId;

use super::frame::Frame;
use super::hello::{Channel, PeerIdentity};
use super::read_wire::{
    InterestWire, ReadRequest, RelayWire, TopicRelayWire, decode_answer, encode_answer,
};
use super::routes::{Routes, RoutesWatch};
use super::rpc::Rpc;
use crate::connection::ConnId;
use crate::connection::fanout::{Relay, RelaySink};
use crate::connection::outbox::SharedFrame;
use crate::coordination::topics::TopicSink;
use crate::data::peers::{Followed, GatherError, Local, Owned, Peers, Read, ReadPart};
use crate::data::plane::DataPlane;
use crate::data::shard::service::Request;
use crate::metrics::cluster::RelayStats;
use crate::storage::store::MapKind;

/// The service id of a read.
pub const FWD_READ: u8 = 11;
/// The service id of an interest.
pub const INTEREST: u8 = 12;
/// The message kind of a relayed event.
pub const EVENT_RELAY: u8 = 17;
/// The message kind of a relayed topic message.
pub const TOPIC_RELAY: u8 = 18;

/// How long one member's part of a read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an owner waits to learn the table a read was routed by.
const TABLE_CATCH_UP: Duration = Duration::from_secs(2);
/// Relayed frames waiting to be handed to the shards.
pub const INBOUND_MAX: usize = 16_384;
/// Tries of one interest message.
const INTEREST_ATTEMPTS: usize = 3;
/// Interest messages in flight at once.
const INTERESTS_IN_FLIGHT: usize = 1024;

/// A relayed frame on its way to the shards.
struct Inbound {
    from: PeerIdentity,
    relay: RelayWire,
}

/// This member's side of cross-node reads and relays.
pub struct Reads {
    pub(super) rpc: Arc<Rpc>,
    routes: RoutesWatch,
    data: Weak<DataPlane>,
    /// The link each interested member's relays go through, by (Raft id, incarnation).
    /// One per member: a new incarnation (a restart) replaces its old one's, whose
    /// numbering ends with it.
    links: Mutex<HashMap<u64, (u128, Arc<RelayLink>)>>,
    inbound: mpsc::Sender<Inbound>,
    /// A relayed frame was dropped here: the next one handled closes the followers.
    lost: AtomicBool,
    /// Bounds the interest messages in flight (each waits for its member's answer).
    interest_sends: Arc<tokio::sync::Semaphore>,
    /// The incarnation each member's lock operations last came from.
    pub(super) lock_users: Mutex<HashMap<u64, u128>>,
    pub stats: Arc<RelayStats>,
}

impl std::fmt::Debug for Reads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reads").finish_non_exhaustive()
    }
}

impl Reads {
    /// Whether the applied table lists member `id` at cluster address `addr`.
    pub(super) fn listed_at(&self, id: u64, addr: &str) -> bool {
        self.routes
            .borrow()
            .as_ref()
            .and_then(|r| r.addr(RaftId(id)))
            == Some(addr)
    }

    /// Starts the tasks that deliver relayed frames and follow membership; they end when
    /// the returned value is dropped.
    pub fn start(rpc: Arc<Rpc>, routes: RoutesWatch, data: Weak<DataPlane>) -> Arc<Self> {
        let (inbound, frames) = mpsc::channel(INBOUND_MAX);
        let reads = Arc::new(Self {
            rpc,
            routes,
            data,
            links: Mutex::default(),
            inbound,
            lost: AtomicBool::new(false),
            interest_sends: Arc::new(tokio::sync::Semaphore::new(INTERESTS_IN_FLIGHT)),
            lock_users: Mutex::default(),
            stats: Arc::default(),
        });
        tokio::spawn(deliver(Arc::downgrade(&reads), frames));
        tokio::spawn(follow_members(Arc::downgrade(&reads)));
        let designation =
            super::locks::follow_designation(Arc::downgrade(&reads), reads.routes.clone());
        tokio::spawn(designation);
        reads
    }

    fn current(&self) -> Option<Arc<Routes>> {
        self.routes.borrow().clone()
    }

    /// The routes as applied here.
    pub(super) fn routes(&self) -> RoutesWatch {
        self.routes.clone()
    }

    /// The other live members and their addresses.
    fn others(&self) -> Vec<(RaftId, String)> {
        self.current()
            .map(|r| {
                let me = r.me;
                r.members().filter(|(id, _)| *id != me).collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn link(&self, member: u64, peer: &PeerIdentity) -> Arc<RelayLink> {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        match links.get(&member) {
            Some((incarnation, link)) if *incarnation == peer.incarnation => Arc::clone(link),
            _ => {
                let link = Arc::new(RelayLink {
                    rpc: Arc::clone(&self.rpc),
                    addr: peer.addr.clone(),
                    seq: Mutex::new(0),
                    stats: Arc::clone(&self.stats),
                });
                links.insert(member, (peer.incarnation, Arc::clone(&link)));
                link
            }
        }
    }

    /// Serves a read from another member.
    pub async fn serve_read(&self, from: PeerIdentity, body: Bytes) -> Result<Bytes, String> {
        let request = ReadRequest::decode(&body)?;
        let mut routes = self.routes.clone();
        let caught_up =
            routes.wait_for(|r| r.as_ref().is_some_and(|r| r.version >= request.version));
        let _ = tokio::time::timeout(TABLE_CATCH_UP, caught_up).await;
        let Some(current) = self.current() else {
            return Ok(encode_answer(0, None));
        };
        if current.version != request.version {
            return Ok(encode_answer(current.version, None));
        }
        let relay = (request.follow != 0).then(|| Relay {
            member: request.member,
            generation: request.follow,
            sink: self.link(request.member, &from),
        });
        let local = Local {
            owned: Some(current.owned_set()),
            subscribe: None,
            relay,
        };
        let data = self.data.upgrade().ok_or("the member is stopping")?;
        let part = data.read_for_member(request.read, local).await;
        let part = part.map_err(|e| e.to_string())?.await;
        let part = part.ok_or("the member is stopping")?;
        Ok(encode_answer(current.version, Some(&part)))
    }

    /// Serves another member's interest: every shard starts or stops relaying the map, or
    /// the topics start or stop relaying the topic.
    pub async fn serve_interest(&self, from: PeerIdentity, body: Bytes) -> Result<Bytes, String> {
        let interest: InterestWire = super::wire::decode(&body)?;
        let data = self.data.upgrade().ok_or("the member is stopping")?;
        let kind = match interest.followed()? {
            Followed::Map(kind) => kind,
            Followed::Counter => {
                let (name, member) = (interest.name.clone(), interest.member);
                let sink = interest.on.then(|| {
                    let sink: Arc<dyn crate::coordination::counters::CounterSink> =
                        self.link(member, &from);
                    sink
                });
                data.counters()
                    .interest(name, member, interest.generation, sink)
                    .await;
                return Ok(Bytes::new());
            }
            Followed::Topic => {
                let (topic, member) = (&interest.name, interest.member);
                if interest.on {
                    let sink = self.link(member, &from);
                    data.topics()
                        .add_remote(topic, member, interest.generation, sink);
                } else {
                    data.topics()
                        .remove_remote(topic, member, interest.generation);
                }
                return Ok(Bytes::new());
            }
        };
        let told = if interest.on {
            let relay = Relay {
                member: interest.member,
                generation: interest.generation,
                sink: self.link(interest.member, &from),
            };
            let map = interest.name;
            data.tell_shards(|| Request::Relay {
                kind,
                map: map.clone(),
                relay: relay.clone(),
            })
            .await
        } else {
            let (map, member, generation) = (interest.name, interest.member, interest.generation);
            data.tell_shards(|| Request::Unrelay {
                kind,
                map: map.clone(),
                member,
                generation,
            })
            .await
        };
        told.map_err(|e| e.to_string())?;
        Ok(Bytes::new())
    }

    /// A relayed event frame arrived (on the inbox loop: queued, never awaited).
    pub fn on_relay(&self, from: PeerIdentity, frame: Frame) {
        let relay = match RelayWire::decode(frame.body) {
            Ok(relay) => relay,
            Err(why) => {
                tracing::warn!(peer = %from.name, %why, "a relayed event dropped");
                return;
            }
        };
        if self.inbound.try_send(Inbound { from, relay }).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            self.lost.store(true, Ordering::Relaxed);
        }
    }

    /// A relayed topic message arrived (on the inbox loop: delivered without waiting).
    pub fn on_topic(&self, from: &PeerIdentity, frame: Frame) {
        let relay = match TopicRelayWire::decode(frame.body) {
            Ok(relay) => relay,
            Err(why) => {
                tracing::warn!(peer = %from.name, %why, "a relayed topic message dropped");
                return;
            }
        };
        let Some(data) = self.data.upgrade() else {
            return;
        };
        let Some(interests) = data.interests() else {
            return;
        };
        if interests.generation(Followed::Topic, &relay.topic) != Some(relay.generation) {
            let end = InterestWire::new(
                self.me(),
                Followed::Topic,
                &relay.topic,
                relay.generation,
                false,
            );
            self.send_interest(from.addr.clone(), end);
            return;
        }
        let frame = SharedFrame::from(relay.frame.to_vec());
        // The publisher is on another member: every local subscriber hears of it.
        data.topics().deliver(&relay.topic, 0, &frame);
    }

    /// This member's data path, while it runs.
    pub fn data(&self) -> Option<Arc<DataPlane>> {
        self.data.upgrade()
    }

    /// Tells `from` that this member's interest `generation` in `name` has ended (it
    /// relayed under one that is over).
    pub fn end_interest(
        &self,
        from: &PeerIdentity,
        followed: Followed,
        name: &str,
        generation: u64,
    ) {
        let end = InterestWire::new(self.me(), followed, name, generation, false);
        self.send_interest(from.addr.clone(), end);
    }

    /// Sends `interest` to the member at `addr`, retried a few times (it is idempotent).
    fn send_interest(&self, addr: String, interest: InterestWire) {
        let Ok(permit) = Arc::clone(&self.interest_sends).try_acquire_owned() else {
            // Too many in flight (a member is down and every call waits): the start of an
            // interest that cannot be told costs its followers a resync, never an event.
            self.interest_lost(&interest);
            return;
        };
        let (rpc, data) = (Arc::clone(&self.rpc), self.data.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let body = super::wire::encode(&interest);
            for attempt in 1..=INTEREST_ATTEMPTS {
                let reply = rpc
                    .call(&addr, Channel::Data, INTEREST, &body, READ_TIMEOUT)
                    .await;
                match reply {
                    Ok(_) => return,
                    Err(e) if attempt == INTEREST_ATTEMPTS => {
                        tracing::warn!(peer = %addr, name = %interest.name, error = %e,
                            "a member was not told of an interest");
                        if let Some(data) = data.upgrade() {
                            kick_if_map(&data, &interest).await;
                        }
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
    }

    /// An interest that could not be told: see [`kick_if_map`].
    fn interest_lost(&self, interest: &InterestWire) {
        tracing::warn!(name = %interest.name, "too many interests in flight: one not told");
        let (data, interest) = (self.data.clone(), interest.clone());
        tokio::spawn(async move {
            if let Some(data) = data.upgrade() {
                kick_if_map(&data, &interest).await;
            }
        });
    }

    fn me(&self) -> u64 {
        self.current().map_or(0, |r| r.me.0)
    }
}

impl Peers for Reads {
    fn owned(&self) -> Option<Owned> {
        self.current().map(|r| Owned {
            version: r.version,
            parts: r.owned_set(),
            cluster: r.uuid,
        })
    }

    fn catch_up(&self, version: u64) -> BoxFuture<'static, ()> {
        let mut routes = self.routes.clone();
        async move {
            let newer = routes.wait_for(|r| r.as_ref().is_some_and(|r| r.version >= version));
            let _ = tokio::time::timeout(TABLE_CATCH_UP, newer).await;
        }
        .boxed()
    }

    fn gather(
        &self,
        read: Read,
        version: u64,
        follow: u64,
    ) -> BoxFuture<'static, Result<Vec<ReadPart>, GatherError>> {
        let request = ReadRequest {
            version,
            member: self.me(),
            follow,
            read,
        };
        let body = Bytes::from(request.encode());
        let asks: Vec<_> = self
            .others()
            .into_iter()
            .map(|(_, addr)| ask(Arc::clone(&self.rpc), addr, body.clone()))
            .collect();
        async move { combine(version, futures_util::future::join_all(asks).await) }.boxed()
    }

    fn interest(&self, followed: Followed, name: &str, generation: u64, on: bool) {
        let interest = InterestWire::new(self.me(), followed, name, generation, on);
        for (_, addr) in self.others() {
            self.send_interest(addr, interest.clone());
        }
    }
}

/// When a member was not told that this one's interest in a map began, it relays nothing
/// of the map here: its local followers are closed (`relay_gap`) and resync, rather than
/// miss its events unawares. (Topics are best-effort; a counter's next update is whole.)
async fn kick_if_map(data: &DataPlane, interest: &InterestWire) {
    if let (true, Ok(Followed::Map(kind))) = (interest.on, interest.followed()) {
        let _ = data.kick_followers(kind, interest.name.clone()).await;
    }
}

/// Asks the member at `addr` for its part of a read.
async fn ask(rpc: Arc<Rpc>, addr: String, body: Bytes) -> Result<(u64, Option<ReadPart>), String> {
    let reply = rpc
        .call(&addr, Channel::Data, FWD_READ, &body, READ_TIMEOUT)
        .await;
    let reply = reply.map_err(|e| format!("a member did not answer a read ({e}); try again"))?;
    decode_answer(reply)
}

/// Every member's answer as one gather: the parts, if all were read under `version`.
fn combine(
    version: u64,
    answers: Vec<Result<(u64, Option<ReadPart>), String>>,
) -> Result<Vec<ReadPart>, GatherError> {
    let mut parts = Vec::with_capacity(answers.len());
    let mut moved = None;
    for answer in answers {
        match answer.map_err(GatherError::Failed)? {
            (theirs, Some(part)) if theirs == version => parts.push(part),
            (theirs, _) => moved = Some(moved.unwrap_or(version).max(theirs)),
        }
    }
    match moved {
        Some(newest) => Err(GatherError::Moved(newest)),
        None => Ok(parts),
    }
}

/// Where one interested member's relays go: numbered, so that it can tell a gap.
#[derive(Debug)]
pub struct RelayLink {
    rpc: Arc<Rpc>,
    addr: String,
    seq: Mutex<u64>,
    stats: Arc<RelayStats>,
}

impl RelayLink {
    /// Queues a one-way frame to the member; whether the link took it.
    pub fn send(&self, kind: u8, body: Bytes) -> bool {
        let sent = self
            .rpc
            .send(&self.addr, Channel::Data, Frame::new(kind, body));
        let counter = match (sent.is_ok(), kind) {
            (false, _) => &self.stats.dropped,
            (true, super::locks::LOCK_DELIVER) => &self.stats.locks_sent,
            (true, _) => &self.stats.counters_sent,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        sent.is_ok()
    }
}

impl TopicSink for RelayLink {
    fn relay(&self, topic: &str, generation: u64, frame: &SharedFrame) {
        let wire = TopicRelayWire {
            generation,
            topic: topic.to_owned(),
            frame: frame.bytes(),
        };
        let frame = Frame::new(TOPIC_RELAY, wire.encode());
        let sent = self.rpc.send(&self.addr, Channel::Data, frame);
        let counter = if sent.is_ok() {
            &self.stats.topics_sent
        } else {
            &self.stats.dropped
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl RelaySink for RelayLink {
    fn relay(
        &self,
        kind: MapKind,
        map: &str,
        generation: u64,
        except: ConnId,
        frame: &SharedFrame,
    ) {
        let mut seq = self.seq.lock().unwrap_or_else(PoisonError::into_inner);
        *seq += 1;
        let wire = RelayWire {
            seq: *seq,
            kind,
            map: map.to_owned(),
            generation,
            except,
            frame: frame.bytes(),
        };
        let sent = self.rpc.send(
            &self.addr,
            Channel::Data,
            Frame::new(EVENT_RELAY, wire.encode()),
        );
        let counter = if sent.is_ok() {
            &self.stats.sent
        } else {
            &self.stats.dropped
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Hands relayed frames to the shards in order, watching each sender's numbering.
async fn deliver(reads: Weak<Reads>, mut frames: mpsc::Receiver<Inbound>) {
    // Per sender: its incarnation and the last number seen (a new incarnation numbers anew).
    let mut last: HashMap<String, (u128, u64)> = HashMap::new();
    while let Some(Inbound { from, relay }) = frames.recv().await {
        let Some(reads) = reads.upgrade() else { return };
        let Some(data) = reads.data.upgrade() else {
            return;
        };
        let Some(interests) = data.interests() else {
            return;
        };
        let held = last
            .entry(from.name.clone())
            .or_insert((from.incarnation, 0));
        if held.0 != from.incarnation {
            *held = (from.incarnation, 0);
        }
        let gap = relay.seq != held.1.wrapping_add(1) || reads.lost.swap(false, Ordering::Relaxed);
        held.1 = relay.seq;
        if gap {
            reads.stats.gaps.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = %from.name, "relayed events were lost; followers resync");
            for (followed, name, _) in interests.current() {
                if let Followed::Map(kind) = followed {
                    let _ = data.kick_followers(kind, name).await;
                }
            }
        }
        if interests.generation(relay.kind, &relay.map) != Some(relay.generation) {
            // An interest that ended (or an older one): tell the sender to stop.
            let followed = Followed::Map(relay.kind);
            let end = InterestWire::new(reads.me(), followed, &relay.map, relay.generation, false);
            reads.send_interest(from.addr.clone(), end);
            continue;
        }
        reads.stats.received.fetch_add(1, Ordering::Relaxed);
        let frame = SharedFrame::from(relay.frame.to_vec());
        let _ = data
            .deliver_relayed(relay.kind, relay.map, relay.except, frame)
            .await;
    }
}

/// Follows membership: a member that left is relayed nothing more; a member that joined
/// (or restarted) is told of every interest this member holds.
async fn follow_members(reads: Weak<Reads>) {
    let mut routes = match reads.upgrade() {
        Some(reads) => reads.routes.clone(),
        None => return,
    };
    let mut known: BTreeMap<u64, String> = BTreeMap::new();
    loop {
        let members: BTreeMap<u64, String> = routes
            .borrow_and_update()
            .as_ref()
            .map(|r| {
                let me = r.me;
                r.members()
                    .filter(|(id, _)| *id != me)
                    .map(|(id, a)| (id.0, a))
                    .collect()
            })
            .unwrap_or_default();
        let Some(reads) = reads.upgrade() else { return };
        let Some(data) = reads.data.upgrade() else {
            return;
        };
        for (id, _) in known.iter().filter(|(id, _)| !members.contains_key(id)) {
            let member = *id;
            let _ = data.tell_shards(|| Request::ForgetMember { member }).await;
            data.topics().forget_member(member);
            data.counters().forget_member(member).await;
            data.locks().forget_member(member).await;
            let mut links = reads.links.lock().unwrap_or_else(PoisonError::into_inner);
            links.remove(&member);
        }
        let interests = data.interests().map(|i| i.current()).unwrap_or_default();
        for (_, addr) in members.iter().filter(|(id, _)| !known.contains_key(id)) {
            for (followed, name, generation) in &interests {
                let interest = InterestWire::new(reads.me(), *followed, name, *generation, true);
                reads.send_interest(addr.clone(), interest);
            }
        }
        known = members;
        drop((reads, data));
        if routes.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use topgun_core::merkle::Sum;

    #[test]
    fn a_gather_is_whole_only_under_one_table() {
        let sums = || Ok((4, Some(ReadPart::Sums(vec![(1, Sum::default())]))));
        assert_eq!(combine(4, vec![sums(), sums()]).map(|p| p.len()), Ok(2));
        assert_eq!(combine(4, vec![]), Ok(vec![]));
        assert_eq!(
            combine(4, vec![sums(), Ok((6, None))]),
            Err(GatherError::Moved(6))
        );
        assert_eq!(
            combine(4, vec![Ok((3, None))]),
            Err(GatherError::Moved(4)),
            "a member behind: read again under the same table"
        );
        assert!(matches!(
            combine(4, vec![sums(), Err("down".into())]),
            Err(GatherError::Failed(_))
        ));
    }
}
