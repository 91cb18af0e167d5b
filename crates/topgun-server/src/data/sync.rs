//! Merkle sync: `SYNC_INIT`, `MERKLE_REQ_BUCKET`, the OR-Map variants and
//! `ORMAP_DIFF_REQUEST`, answered from every shard's part of the map.
//!
//! Each shard keeps partial leaf sums of its own records; a request gathers them from every
//! shard and rebuilds the map's single logical tree ([`SplitTree`]), so roots and buckets
//! equal the TS client's for the same data. Replies wait in [`Outbound::Later`] so that
//! the reader goes on while the shards answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, join_all};
use tokio::sync::oneshot;
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
use crate::data::shard::service::Request;
use crate::data::shards::Shards;
use crate::error::{self, code};
use crate::metrics::Metrics;
use crate::storage::store::MapKind;

/// Most records a sync delta carries; beyond this the Merkle walk serves the client.
const DELTA_RECORDS_MAX: usize = 10_000;

/// One shard's changed records, each with its leaf index.
type ShardDelta = Vec<(u16, LeafRecord)>;

/// Answers Merkle sync requests from the shards; shared by every connection.
#[derive(Debug)]
pub(crate) struct SyncPath {
    pub(crate) shards: Shards,
    pub(crate) clock: ServerClock,
    pub(crate) metrics: Arc<Metrics>,
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
        if conn.maps.add(kind, &map) == Added::Full {
            return Err(error::refusal(
                code::TOO_MANY,
                format!(
                    "this connection already syncs {} maps, the most allowed; map {map:?} is \
                     not synced",
                    conn.maps.max()
                ),
            ));
        }
        self.metrics.merkle_request(kind);
        let delta = match since_ms {
            Some(since_ms) => Some(
                self.ask_all(|reply| Request::LwwSince {
                    map: map.clone(),
                    since_ms,
                    max: DELTA_RECORDS_MAX,
                    reply,
                })
                .await?,
            ),
            None => None,
        };
        let tree = self.gather_sums(kind, &map, "", Some(&conn.handle)).await?;
        let timestamp = self.clock.now(now_ms);
        Ok(Outbound::Later(
            async move {
                let mut out = match delta {
                    Some(parts) => delta_leaves(&map, parts.await),
                    None => Vec::new(),
                };
                let Some(tree) = tree.await else {
                    return vec![*error::shutting_down()];
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
            return match kind {
                MapKind::Lww => self.lww_leaf(map, path).await,
                MapKind::Or => self.or_leaf(map, path).await,
            };
        }
        let tree = self.gather_sums(kind, &map, &path, None).await?;
        Ok(Outbound::Later(
            async move {
                let Some(tree) = tree.await else {
                    return vec![*error::shutting_down()];
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

    async fn lww_leaf(&self, map: String, path: String) -> Result<Outbound, Box<Message>> {
        let parts = self
            .ask_all(|reply| Request::LwwLeaf {
                map: map.clone(),
                path: path.clone(),
                reply,
            })
            .await?;
        Ok(joined_reply(parts, move |records| {
            Message::SyncRespLeaf(SyncRespLeaf {
                map_name: map.into(),
                path: path.into(),
                records,
            })
        }))
    }

    async fn or_leaf(&self, map: String, path: String) -> Result<Outbound, Box<Message>> {
        let parts = self
            .ask_all(|reply| Request::OrLeaf {
                map: map.clone(),
                path: path.clone(),
                reply,
            })
            .await?;
        Ok(joined_reply(parts, move |entries| {
            Message::OrMapSyncRespLeaf(OrMapSyncRespLeaf {
                map_name: map.into(),
                path: path.into(),
                entries,
                covering_epoch: None,
            })
        }))
    }

    /// `ORMAP_DIFF_REQUEST`: the entries of the named keys, in the order asked.
    pub(crate) async fn or_diff(&self, req: OrMapDiffRequest) -> Result<Outbound, Box<Message>> {
        let map = req.map_name.to_string();
        check_map(&map)?;
        let total = req.keys.len();
        let parts = self
            .shards
            .split(req.keys.into_iter().enumerate(), |(_, key)| key);
        let mut replies = Vec::new();
        for (shard, keys) in parts.into_iter().enumerate() {
            if keys.is_empty() {
                continue;
            }
            let (reply, entries) = oneshot::channel();
            let map = map.clone();
            self.shards
                .send(shard, Request::OrEntries { map, keys, reply })
                .await
                .map_err(|_| error::shutting_down())?;
            replies.push(entries);
        }
        Ok(Outbound::Later(
            async move {
                let mut entries = vec![OrMapEntry::default(); total];
                for part in join_all(replies).await {
                    let Ok(part) = part else {
                        return vec![*error::shutting_down()];
                    };
                    for (at, entry) in part {
                        entries[at] = entry;
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

    /// Sends a leaf-sums request to every shard; the future rebuilds the logical tree.
    async fn gather_sums(
        &self,
        kind: MapKind,
        map: &str,
        path: &str,
        subscribe: Option<&ConnHandle>,
    ) -> Result<BoxFuture<'static, Option<SplitTree>>, Box<Message>> {
        let parts = self
            .ask_all(|reply| Request::Leaves {
                kind,
                map: map.to_owned(),
                path: path.to_owned(),
                subscribe: subscribe.cloned(),
                reply,
            })
            .await?;
        Ok(async move {
            let mut tree = SplitTree::new();
            for sums in parts.await? {
                tree.add(&sums);
            }
            Some(tree)
        }
        .boxed())
    }

    async fn ask_all<T: Send + 'static>(
        &self,
        request: impl FnMut(oneshot::Sender<T>) -> Request,
    ) -> Result<BoxFuture<'static, Option<Vec<T>>>, Box<Message>> {
        self.shards
            .ask_all(request)
            .await
            .map_err(|_| error::shutting_down())
    }
}

/// The reply built from every shard's part, joined in shard order, once all have answered.
fn joined_reply<T: Send + 'static>(
    parts: BoxFuture<'static, Option<Vec<Vec<T>>>>,
    reply: impl FnOnce(Vec<T>) -> Message + Send + 'static,
) -> Outbound {
    Outbound::Later(
        async move {
            match parts.await {
                Some(parts) => vec![reply(parts.into_iter().flatten().collect())],
                None => vec![*error::shutting_down()],
            }
        }
        .boxed(),
    )
}

/// The shards' changed records as one `SYNC_RESP_LEAF` per leaf (a client merges each leaf's
/// records as it would a requested one); nothing if any shard found too many, or failed.
fn delta_leaves(map: &str, parts: Option<Vec<Option<ShardDelta>>>) -> Vec<Message> {
    let Some(parts) = parts.and_then(|p| p.into_iter().collect::<Option<Vec<_>>>()) else {
        return Vec::new();
    };
    if parts.iter().map(Vec::len).sum::<usize>() > DELTA_RECORDS_MAX {
        return Vec::new();
    }
    let mut leaves: BTreeMap<u16, Vec<LeafRecord>> = BTreeMap::new();
    for (leaf, record) in parts.into_iter().flatten() {
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
    fn a_delta_is_one_leaf_reply_per_leaf_and_nothing_when_any_shard_overflowed() {
        let parts = vec![
            Some(vec![(3, record("a"))]),
            Some(vec![(3, record("b")), (0x1f, record("c"))]),
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
        assert!(delta_leaves("m", Some(vec![Some(vec![]), None])).is_empty());
        assert!(delta_leaves("m", None).is_empty());
    }
}
