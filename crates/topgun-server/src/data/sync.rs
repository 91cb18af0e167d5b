//! Merkle sync: `SYNC_INIT`, `MERKLE_REQ_BUCKET`, the OR-Map variants and
//! `ORMAP_DIFF_REQUEST`, answered from every shard's part of the map.
//!
//! Each shard keeps partial leaf sums of its own records; a request gathers them from every
//! shard — in a cluster, from every member, each over the partitions it owns
//! ([`crate::data::peers`]) — and rebuilds the map's single logical tree ([`SplitTree`]),
//! so roots and buckets equal the TS client's for the same data. Replies wait in
//! [`Outbound::Later`] so that the reader goes on while the shards and members answer.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use futures_util::FutureExt;
use topgun_core::merkle::{MERKLE_DEPTH, path_depth};
use topgun_core::protocol::Message;
use topgun_core::protocol::messages::{
    LeafRecord, MerkleReqBucket, OrMapDiffRequest, OrMapDiffResponse, OrMapSyncRespLeaf,
    OrMapSyncRespRoot, SyncRespBuckets, SyncRespLeaf, SyncRespRoot,
};
use topgun_core::{OrMapEntry, SplitTree};

use crate::clock::ServerClock;
use crate::connection::fanout::{ConnHandle, Outbound};
use crate::data::conn::{Added, ConnState};
use crate::data::ops::check_map;
use crate::data::peers::{Cluster, Gathered, Local, Read, ReadPart, gather};
use crate::data::shards::Shards;
use crate::error::{self, code};
use crate::metrics::Metrics;
use crate::storage::store::MapKind;

/// Most records a sync delta carries; beyond this the Merkle walk serves the client.
const DELTA_RECORDS_MAX: usize = 10_000;

/// Answers Merkle sync requests from the shards; shared by every connection.
#[derive(Debug)]
pub(crate) struct SyncPath {
    pub(crate) shards: Shards,
    pub(crate) clock: ServerClock,
    pub(crate) metrics: Arc<Metrics>,
    /// In a cluster: the other members, whose parts every read gathers.
    pub(crate) cluster: Arc<OnceLock<Cluster>>,
}

impl SyncPath {
    /// `SYNC_INIT` / `ORMAP_SYNC_INIT`: subscribes the connection to the map's events and
    /// answers with the root hash and the server clock.
    ///
    /// A client that says when it last synced (`lastSyncTimestamp`, the millis of the last
    /// root timestamp it was sent) first gets the records changed since then as
    /// `SYNC_RESP_LEAF`s, before the root: merged, they usually make its root equal ours, and
    /// the resync moves only what changed instead of whole leaves. Whatever the delta misses
    /// (a write stamped by a clock behind ours) leaves the roots different, and the client
    /// walks the tree as always.
    pub(crate) async fn root(
        &self,
        conn: &mut ConnState,
        kind: MapKind,
        map: String,
        since_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<Outbound, Box<Message>> {
        check_map(&map)?;
        match conn.maps.add(kind, &map) {
            Added::Full => {
                return Err(error::refusal(
                    code::TOO_MANY,
                    format!(
                        "this connection already syncs {} maps, the most allowed; map {map:?} \
                         is not synced",
                        conn.maps.max()
                    ),
                ));
            }
            Added::New => {
                if let Some(cluster) = self.cluster.get() {
                    cluster.interests.join(cluster.peers.as_ref(), kind, &map);
                }
            }
            Added::Known => {}
        }
        self.metrics.merkle_request(kind);
        let delta = match since_ms {
            Some(since_ms) => {
                let read = Read::LwwSince {
                    map: map.clone(),
                    since_ms,
                    max: DELTA_RECORDS_MAX,
                };
                Some(self.gather(read, None).await?)
            }
            None => None,
        };
        let leaves = Read::Leaves {
            kind,
            map: map.clone(),
            path: String::new(),
        };
        let tree = self.gather(leaves, Some(&conn.handle)).await?;
        let timestamp = self.clock.now(now_ms);
        Ok(Outbound::Later(
            async move {
                let mut out = match delta {
                    Some(parts) => delta_leaves(&map, parts.await.ok()),
                    None => Vec::new(),
                };
                let tree = match tree.await {
                    Ok(parts) => split_tree(parts),
                    Err(refused) => return vec![*refused],
                };
                let root_hash = tree.node_hash("").unwrap_or(0);
                out.push(match kind {
                    MapKind::Lww => Message::SyncRespRoot(SyncRespRoot {
                        map_name: map.into(),
                        root_hash,
                        timestamp,
                    }),
                    MapKind::Or => Message::OrMapSyncRespRoot(OrMapSyncRespRoot {
                        map_name: map.into(),
                        root_hash,
                        timestamp,
                        covering_epoch: None,
                        full_resync: None,
                    }),
                });
                out
            }
            .boxed(),
        ))
    }

    /// `MERKLE_REQ_BUCKET` / `ORMAP_MERKLE_REQ_BUCKET`: an internal node's children, or a
    /// leaf's records.
    pub(crate) async fn bucket(
        &self,
        kind: MapKind,
        req: MerkleReqBucket,
    ) -> Result<Outbound, Box<Message>> {
        let map = req.map_name.to_string();
        check_map(&map)?;
        let depth =
            path_depth(&req.path).map_err(|e| error::refusal(code::BAD_REQUEST, e.to_string()))?;
        self.metrics.merkle_request(kind);
        let path = req.path.to_string();
        if depth == MERKLE_DEPTH {
            return self.leaf(kind, map, path).await;
        }
        let read = Read::Leaves {
            kind,
            map: map.clone(),
            path: path.clone(),
        };
        let tree = self.gather(read, None).await?;
        Ok(Outbound::Later(
            async move {
                let tree = match tree.await {
                    Ok(parts) => split_tree(parts),
                    Err(refused) => return vec![*refused],
                };
                let buckets = tree
                    .buckets(&path)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(digit, hash)| (digit.to_string(), hash))
                    .collect();
                let body = SyncRespBuckets {
                    map_name: map.into(),
                    path: path.into(),
                    buckets,
                };
                vec![match kind {
                    MapKind::Lww => Message::SyncRespBuckets(body),
                    MapKind::Or => Message::OrMapSyncRespBuckets(body),
                }]
            }
            .boxed(),
        ))
    }

    /// A leaf's records: LWW records or OR entries, gathered.
    async fn leaf(
        &self,
        kind: MapKind,
        map: String,
        path: String,
    ) -> Result<Outbound, Box<Message>> {
        let read = match kind {
            MapKind::Lww => Read::LwwLeaf {
                map: map.clone(),
                path: path.clone(),
            },
            MapKind::Or => Read::OrLeaf {
                map: map.clone(),
                path: path.clone(),
            },
        };
        let parts = self.gather(read, None).await?;
        Ok(Outbound::Later(
            async move {
                let parts = match parts.await {
                    Ok(parts) => parts,
                    Err(refused) => return vec![*refused],
                };
                let (map, path) = (map.into(), path.into());
                vec![match kind {
                    MapKind::Lww => Message::SyncRespLeaf(SyncRespLeaf {
                        map_name: map,
                        path,
                        records: lww_records(parts),
                    }),
                    MapKind::Or => Message::OrMapSyncRespLeaf(OrMapSyncRespLeaf {
                        map_name: map,
                        path,
                        entries: or_entries(parts),
                        covering_epoch: None,
                    }),
                }]
            }
            .boxed(),
        ))
    }

    /// `ORMAP_DIFF_REQUEST`: the entries of the named keys, in the order asked.
    pub(crate) async fn or_diff(&self, req: OrMapDiffRequest) -> Result<Outbound, Box<Message>> {
        let map = req.map_name.to_string();
        check_map(&map)?;
        let total = req.keys.len();
        let keys = req.keys.into_iter().enumerate().collect();
        let read = Read::OrEntries {
            map: map.clone(),
            keys,
        };
        let parts = self.gather(read, None).await?;
        Ok(Outbound::Later(
            async move {
                let parts = match parts.await {
                    Ok(parts) => parts,
                    Err(refused) => return vec![*refused],
                };
                let mut entries = vec![OrMapEntry::default(); total];
                for part in parts {
                    if let ReadPart::Indexed(found) = part {
                        for (at, entry) in found {
                            if let Some(slot) = entries.get_mut(at) {
                                *slot = entry;
                            }
                        }
                    }
                }
                vec![Message::OrMapDiffResponse(OrMapDiffResponse {
                    map_name: map.into(),
                    entries,
                    covering_epoch: None,
                })]
            }
            .boxed(),
        ))
    }

    /// Every member's part of `read` (see [`gather`]); `subscribe` starts receiving the
    /// map's events in the same step — and, in a cluster, the other members relaying them
    /// under this member's interest.
    async fn gather(
        &self,
        read: Read,
        subscribe: Option<&ConnHandle>,
    ) -> Result<Gathered, Box<Message>> {
        let cluster = self.cluster.get();
        let follow = match (&read, subscribe, cluster) {
            (Read::Leaves { kind, map, .. }, Some(_), Some(cluster)) => {
                cluster.interests.generation(*kind, map).unwrap_or(0)
            }
            _ => 0,
        };
        let local = Local {
            subscribe: subscribe.cloned(),
            ..Local::default()
        };
        gather(&self.shards, cluster, read, local, follow).await
    }
}

/// The map's tree from every member's leaf sums.
fn split_tree(parts: Vec<ReadPart>) -> SplitTree {
    let mut tree = SplitTree::new();
    for part in parts {
        if let ReadPart::Sums(sums) = part {
            tree.add(&sums);
        }
    }
    tree
}

fn lww_records(parts: Vec<ReadPart>) -> Vec<LeafRecord> {
    flatten(parts, |part| match part {
        ReadPart::LwwRecords(records) => records,
        _ => Vec::new(),
    })
}

fn or_entries(parts: Vec<ReadPart>) -> Vec<OrMapEntry> {
    flatten(parts, |part| match part {
        ReadPart::OrEntries(entries) => entries,
        _ => Vec::new(),
    })
}

/// What each member's part holds of one kind, in one list.
fn flatten<T>(parts: Vec<ReadPart>, items: impl FnMut(ReadPart) -> Vec<T>) -> Vec<T> {
    parts.into_iter().flat_map(items).collect()
}

/// The members' changed records as one `SYNC_RESP_LEAF` per leaf (a client merges each
/// leaf's records as it would a requested one); nothing if any member found too many, or
/// failed.
fn delta_leaves(map: &str, parts: Option<Vec<ReadPart>>) -> Vec<Message> {
    let Some(parts) = parts else {
        return Vec::new();
    };
    let mut all = Vec::new();
    for part in parts {
        match part {
            ReadPart::Since(Some(records)) => all.extend(records),
            _ => return Vec::new(),
        }
    }
    if all.len() > DELTA_RECORDS_MAX {
        return Vec::new();
    }
    let mut leaves: BTreeMap<u16, Vec<LeafRecord>> = BTreeMap::new();
    for (leaf, record) in all {
        leaves.entry(leaf).or_default().push(record);
    }
    leaves
        .into_iter()
        .map(|(leaf, records)| {
            Message::SyncRespLeaf(SyncRespLeaf {
                map_name: map.into(),
                path: format!("{leaf:03x}").into(),
                records,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use topgun_core::{LwwRecord, NodeId, Timestamp, Value};

    fn record(key: &str) -> LeafRecord {
        let timestamp = Timestamp::new(1, 0, NodeId::new("n").unwrap());
        LeafRecord {
            key: key.into(),
            record: LwwRecord::new(Value::from(1), timestamp, None),
        }
    }

    #[test]
    fn a_delta_is_one_leaf_reply_per_leaf_and_nothing_when_any_member_overflowed() {
        let parts = vec![
            ReadPart::Since(Some(vec![(3, record("a"))])),
            ReadPart::Since(Some(vec![(3, record("b")), (0x1f, record("c"))])),
        ];
        let out = delta_leaves("m", Some(parts));
        let paths: Vec<_> = out
            .iter()
            .map(|m| match m {
                Message::SyncRespLeaf(l) => (l.path.to_string(), l.records.len()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(paths, [("003".to_owned(), 2), ("01f".to_owned(), 1)]);
        let overflowed = vec![ReadPart::Since(Some(vec![])), ReadPart::Since(None)];
        assert!(delta_leaves("m", Some(overflowed)).is_empty());
        assert!(delta_leaves("m", None).is_empty());
    }
}
