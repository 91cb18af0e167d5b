//! The bound on data requests waiting in the shards' queues (`maxConcurrentOperations`,
//! COMPAT §3.6), changeable while the server runs.
//!
//! Each shard queue is a bounded channel sized at start; the gate is a second, server-wide
//! bound below the queues' total that the admin API can move either way at once. A request
//! takes a [`Slot`] before it is queued and gives it back when its shard takes it off the
//! queue, so the gate counts exactly what waits. A sender finding the gate full waits, as it
//! waits for a full queue: backpressure, not refusal.
//!
//! Invariants:
//! * at most `limit` slots are taken once every sender that passed an older, larger limit has
//!   been dequeued (lowering the limit never takes a slot back; it stops new ones);
//! * a freed slot or a raised limit wakes a waiting sender: no sender waits while the gate
//!   has room.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The gate: how many requests wait in the shards' queues, and how many may.
#[derive(Debug)]
pub struct QueueGate {
    taken: AtomicUsize,
    limit: AtomicUsize,
    /// The most `limit` can be: the queues' total capacity.
    ceiling: usize,
    freed: Notify,
}

/// One queued request's place; dropping it frees the place.
#[derive(Debug)]
pub struct Slot(Arc<QueueGate>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::AcqRel);
        self.0.freed.notify_one();
    }
}

impl QueueGate {
    /// A gate letting `ceiling` requests wait, as many as the queues hold.
    pub fn new(ceiling: usize) -> Arc<Self> {
        let ceiling = ceiling.max(1);
        Arc::new(Self {
            taken: AtomicUsize::new(0),
            limit: AtomicUsize::new(ceiling),
            ceiling,
            freed: Notify::new(),
        })
    }

    /// How many requests may wait.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    /// The largest limit the queues allow.
    pub fn ceiling(&self) -> usize {
        self.ceiling
    }

    /// Sets the limit, if within `1..=ceiling`; returns whether it was.
    pub fn set_limit(&self, limit: usize) -> bool {
        if !(1..=self.ceiling).contains(&limit) {
            return false;
        }
        self.limit.store(limit, Ordering::Release);
        // A raised limit may let every waiter in.
        self.freed.notify_waiters();
        true
    }

    /// A place for one request, waiting while the gate is full.
    pub async fn enter(self: &Arc<Self>) -> Slot {
        loop {
            // Registered before the check: a slot freed between the check and the wait
            // still wakes this sender.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.try_take() {
                return Slot(Arc::clone(self));
            }
            freed.await;
        }
    }

    fn try_take(&self) -> bool {
        let limit = self.limit();
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                (taken < limit).then_some(taken + 1)
            })
            .is_ok()
    }

    /// How many requests wait now.
    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

    async fn blocked(gate: &Arc<QueueGate>) -> bool {
        tokio::time::timeout(Duration::from_millis(50), gate.enter())
            .await
            .is_err()
    }

    #[tokio::test]
    async fn a_full_gate_holds_senders_until_a_slot_is_freed() {
        let gate = QueueGate::new(2);
        let a = gate.enter().await;
        let _b = gate.enter().await;
        assert_eq!(gate.taken(), 2);
        assert!(blocked(&gate).await);
        let waiting = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move { gate.enter().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert!(c.is_ok(), "the freed slot went to the waiting sender");
        assert_eq!(gate.taken(), 2);
    }

    #[tokio::test]
    async fn the_limit_moves_either_way_within_the_ceiling() {
        let gate = QueueGate::new(4);
        assert!(!gate.set_limit(0));
        assert!(!gate.set_limit(5));
        assert!(gate.set_limit(1));
        let first = gate.enter().await;
        assert!(blocked(&gate).await, "lowered to one");
        let waiting = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move { gate.enter().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(gate.set_limit(3), "raised: the waiter gets in at once");
        let second = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert!(second.is_ok());
        let _third = gate.enter().await;
        assert!(blocked(&gate).await);
        drop(first);
        assert_eq!(gate.limit(), 3);
        assert_eq!(gate.ceiling(), 4);
    }
}
