//! Where a key lives: the key → partition → shard rule, and the handle that sends requests
//! to the shard tasks.
//!
//! Partition `p` (= `fnv1a(key) % 271`, the TS client's rule) belongs to shard `p % N`. This
//! is the one place that says so: every router of writes, reads and the server's own records
//! asks [`Shards`]. The cluster will put "the node owning the partition" behind the same
//! methods.
//!
//! Each shard's queue is a bounded FIFO: a full one makes the sender wait, and a request
//! sent to several shards in turn is seen by each after the sender's earlier ones. Every
//! request also takes a place at the [`QueueGate`], the server-wide bound on what waits in the
//! queues that the admin API can change while the server runs; its shard frees the place when
//! it takes the request off its queue.

use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, join_all};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use topgun_core::hash::{PARTITION_COUNT, partition_id};

use crate::data::gate::{QueueGate, Slot};
use crate::data::shard::service::Request;

/// Requests waiting for one shard.
pub const SHARD_QUEUE_LEN: usize = 1024;

/// A shard task has stopped: only while the server shuts down.
#[derive(Debug, Clone, Copy, Error)]
#[error("a partition shard stopped; the server is shutting down")]
pub struct ShardGone;

/// How many shards `configured` asks for: at least one, and no more than one per partition.
pub fn shard_count(configured: usize) -> usize {
    configured.clamp(1, PARTITION_COUNT as usize)
}

/// The shard holding `key` among `count` shards.
pub fn shard_of(key: &str, count: usize) -> usize {
    partition_id(key) as usize % count
}

/// A request on a shard's queue, holding its place at the gate until its shard takes it.
#[derive(Debug)]
pub struct Queued {
    pub request: Request,
    pub slot: Slot,
}

/// A shard task's queue, as its senders see it.
pub type ShardQueue = mpsc::Sender<Queued>;

/// A shard's queue and its receiving end, sized [`SHARD_QUEUE_LEN`].
pub fn shard_queue() -> (ShardQueue, mpsc::Receiver<Queued>) {
    mpsc::channel(SHARD_QUEUE_LEN)
}

/// The queues of the shard tasks; cheap to clone, shared by every router.
#[derive(Debug, Clone)]
pub struct Shards {
    queues: Arc<[ShardQueue]>,
    gate: Arc<QueueGate>,
}

impl Shards {
    /// Over the tasks' queues, in shard order (at least one); the gate lets as many requests
    /// wait as the queues hold.
    pub fn new(queues: Vec<ShardQueue>) -> Self {
        assert!(!queues.is_empty(), "a server has at least one shard");
        let gate = QueueGate::new(queues.len() * SHARD_QUEUE_LEN);
        Self {
            queues: queues.into(),
            gate,
        }
    }

    /// The bound on requests waiting in the queues.
    pub fn gate(&self) -> &Arc<QueueGate> {
        &self.gate
    }

    /// How many shards there are.
    pub fn count(&self) -> usize {
        self.queues.len()
    }

    /// The shard holding `key`.
    pub fn of(&self, key: &str) -> usize {
        shard_of(key, self.count())
    }

    /// `items` by the shard of each one's key, in their order within each shard.
    pub fn split<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        key: impl Fn(&T) -> &str,
    ) -> Vec<Vec<T>> {
        let mut parts: Vec<Vec<T>> = (0..self.count()).map(|_| Vec::new()).collect();
        for item in items {
            let shard = self.of(key(&item));
            parts[shard].push(item);
        }
        parts
    }

    /// Puts `request` on one shard's queue, waiting for room.
    pub async fn send(&self, shard: usize, request: Request) -> Result<(), ShardGone> {
        let slot = self.gate.enter().await;
        self.queues[shard]
            .send(Queued { request, slot })
            .await
            .map_err(|_| ShardGone)
    }

    /// Puts a request made by `request` on every shard's queue, in shard order.
    pub async fn send_each(&self, mut request: impl FnMut() -> Request) -> Result<(), ShardGone> {
        for shard in 0..self.count() {
            self.send(shard, request()).await?;
        }
        Ok(())
    }

    /// Puts one request on every shard's queue (built around its reply channel); the future
    /// yields every shard's answer in shard order, or `None` if a shard is gone.
    pub async fn ask_all<T: Send + 'static>(
        &self,
        mut request: impl FnMut(oneshot::Sender<T>) -> Request,
    ) -> Result<BoxFuture<'static, Option<Vec<T>>>, ShardGone> {
        let mut replies = Vec::with_capacity(self.count());
        for shard in 0..self.count() {
            let (reply, answer) = oneshot::channel();
            self.send(shard, request(reply)).await?;
            replies.push(answer);
        }
        Ok(async move {
            join_all(replies)
                .await
                .into_iter()
                .map(Result::ok)
                .collect()
        }
        .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_s_shard_is_its_partition_s_and_split_keeps_order() {
        let (tx, _rx) = shard_queue();
        let shards = Shards::new(vec![tx.clone(), tx.clone(), tx]);
        let keys = ["a", "b", "c", "d", "e", "f", "g", "h"];
        for key in keys {
            assert_eq!(shards.of(key), partition_id(key) as usize % 3);
        }
        let parts = shards.split(keys, |k| k);
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), keys.len());
        for (shard, part) in parts.iter().enumerate() {
            assert!(part.iter().all(|k| shards.of(k) == shard));
            let mut order = part.iter().map(|k| keys.iter().position(|x| x == k));
            let first = order.next().flatten();
            assert!(
                order
                    .try_fold(first, |prev, at| (at > prev).then_some(at))
                    .is_some()
            );
        }
    }
}
