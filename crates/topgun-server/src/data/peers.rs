//! Reads a cluster gathers from every member, and this member's interest in other members'
//! events (CLUSTER.md §9). Any member serves a client's sync: it asks each member — itself
//! included — for its part of the map over the partitions that member owns, and adds the
//! parts up exactly as one node adds up its shards' parts.
//!
//! The cluster itself (who the members are, the wire) is behind [`Peers`], set once when
//! the member starts; a single node has none, and every read is its shards' alone.
//!
//! **Events.** A member with local subscribers of a map is *interested* in it: the owners
//! relay the map's events to it, which offers them to its subscribers as its own. Interest
//! is counted here per (kind, map) over this member's connections; each period of interest
//! has a new generation, so that an end of interest that arrives late never ends a newer one.
//! A sync's leaf-sums request carries the generation, so that each owner starts relaying in
//! the same shard step as it sums: no event falls between the root and the walk.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;
use topgun_core::merkle::Sum;
use topgun_core::protocol::Message;
use topgun_core::protocol::messages::LeafRecord;
use topgun_core::{LwwRecord, OrMapEntry};

use crate::connection::fanout::{ConnHandle, Relay};
use crate::data::deltas;
use crate::data::parts::PartSet;
use crate::data::shard::service::Request;
use crate::data::shard::{Arrivals, Mark};
use crate::data::shards::{ShardGone, Shards};
use crate::error::{self, code};
use crate::storage::store::MapKind;

/// A read every member answers for the partitions it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// A map's non-empty leaf sums under `path`.
    Leaves {
        kind: MapKind,
        map: String,
        path: String,
    },
    /// The LWW records in the leaf at `path`.
    LwwLeaf { map: String, path: String },
    /// Every LWW record of a map (a live query's snapshot).
    LwwRecords { map: String },
    /// The OR entries in the leaf at `path`.
    OrLeaf { map: String, path: String },
    /// The OR entries of keys, by their place in the request.
    OrEntries {
        map: String,
        keys: Vec<(usize, String)>,
    },
    /// The LWW records stamped at or after `since_ms`; none at all past `max`.
    LwwSince {
        map: String,
        since_ms: u64,
        max: usize,
    },
    /// Each client map's count of keys with a live value (the admin API's maps catalog).
    MapCatalog,
    /// A map's count of keys whose live value has `attribute` (an index's entry count).
    AttributeCount { map: String, attribute: String },
    /// The LWW records at or after `from` in the arrival order, at most `max`, the member's
    /// arrivals raised above `scan_start_ms` (HTTP sync's deltas, [`crate::data::deltas`]).
    LwwArrivedSince {
        map: String,
        from: Mark,
        scan_start_ms: u64,
        max: usize,
    },
}

/// One member's answer to a [`Read`].
#[derive(Debug, Clone, PartialEq)]
pub enum ReadPart {
    Sums(Vec<(u16, Sum)>),
    LwwRecords(Vec<LeafRecord>),
    OrEntries(Vec<OrMapEntry>),
    Indexed(Vec<(usize, OrMapEntry)>),
    /// Records with their leaf index; `None`: more than the read's `max`.
    Since(Option<Vec<(u16, LeafRecord)>>),
    /// Records in the arrival order, cut at the read's `max`.
    Arrivals(Arrivals),
    /// Counts by map name (a name may appear more than once: the counts add up).
    Counts(Vec<(String, u64)>),
    Count(u64),
}

/// What a member follows of another's: a map's events of one kind, or a topic's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Followed {
    Map(MapKind),
    Topic,
    Counter,
}

impl From<MapKind> for Followed {
    fn from(kind: MapKind) -> Self {
        Self::Map(kind)
    }
}

/// The applied partition table as reads need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owned {
    /// The table version.
    pub version: u64,
    /// This member's partitions under it.
    pub parts: PartSet,
    /// The cluster's uuid: what a cursor valid on every member names (HTTP sync's deltas).
    pub cluster: u128,
}

/// Why a gather has no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatherError {
    /// A member answered under another table version than `.0`: ownership moved meanwhile;
    /// read again once the newer table is applied here.
    Moved(u64),
    /// A member did not answer (the reason, for the client).
    Failed(String),
}

/// The other members, as the data path sees them. Absent on a single node.
pub trait Peers: Send + Sync + std::fmt::Debug {
    /// The table this member routes by; `None` before the first one.
    fn owned(&self) -> Option<Owned>;

    /// Waits (a bounded time) until the applied table is at least `version`.
    fn catch_up(&self, version: u64) -> BoxFuture<'static, ()>;

    /// Asks every other member for its part of `read` under table `version`; `follow`
    /// (non-zero) is this member's interest generation in the read map, which each member
    /// starts relaying the map's events under in the same step.
    fn gather(
        &self,
        read: Read,
        version: u64,
        follow: u64,
    ) -> BoxFuture<'static, Result<Vec<ReadPart>, GatherError>>;

    /// Tells every other member that this member's interest `generation` in `name` (a map
    /// of a kind, or a topic) began (`on`) or ended.
    fn interest(&self, followed: Followed, name: &str, generation: u64, on: bool);
}

/// This member's read of its own shards: the request to each shard, what it starts
/// following, and the future of their combined part.
#[derive(Debug, Clone, Default)]
pub struct Local {
    /// Only these partitions (`None`: every one, as on a single node).
    pub owned: Option<PartSet>,
    /// A connection that receives the map's events from this step on.
    pub subscribe: Option<ConnHandle>,
    /// Another member that receives them from this step on.
    pub relay: Option<Relay>,
}

/// Puts `read` on the shards' queues now (so that it sees what the caller sent before);
/// the future combines their answers into this member's part.
pub async fn read_local(
    shards: &Shards,
    read: Read,
    local: Local,
) -> Result<BoxFuture<'static, Option<ReadPart>>, ShardGone> {
    let Local {
        owned,
        subscribe,
        relay,
    } = local;
    Ok(match read {
        Read::Leaves { kind, map, path } => {
            let request = |reply| Request::Leaves {
                kind,
                map: map.clone(),
                path: path.clone(),
                owned,
                subscribe: subscribe.clone(),
                relay: relay.clone(),
                reply,
            };
            joined(shards, request, ReadPart::Sums).await?
        }
        Read::LwwLeaf { map, path } => {
            let request = |reply| Request::LwwLeaf {
                map: map.clone(),
                path: path.clone(),
                owned,
                reply,
            };
            joined(shards, request, ReadPart::LwwRecords).await?
        }
        Read::LwwRecords { map } => {
            let request = |reply| Request::LwwRecords {
                map: map.clone(),
                owned,
                relay: relay.clone(),
                reply,
            };
            let part = |records: Vec<(String, LwwRecord)>| {
                let records = records.into_iter().map(|(key, record)| LeafRecord {
                    key: key.into(),
                    record,
                });
                ReadPart::LwwRecords(records.collect())
            };
            joined(shards, request, part).await?
        }
        Read::OrLeaf { map, path } => {
            let request = |reply| Request::OrLeaf {
                map: map.clone(),
                path: path.clone(),
                owned,
                reply,
            };
            joined(shards, request, ReadPart::OrEntries).await?
        }
        Read::OrEntries { map, keys } => or_entries(shards, map, keys, owned).await?,
        Read::LwwSince { map, since_ms, max } => {
            lww_since(shards, map, since_ms, max, owned).await?
        }
        Read::MapCatalog => {
            let request = |reply| Request::LiveCounts { owned, reply };
            let part = |counts: Vec<(String, usize)>| {
                ReadPart::Counts(counts.into_iter().map(|(m, n)| (m, n as u64)).collect())
            };
            joined(shards, request, part).await?
        }
        Read::AttributeCount { map, attribute } => {
            attribute_count(shards, map, attribute, owned).await?
        }
        Read::LwwArrivedSince {
            map,
            from,
            scan_start_ms,
            max,
        } => {
            debug_assert_eq!(max, deltas::DELTA_RECORDS_MAX, "shards cut at this bound");
            deltas::read_local(shards, &map, from, scan_start_ms, owned)
                .await?
                .map(|part| part.map(ReadPart::Arrivals))
                .boxed()
        }
    })
}

/// The shards' records stamped at or after `since_ms`, as one part.
async fn lww_since(
    shards: &Shards,
    map: String,
    since_ms: u64,
    max: usize,
    owned: Option<PartSet>,
) -> Result<BoxFuture<'static, Option<ReadPart>>, ShardGone> {
    let parts = shards
        .ask_all(|reply| Request::LwwSince {
            map: map.clone(),
            since_ms,
            max,
            owned,
            reply,
        })
        .await?;
    Ok(parts.map(move |p| Some(since(p?, max))).boxed())
}

/// The shards' counts of `map`'s keys whose live value has `attribute`, summed.
async fn attribute_count(
    shards: &Shards,
    map: String,
    attribute: String,
    owned: Option<PartSet>,
) -> Result<BoxFuture<'static, Option<ReadPart>>, ShardGone> {
    let parts = shards
        .ask_all(|reply| Request::AttributeCount {
            map: map.clone(),
            attribute: attribute.clone(),
            owned,
            reply,
        })
        .await?;
    let sum = |counts: Vec<usize>| ReadPart::Count(counts.into_iter().sum::<usize>() as u64);
    Ok(parts.map(move |p| Some(sum(p?))).boxed())
}

/// Puts one request on every shard's queue; the future joins their lists into one part.
async fn joined<T: Send + 'static>(
    shards: &Shards,
    request: impl FnMut(oneshot::Sender<Vec<T>>) -> Request,
    part: impl FnOnce(Vec<T>) -> ReadPart + Send + 'static,
) -> Result<BoxFuture<'static, Option<ReadPart>>, ShardGone> {
    let parts = shards.ask_all(request).await?;
    Ok(parts
        .map(|p| Some(part(p?.into_iter().flatten().collect())))
        .boxed())
}

/// The OR entries of `keys`, each asked of its shard.
async fn or_entries(
    shards: &Shards,
    map: String,
    keys: Vec<(usize, String)>,
    owned: Option<PartSet>,
) -> Result<BoxFuture<'static, Option<ReadPart>>, ShardGone> {
    let mut replies = Vec::new();
    for (shard, keys) in shards.split(keys, |(_, key)| key).into_iter().enumerate() {
        if keys.is_empty() {
            continue;
        }
        let (reply, entries) = oneshot::channel();
        let map = map.clone();
        let request = Request::OrEntries {
            map,
            keys,
            owned,
            reply,
        };
        shards.send(shard, request).await?;
        replies.push(entries);
    }
    Ok(async move {
        let mut out = Vec::new();
        for part in futures_util::future::join_all(replies).await {
            out.extend(part.ok()?);
        }
        Some(ReadPart::Indexed(out))
    }
    .boxed())
}

/// The shards' changed records as one part: `None` if any shard found more than `max`, or
/// all of them together did.
fn since(parts: Vec<Option<Vec<(u16, LeafRecord)>>>, max: usize) -> ReadPart {
    let all: Option<Vec<_>> = parts.into_iter().collect();
    let all = all.map(|p| p.into_iter().flatten().collect::<Vec<_>>());
    ReadPart::Since(all.filter(|records| records.len() <= max))
}

/// Tries of one gathered read: the first, and again after ownership moved meanwhile.
const GATHER_ATTEMPTS: usize = 3;

/// What a gathered read yields: every member's part (on a single node, the shards').
pub type Gathered = BoxFuture<'static, Result<Vec<ReadPart>, Box<Message>>>;

/// Puts `read` on this member's shards' queues now (so that it sees what the caller sent
/// before) and, in a `cluster`, asks every other member for its part under the same table,
/// each starting to relay the map's events under this member's interest generation
/// `follow` (0: none) in the same step. `local` says what this member's shards start in
/// theirs. The future yields every part, or the refusal to answer with.
pub async fn gather(
    shards: &Shards,
    cluster: Option<&Cluster>,
    read: Read,
    local: Local,
    follow: u64,
) -> Result<Gathered, Box<Message>> {
    let Some(cluster) = cluster.cloned() else {
        let part = read_local(shards, read, local).await;
        let part = part.map_err(|_| error::shutting_down())?;
        return Ok(async move { Ok(vec![part.await.ok_or_else(error::shutting_down)?]) }.boxed());
    };
    let owned = cluster.peers.owned().ok_or_else(no_table)?;
    let mine = Local {
        owned: Some(owned.parts),
        ..local
    };
    let mine = read_local(shards, read.clone(), mine).await;
    let mine = mine.map_err(|_| error::shutting_down())?;
    let theirs = cluster.peers.gather(read.clone(), owned.version, follow);
    let again = Again {
        shards: shards.clone(),
        cluster,
        read,
        follow,
    };
    Ok(again.gathered(mine, theirs).boxed())
}

/// What a gathered read needs to be read again after ownership moved.
struct Again {
    shards: Shards,
    cluster: Cluster,
    read: Read,
    follow: u64,
}

impl Again {
    /// This member's part and the others', read again (at most [`GATHER_ATTEMPTS`] times in
    /// all) while a member answers under another table.
    async fn gathered(
        self,
        mut mine: BoxFuture<'static, Option<ReadPart>>,
        mut theirs: BoxFuture<'static, Result<Vec<ReadPart>, GatherError>>,
    ) -> Result<Vec<ReadPart>, Box<Message>> {
        for attempt in 1.. {
            let (part, parts) = futures_util::future::join(mine, theirs).await;
            let part = part.ok_or_else(error::shutting_down)?;
            match parts {
                Ok(mut parts) => {
                    parts.push(part);
                    return Ok(parts);
                }
                Err(GatherError::Failed(why)) => {
                    return Err(error::refusal(code::UNAVAILABLE, why));
                }
                Err(GatherError::Moved(_)) if attempt == GATHER_ATTEMPTS => break,
                Err(GatherError::Moved(newer)) => {
                    self.cluster.peers.catch_up(newer).await;
                    let owned = self.cluster.peers.owned().ok_or_else(no_table)?;
                    let local = Local {
                        owned: Some(owned.parts),
                        ..Local::default()
                    };
                    mine = read_local(&self.shards, self.read.clone(), local)
                        .await
                        .map_err(|_| error::shutting_down())?;
                    theirs =
                        self.cluster
                            .peers
                            .gather(self.read.clone(), owned.version, self.follow);
                }
            }
        }
        Err(error::refusal(
            code::UNAVAILABLE,
            "partition ownership kept moving while the map was read; sync again".to_owned(),
        ))
    }
}

/// The refusal when a member answers a read with a part of another kind (members of
/// different versions): never an answer silently missing that member's part.
pub fn unexpected_part() -> Box<Message> {
    error::refusal(
        code::UNAVAILABLE,
        "a member answered the read with another kind of part".to_owned(),
    )
}

fn no_table() -> Box<Message> {
    error::refusal(
        code::UNAVAILABLE,
        "the cluster has no partition table yet; sync again shortly".to_owned(),
    )
}

/// Another member's interest in one name, and where what it follows goes.
#[derive(Debug)]
pub struct MemberInterest<S: ?Sized> {
    /// The member's Raft id.
    pub member: u64,
    /// Which of its interests in the name this is (see [`Interests`]).
    pub generation: u64,
    pub sink: Arc<S>,
}

impl<S: ?Sized> Clone for MemberInterest<S> {
    fn clone(&self) -> Self {
        Self {
            member: self.member,
            generation: self.generation,
            sink: Arc::clone(&self.sink),
        }
    }
}

/// Adds `interest` to the name's list: it replaces its member's older one; an older one
/// than the member's held one changes nothing (it arrived late).
pub fn add_interest<S: ?Sized>(list: &mut Vec<MemberInterest<S>>, interest: MemberInterest<S>) {
    match list.iter_mut().find(|i| i.member == interest.member) {
        Some(held) if held.generation <= interest.generation => *held = interest,
        Some(_) => {}
        None => list.push(interest),
    }
}

/// Ends `member`'s interest `generation` in the name (and any older one it still holds).
pub fn end_interest<S: ?Sized>(list: &mut Vec<MemberInterest<S>>, member: u64, generation: u64) {
    list.retain(|i| i.member != member || i.generation > generation);
}

/// Interests held, by what and name: how many local subscriptions, and the generation.
type Held = HashMap<(Followed, String), (usize, u64)>;

/// This member's interest in each map's events and each topic's messages: how many local
/// subscriptions hold it, and the generation of the current period of interest.
///
/// Generations start at the clock's microseconds when the process starts, so that a member
/// restarted under the same Raft id (resuming its log) begins interests newer than those
/// its previous life left on the other members, which its new ones then replace.
#[derive(Debug)]
pub struct Interests {
    held: Mutex<Held>,
    next_generation: AtomicU64,
}

impl Default for Interests {
    fn default() -> Self {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2));
        Self {
            held: Mutex::default(),
            next_generation: AtomicU64::new(micros),
        }
    }
}

impl Interests {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One more local subscription of `name`; the generation of the interest it holds.
    /// The first one begins a new interest, told to `peers` (under the lock, so that the
    /// members hear of beginnings and ends in order).
    pub fn join(&self, peers: &dyn Peers, followed: impl Into<Followed>, name: &str) -> u64 {
        let followed = followed.into();
        let mut held = self.held();
        let (count, generation) = held.entry((followed, name.to_owned())).or_insert((0, 0));
        if *count == 0 {
            *generation = self.next_generation.fetch_add(1, Ordering::Relaxed) + 1;
            peers.interest(followed, name, *generation, true);
        }
        *count += 1;
        *generation
    }

    /// One local subscription of `name` fewer; the last one ends the interest.
    pub fn leave(&self, peers: &dyn Peers, followed: impl Into<Followed>, name: &str) {
        let followed = followed.into();
        let mut held = self.held();
        let key = (followed, name.to_owned());
        let Some((count, generation)) = held.get_mut(&key) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            peers.interest(followed, name, *generation, false);
            held.remove(&key);
        }
    }

    /// The current generation of the interest in `name`, if there is one.
    pub fn generation(&self, followed: impl Into<Followed>, name: &str) -> Option<u64> {
        let key = (followed.into(), name.to_owned());
        self.held().get(&key).map(|(_, g)| *g)
    }

    /// Every current interest, to tell a member that joined (or restarted).
    pub fn current(&self) -> Vec<(Followed, String, u64)> {
        self.held()
            .iter()
            .map(|((followed, name), (_, generation))| (*followed, name.clone(), *generation))
            .collect()
    }
}

/// The data path's handle on the cluster: the peers and this member's interests, shared.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub peers: Arc<dyn Peers>,
    pub interests: Arc<Interests>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what would be told to the other members.
    #[derive(Debug, Default)]
    struct Told(Mutex<Vec<(String, u64, bool)>>);

    impl Peers for Told {
        fn owned(&self) -> Option<Owned> {
            None
        }
        fn catch_up(&self, _: u64) -> BoxFuture<'static, ()> {
            async {}.boxed()
        }
        fn gather(
            &self,
            _: Read,
            _: u64,
            _: u64,
        ) -> BoxFuture<'static, Result<Vec<ReadPart>, GatherError>> {
            async { Ok(Vec::new()) }.boxed()
        }
        fn interest(&self, _: Followed, map: &str, generation: u64, on: bool) {
            self.0
                .lock()
                .unwrap()
                .push((map.to_owned(), generation, on));
        }
    }

    #[test]
    fn an_interest_begins_with_the_first_subscription_and_ends_with_the_last() {
        let (told, interests) = (Told::default(), Interests::default());
        let first = interests.join(&told, MapKind::Lww, "m");
        assert_eq!(interests.join(&told, MapKind::Lww, "m"), first);
        interests.join(&told, MapKind::Or, "m");
        interests.leave(&told, MapKind::Lww, "m");
        assert_eq!(interests.generation(MapKind::Lww, "m"), Some(first));
        interests.leave(&told, MapKind::Lww, "m");
        assert_eq!(interests.generation(MapKind::Lww, "m"), None);
        interests.leave(&told, MapKind::Lww, "m");
        let again = interests.join(&told, MapKind::Lww, "m");
        assert!(
            again > first,
            "a new period of interest, a newer generation"
        );
        let told = told.0.lock().unwrap().clone();
        assert_eq!(
            told,
            [
                ("m".to_owned(), first, true),
                ("m".to_owned(), first + 1, true),
                ("m".to_owned(), first, false),
                ("m".to_owned(), again, true),
            ]
        );
        assert_eq!(interests.current().len(), 2);
    }

    #[test]
    fn a_delta_past_its_bound_is_none() {
        let rec = |k: &str| {
            let ts = topgun_core::Timestamp::new(1, 0, topgun_core::NodeId::new("n").unwrap());
            (
                0,
                LeafRecord {
                    key: k.into(),
                    record: topgun_core::LwwRecord::new(topgun_core::Value::from(1), ts, None),
                },
            )
        };
        assert_eq!(
            since(vec![Some(vec![rec("a")]), Some(vec![rec("b")])], 1),
            ReadPart::Since(None)
        );
        assert!(matches!(
            since(vec![Some(vec![rec("a")]), None], 5),
            ReadPart::Since(None)
        ));
        assert!(
            matches!(since(vec![Some(vec![rec("a")])], 1), ReadPart::Since(Some(r)) if r.len() == 1)
        );
    }
}
