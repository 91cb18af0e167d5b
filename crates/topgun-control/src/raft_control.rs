//! [`RaftControl`]: the [`ControlPlane`] on openraft.
//!
//! Proposals: a node tries its own Raft first; a non-leader's refusal names the leader, and
//! the proposal goes there as a `Propose` request. At most [`PROPOSE_ATTEMPTS_MAX`] attempts,
//! each either local or one hop, and each retry only after a refusal that proves nothing was
//! appended — so a retried proposal is never applied twice by this loop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, Raft, ServerState, SnapshotPolicy};
use tokio::sync::watch;
use topgun_cluster::{Command, CommandResult};

use crate::control::{ControlConfig, ControlMetrics, ControlPlane, Role};
use crate::error::{ControlError, ProposeError};
use crate::network::{BoxFuture, NetworkFactory, PeerRpc, RpcError};
use crate::state_machine::StateMachineStore;
use crate::store::file::RaftFile;
use crate::store::{self, Storage};
use crate::types::{Applied, LogId, MemberAddr, Proposal, SnapshotMeta, TypeConfig, Vote};
use crate::wire::{self, RemoteFailure, Reply, Request};

/// Attempts per proposal. With the backoff between them (one heartbeat doubling up to the
/// longest election timeout) they span a few elections, then the proposal gives up rather
/// than loop.
pub const PROPOSE_ATTEMPTS_MAX: u32 = 8;

pub(crate) type RaftNode = Raft<TypeConfig, StateMachineStore>;

/// One control-plane node on openraft.
pub struct RaftControl {
    pub(crate) id: u64,
    addr: MemberAddr,
    pub(crate) raft: RaftNode,
    rpc: Arc<dyn PeerRpc>,
    applied: watch::Receiver<Arc<Applied>>,
    config: ControlConfig,
    /// The redb flavour's file, released by `shutdown`.
    file: Option<Arc<RaftFile>>,
}

impl std::fmt::Debug for RaftControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftControl")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// One step of a proposal.
enum Attempt {
    /// Applied as log entry `index`.
    Done { index: u64, result: CommandResult },
    /// Refused before anything was appended; try `leader` next (if known).
    Redirect {
        leader: Option<u64>,
        node: Option<MemberAddr>,
    },
}

fn raft_config(config: &ControlConfig) -> Result<openraft::Config, ControlError> {
    let raft = openraft::Config {
        cluster_name: "topgun-control".to_owned(),
        heartbeat_interval: config.heartbeat_ms,
        election_timeout_min: config.election_timeout_min_ms,
        election_timeout_max: config.election_timeout_max_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_after_logs),
        max_in_snapshot_log_to_keep: config.max_in_snapshot_log_to_keep,
        ..openraft::Config::default()
    };
    raft.validate()
        .map_err(|e| ControlError::Config(e.to_string()))
}

/// The leader's wall clock, stamped into each proposal it appends.
fn wall_clock_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// openraft's own checks on an incoming snapshot, made before it sees one: it asserts them
/// inside its core task (a forged or stale snapshot would stop this node's Raft), and we would
/// rather refuse the request. A snapshot never holds a log id beyond its sender's leadership,
/// and one beyond our committed id must also lie at a greater index.
fn snapshot_fits(
    vote: &Vote,
    meta: &SnapshotMeta,
    committed: Option<&LogId>,
) -> Result<(), String> {
    let Some(last) = &meta.last_log_id else {
        return Ok(());
    };
    if last.leader_id > vote.leader_id {
        return Err(format!(
            "snapshot {last} lies beyond the sender's vote {vote}"
        ));
    }
    if let Some(committed) = committed
        && last > committed
        && last.index <= committed.index
    {
        return Err(format!(
            "snapshot {last} contradicts the committed log at {committed}"
        ));
    }
    Ok(())
}

fn close(file: Option<&RaftFile>) {
    if let Some(file) = file {
        file.close();
    }
}

fn fatal<E: std::fmt::Display>(e: E) -> ControlError {
    ControlError::Stopped(e.to_string())
}

impl RaftControl {
    /// Opens the storage, recovers whatever it holds and starts the Raft node. A node whose
    /// storage holds a log rejoins its group by itself; a new one waits for `initialize` or
    /// for a leader to add it.
    pub async fn open(
        id: u64,
        addr: MemberAddr,
        config: ControlConfig,
        storage: &Storage,
        rpc: Arc<dyn PeerRpc>,
    ) -> Result<Self, ControlError> {
        let raft_config = Arc::new(raft_config(&config)?);
        let opened = store::open(storage).map_err(|e| ControlError::Open(e.to_string()))?;
        let network = NetworkFactory {
            rpc: Arc::clone(&rpc),
        };
        let file = opened.file;
        let raft = Raft::new(id, raft_config, network, opened.log, opened.state_machine)
            .await
            .map_err(|e| ControlError::Open(e.to_string()));
        let raft = match raft {
            Ok(raft) => raft,
            Err(e) => {
                close(file.as_deref());
                return Err(e);
            }
        };
        Ok(Self {
            id,
            addr,
            raft,
            rpc,
            applied: opened.applied,
            config,
            file,
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn addr(&self) -> &MemberAddr {
        &self.addr
    }

    /// Serves one request from a peer and returns the encoded reply. Never panics on bad
    /// bytes: a request that does not decode gets a `Malformed` failure reply.
    pub async fn handle(&self, request: &[u8]) -> Vec<u8> {
        let reply = match wire::decode::<Request>(request) {
            Ok(request) => self.serve(request).await,
            Err(e) => Reply::Failed(RemoteFailure::Malformed(e.to_string())),
        };
        wire::encode_reply(&reply)
    }

    async fn serve(&self, request: Request) -> Reply {
        let stopped = |e: openraft::errors::Fatal<TypeConfig>| {
            Reply::Failed(RemoteFailure::Stopped(e.to_string()))
        };
        match request {
            Request::Append(rpc) => match self.raft.append_entries(rpc).await {
                Ok(reply) => Reply::Append(reply),
                Err(e) => Reply::Failed(RemoteFailure::Stopped(e.to_string())),
            },
            Request::Vote(rpc) => match self.raft.vote(rpc).await {
                Ok(reply) => Reply::Vote(reply),
                Err(e) => Reply::Failed(RemoteFailure::Stopped(e.to_string())),
            },
            Request::PreVote(rpc) => match self.raft.pre_vote(rpc).await {
                Ok(reply) => Reply::Vote(reply),
                Err(e) => Reply::Failed(RemoteFailure::Stopped(e.to_string())),
            },
            Request::Snapshot { vote, meta, data } => {
                // Decoded here first: a snapshot that openraft accepted but the state machine
                // could not read would stop this node's Raft with a storage error.
                if let Err(e) = wire::decode::<topgun_cluster::ControlState>(&data) {
                    return Reply::Failed(RemoteFailure::Malformed(format!("snapshot: {e}")));
                }
                let committed = self.raft.metrics().borrow_watched().local_committed;
                if let Err(why) = snapshot_fits(&vote, &meta, committed.as_ref()) {
                    return Reply::Failed(RemoteFailure::Malformed(why));
                }
                let snapshot = crate::types::Snapshot {
                    meta,
                    snapshot: data,
                };
                self.raft
                    .install_full_snapshot(vote, snapshot)
                    .await
                    .map_or_else(stopped, Reply::Snapshot)
            }
            Request::TransferLeader(rpc) => self
                .raft
                .handle_transfer_leader(rpc)
                .await
                .map_or_else(stopped, Reply::TransferLeader),
            Request::Propose(cmd) => match self.propose_local(cmd).await {
                Ok(Attempt::Done { index, result }) => Reply::Proposed { index, result },
                Ok(Attempt::Redirect { leader, node }) => Reply::NotLeader { leader, node },
                Err(ProposeError::Remote(failure)) => Reply::Failed(failure),
                Err(ProposeError::Indeterminate { reason }) => {
                    Reply::Failed(RemoteFailure::Indeterminate(reason))
                }
                Err(e) => Reply::Failed(RemoteFailure::Other(e.to_string())),
            },
        }
    }

    /// Appends `cmd` if this node leads, stamped with this node's clock.
    async fn propose_local(&self, cmd: Command) -> Result<Attempt, ProposeError> {
        let proposal = Proposal {
            cmd,
            now_ms: wall_clock_ms(),
        };
        match self.raft.client_write(proposal).await {
            Ok(reply) => Ok(Attempt::Done {
                index: reply.log_id.index,
                result: reply.data,
            }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => {
                Ok(Attempt::Redirect {
                    leader: to.leader_id,
                    node: to.leader_node,
                })
            }
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(to))) => {
                Err(ProposeError::Indeterminate {
                    reason: to.to_string(),
                })
            }
            Err(RaftError::APIError(other)) => Err(ProposeError::Remote(RemoteFailure::Other(
                other.to_string(),
            ))),
            Err(RaftError::Fatal(e)) => Err(ProposeError::Stopped {
                reason: e.to_string(),
            }),
        }
    }

    /// Sends `cmd` to `leader` as a `Propose` request.
    async fn propose_remote(
        &self,
        leader: u64,
        node: &MemberAddr,
        cmd: Command,
    ) -> Result<Attempt, ProposeError> {
        let request = wire::encode(&Request::Propose(cmd))
            .map_err(|e| ProposeError::Remote(RemoteFailure::Malformed(e.to_string())))?;
        let timeout = Duration::from_millis(self.config.propose_timeout_ms);
        let reply = match self.rpc.call(leader, node, request, timeout).await {
            Ok(bytes) => wire::decode::<Reply>(&bytes),
            // Not delivered: wait for news of a leader and try again.
            Err(RpcError::Unreachable { .. }) => {
                return Ok(Attempt::Redirect {
                    leader: None,
                    node: None,
                });
            }
            Err(e @ RpcError::Timeout { .. }) => {
                return Err(ProposeError::Indeterminate {
                    reason: e.to_string(),
                });
            }
        };
        match reply {
            Ok(Reply::Proposed { index, result }) => Ok(Attempt::Done { index, result }),
            Ok(Reply::NotLeader { leader, node }) => Ok(Attempt::Redirect { leader, node }),
            Ok(Reply::Failed(RemoteFailure::Indeterminate(reason))) => {
                Err(ProposeError::Indeterminate { reason })
            }
            Ok(Reply::Failed(failure)) => Err(ProposeError::Remote(failure)),
            Ok(other) => Err(ProposeError::Remote(RemoteFailure::Other(format!(
                "unexpected reply {other:?}"
            )))),
            // The reply was lost in decoding after the leader may have applied it.
            Err(e) => Err(ProposeError::Indeterminate {
                reason: e.to_string(),
            }),
        }
    }

    /// Where to send the next attempt according to this node's metrics: `None` for itself
    /// (also when no leader is known: its own Raft will redirect or refuse again).
    fn leader_target(&self) -> Option<(u64, MemberAddr)> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let leader = metrics.current_leader.filter(|&l| l != self.id)?;
        let node = metrics.membership_config.get_node(&leader).cloned()?;
        Some((leader, node))
    }

    /// The pause before retry number `attempt`: doubling from one heartbeat, capped at the
    /// longest election timeout, so a leader change has time to happen.
    fn backoff(&self, attempt: u32) -> Duration {
        let ms = self
            .config
            .heartbeat_ms
            .saturating_mul(1 << attempt.min(16))
            .min(self.config.election_timeout_max_ms);
        Duration::from_millis(ms)
    }

    /// Waits until this node has applied `index` — at once on the leader, which answers only
    /// after applying — so that a proposer reads its own write in `state()`. Bounded by
    /// `propose_timeout_ms`: the entry is committed either way, so the result stands.
    async fn await_applied(&self, index: u64) {
        let mut applied = self.applied.clone();
        let bound = Duration::from_millis(self.config.propose_timeout_ms);
        let caught_up = applied.wait_for(|a| a.applied_index >= index);
        if tokio::time::timeout(bound, caught_up).await.is_err() {
            tracing::warn!(index, "proposal committed but not yet applied here");
        }
    }

    async fn propose_bounded(&self, cmd: Command) -> Result<CommandResult, ProposeError> {
        // `None`: this node; `Some`: a peer believed to lead.
        let mut target: Option<(u64, MemberAddr)> = None;
        let mut wait = false;
        for attempt in 0..PROPOSE_ATTEMPTS_MAX {
            if wait {
                tokio::time::sleep(self.backoff(attempt)).await;
                target = self.leader_target();
            }
            let tried = target.as_ref().map_or(self.id, |(id, _)| *id);
            let outcome = match &target {
                None => self.propose_local(cmd.clone()).await?,
                Some((leader, node)) => self.propose_remote(*leader, node, cmd.clone()).await?,
            };
            match outcome {
                Attempt::Done { index, result } => {
                    self.await_applied(index).await;
                    return Ok(result);
                }
                // A definite answer naming another node: go there at once.
                Attempt::Redirect {
                    leader: Some(leader),
                    node: Some(node),
                } if leader != tried => {
                    target = (leader != self.id).then_some((leader, node));
                    wait = false;
                }
                // No leader known, or the same one again: an election or a transfer is under
                // way; let it finish.
                Attempt::Redirect { .. } => wait = true,
            }
        }
        Err(ProposeError::NoLeader {
            attempts: PROPOSE_ATTEMPTS_MAX,
        })
    }

    fn not_leader(&self) -> ControlError {
        ControlError::NotLeader {
            leader: self.current_leader(),
        }
    }

    fn current_leader(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().current_leader
    }

    fn membership_error(
        &self,
        e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
    ) -> ControlError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => self.not_leader(),
            RaftError::APIError(other) => ControlError::Refused(other.to_string()),
            RaftError::Fatal(e) => fatal(e),
        }
    }

    async fn add_learner_bounded(&self, id: u64, addr: MemberAddr) -> Result<(), ControlError> {
        let timeout_ms = self.config.learner_catch_up_ms;
        let added = tokio::time::timeout(
            Duration::from_millis(timeout_ms),
            self.raft.add_learner(id, addr, true),
        )
        .await
        .map_err(|_| ControlError::Timeout {
            what: "add_learner",
            timeout_ms,
        })?;
        added.map(drop).map_err(|e| self.membership_error(e))
    }

    async fn change(
        &self,
        change: ChangeMembers<u64, MemberAddr>,
        retain: bool,
    ) -> Result<(), ControlError> {
        self.raft
            .change_membership(change, retain)
            .await
            .map(drop)
            .map_err(|e| self.membership_error(e))
    }

    async fn remove(&self, id: u64) -> Result<(), ControlError> {
        if !self.raft.is_leader() {
            return Err(self.not_leader());
        }
        let metrics = self.metrics();
        if metrics.voters.contains(&id) {
            self.change(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
        } else if metrics.learners.contains(&id) {
            self.change(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
        } else {
            Ok(())
        }
    }

    fn snapshot_metrics(&self) -> ControlMetrics {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        ControlMetrics {
            id: self.id,
            role: match m.state {
                ServerState::Leader => Role::Leader,
                ServerState::Candidate => Role::Candidate,
                ServerState::Follower => Role::Follower,
                ServerState::Learner => Role::Learner,
                ServerState::Shutdown => Role::Shutdown,
            },
            term: m.current_term,
            leader: m.current_leader,
            applied_index: m.last_applied.map_or(0, |id| id.index),
            snapshot_index: m.snapshot.map(|id| id.index),
            purged_index: m.purged.map(|id| id.index),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
        }
    }
}

impl ControlPlane for RaftControl {
    fn propose(&self, cmd: Command) -> BoxFuture<'_, Result<CommandResult, ProposeError>> {
        Box::pin(self.propose_bounded(cmd))
    }

    fn state(&self) -> watch::Receiver<Arc<Applied>> {
        self.applied.clone()
    }

    fn leader(&self) -> Option<u64> {
        self.current_leader()
    }

    fn is_leader(&self) -> bool {
        self.raft.is_leader()
    }

    fn metrics(&self) -> ControlMetrics {
        self.snapshot_metrics()
    }

    fn initialize(
        &self,
        members: BTreeMap<u64, MemberAddr>,
    ) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(async move {
            self.raft.initialize(members).await.map_err(|e| match e {
                RaftError::APIError(e) => ControlError::AlreadyInitialized(e.to_string()),
                RaftError::Fatal(e) => fatal(e),
            })
        })
    }

    fn add_learner(&self, id: u64, addr: MemberAddr) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(self.add_learner_bounded(id, addr))
    }

    fn change_voters(&self, voters: BTreeSet<u64>) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(self.change(ChangeMembers::ReplaceAllVoters(voters), true))
    }

    fn remove_node(&self, id: u64) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(self.remove(id))
    }

    fn transfer_leader(&self, to: u64) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(async move {
            if !self.raft.is_leader() {
                return Err(self.not_leader());
            }
            self.raft.trigger().transfer_leader(to).await.map_err(fatal)
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(async move {
            let stopped = self.raft.shutdown().await.map_err(fatal);
            close(self.file.as_deref());
            stopped
        })
    }
}
