//! The replicated state machine (`RaftStateMachine`): committed entries go through
//! [`ControlState::apply`] — the same code in both storage flavours — and every applied batch
//! is published on a watch channel.
//!
//! The state itself is transient: only snapshots are stored (in `raft.redb` for the redb
//! flavour). On restart openraft installs the last snapshot and re-applies the log up to the
//! saved committed id, so the recovered state is the one the node had applied.
//!
//! A snapshot's bytes are the MsgPack of the `ControlState`; its meta carries the last
//! applied log id and the membership at that point.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_util::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use tokio::sync::watch;
use topgun_cluster::{CommandResult, ControlState};

use crate::store::file::{RaftFile, StoredSnapshot, decode, encode};
use crate::types::{Applied, Entry, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};

/// The state machine store; clones share one state (the snapshot builder is a clone).
#[derive(Debug, Clone)]
pub(crate) struct StateMachineStore {
    /// std `Mutex`: never held across an `.await`.
    inner: Arc<Mutex<SmInner>>,
    /// `None` in the memory flavour.
    file: Option<Arc<RaftFile>>,
    published: Arc<watch::Sender<Arc<Applied>>>,
}

#[derive(Debug, Default)]
struct SmInner {
    /// `Arc` so a publish shares it; `make_mut` copies only while a reader still holds the
    /// previous version.
    state: Arc<ControlState>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshot: Option<StoredSnapshot>,
}

impl SmInner {
    /// Applies one entry; its answer is what `client_write` returns for it.
    fn apply_entry(&mut self, entry: Entry) -> CommandResult {
        let log_id = entry.log_id;
        if let Some(last) = &self.last_applied {
            assert!(
                log_id.index == last.index + 1,
                "applied {log_id} after {last}: entries must apply in order, once"
            );
        }
        self.last_applied = Some(log_id);
        match entry.payload {
            EntryPayload::Normal(proposal) => {
                Arc::make_mut(&mut self.state)
                    .apply(proposal.cmd, proposal.now_ms)
                    .result
            }
            EntryPayload::Membership(membership) => {
                self.membership = StoredMembership::new(Some(log_id), membership);
                CommandResult::Done
            }
            // A new leader's first entry: nothing to apply.
            EntryPayload::Blank => CommandResult::Unchanged,
        }
    }

    fn applied(&self) -> Arc<Applied> {
        Arc::new(Applied {
            applied_index: self.last_applied.map_or(0, |id| id.index),
            state: Arc::clone(&self.state),
        })
    }
}

impl StateMachineStore {
    pub(crate) fn new(
        file: Option<Arc<RaftFile>>,
        snapshot: Option<StoredSnapshot>,
    ) -> (Self, watch::Receiver<Arc<Applied>>) {
        let (tx, rx) = watch::channel(Arc::new(Applied::default()));
        let inner = SmInner {
            snapshot,
            ..SmInner::default()
        };
        let store = Self {
            inner: Arc::new(Mutex::new(inner)),
            file,
            published: Arc::new(tx),
        };
        (store, rx)
    }

    fn lock(&self) -> MutexGuard<'_, SmInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, applied: Arc<Applied>) {
        // No receiver left is fine: nobody is reading the state any more.
        self.published.send_replace(applied);
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let (state, meta) = {
            let inner = self.lock();
            let meta = SnapshotMeta {
                last_log_id: inner.last_applied,
                last_membership: inner.membership.clone(),
            };
            (Arc::clone(&inner.state), meta)
        };
        let stored = StoredSnapshot {
            meta,
            data: encode(&*state)?,
        };
        if let Some(file) = &self.file {
            file.save_snapshot(&stored)?;
        }
        self.lock().snapshot = Some(stored.clone());
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: stored.data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let inner = self.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    /// Applies the batch, publishes the state once, then answers the proposers: whoever sees
    /// its proposal answered also sees its effect in `state()`.
    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut answers = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let result = self.lock().apply_entry(entry);
            if let Some(responder) = responder {
                answers.push((responder, result));
            }
        }
        let applied = self.lock().applied();
        self.publish(applied);
        for (responder, result) in answers {
            responder.send(result);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        data: Vec<u8>,
    ) -> Result<(), io::Error> {
        let state: ControlState = decode(&data)?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        if let Some(file) = &self.file {
            file.save_snapshot(&stored)?;
        }
        let applied = {
            let mut inner = self.lock();
            inner.state = Arc::new(state);
            inner.last_applied = meta.last_log_id;
            inner.membership = meta.last_membership.clone();
            inner.snapshot = Some(stored);
            inner.applied()
        };
        self.publish(applied);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self.lock().snapshot.clone().map(|s| Snapshot {
            meta: s.meta,
            snapshot: s.data,
        }))
    }
}
