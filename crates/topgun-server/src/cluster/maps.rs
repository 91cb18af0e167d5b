//! The `PARTITION_MAP` clients see in cluster mode (CLUSTER.md §3.7, §4): built from the
//! committed control state once per change, encoded once, and offered to every connection.
//!
//! Invariants:
//! * the published version only grows: a state whose map is not newer than the one out
//!   (a replayed or reordered apply) publishes nothing, since the TS client ignores any map
//!   whose version is not greater than the one it holds;
//! * every connection that asks or is pushed gets the same bytes.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;
use topgun_cluster::state::Cluster;
use topgun_core::protocol::Message;
use topgun_core::protocol::messages::PartitionMap;

/// One committed client view, and its frame.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedMap {
    pub map: PartitionMap,
    /// `map` as a `PARTITION_MAP` frame.
    pub frame: Bytes,
}

impl PublishedMap {
    pub fn version(&self) -> u32 {
        self.map.version
    }
}

/// What connections watch: the newest map, or nothing before the first table commits.
pub type MapWatch = watch::Receiver<Option<Arc<PublishedMap>>>;

/// Publishes the client view of each applied control state.
#[derive(Debug)]
pub struct MapPublisher {
    maps: watch::Sender<Option<Arc<PublishedMap>>>,
}

impl MapPublisher {
    pub fn new() -> (Self, MapWatch) {
        let (maps, watching) = watch::channel(None);
        (Self { maps }, watching)
    }

    /// A further receiver of what is published.
    pub fn subscribe(&self) -> MapWatch {
        self.maps.subscribe()
    }

    /// Publishes the view of `cluster`, stamped `now_ms`, if it is newer than the one out;
    /// whether it was.
    pub fn publish(&self, cluster: &Cluster, now_ms: u64) -> bool {
        let version = cluster.map_version();
        if self
            .maps
            .borrow()
            .as_ref()
            .is_some_and(|out| out.version() >= version)
        {
            return false;
        }
        let map =
            topgun_cluster::view::partition_map(cluster, i64::try_from(now_ms).unwrap_or(i64::MAX));
        let frame = Message::PartitionMap(map.clone()).encode().into();
        self.maps
            .send_replace(Some(Arc::new(PublishedMap { map, frame })));
        true
    }
}

/// One connection's pushes: the newest map once it is newer than what the connection was
/// sent, at most one per `interval` (a burst of commits sends only the last).
#[derive(Debug)]
pub struct MapPush {
    maps: MapWatch,
    sent: u32,
    last: tokio::time::Instant,
    interval: std::time::Duration,
}

impl MapPush {
    pub fn new(maps: MapWatch, interval: std::time::Duration) -> Self {
        Self {
            maps,
            sent: 0,
            last: tokio::time::Instant::now()
                .checked_sub(interval)
                .unwrap_or_else(tokio::time::Instant::now),
            interval,
        }
    }

    /// Completes with the map to push once there is one newer than what was sent and the
    /// interval since the last push has passed; never while `open` is false. Cancel-safe:
    /// dropped and called again, it finds the same map still due.
    pub async fn due(&mut self, open: bool) -> Arc<PublishedMap> {
        loop {
            let newer = self
                .maps
                .borrow_and_update()
                .clone()
                .filter(|m| m.version() > self.sent);
            if let Some(map) = newer.filter(|_| open) {
                tokio::time::sleep_until(self.last + self.interval).await;
                // Whatever committed during the wait goes instead: always the newest.
                let newest = self.maps.borrow_and_update().clone().unwrap_or(map);
                self.sent(newest.version());
                return newest;
            }
            if self.maps.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// The connection was sent the map of `version` (pushed, or asked for).
    pub fn sent(&mut self, version: u32) {
        self.sent = self.sent.max(version);
        self.last = tokio::time::Instant::now();
    }
}
