//! openraft's network (`RaftNetworkV2`) over our own byte-level seam, [`PeerRpc`]: the server
//! carries the bytes on its control channel (CLUSTER.md §13), tests route them in process,
//! and the simulation may carry them on a simulated net.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkV2};
use thiserror::Error;

use crate::types::{MemberAddr, Snapshot, TypeConfig, Vote};
use crate::wire::{self, Reply, Request};

/// A boxed, sendable future: the shape of every call across our trait boundaries, so that
/// they stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a call to a peer produced no reply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RpcError {
    /// The request was **not** delivered (no connection, peer cut off): safe to retry.
    #[error("peer {target} is unreachable: {reason}")]
    Unreachable { target: u64, reason: String },
    /// No reply in time; the request may or may not have been served.
    #[error("no reply from peer {target} within {timeout_ms} ms")]
    Timeout { target: u64, timeout_ms: u64 },
}

/// Carries one encoded request to a peer and brings its encoded reply back. The receiving
/// side hands the bytes to [`crate::RaftControl::handle`].
pub trait PeerRpc: Send + Sync + 'static {
    /// Sends `request` to `target` (reachable at `node`) and returns its reply, giving up
    /// after `timeout`.
    fn call(
        &self,
        target: u64,
        node: &MemberAddr,
        request: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, RpcError>>;
}

/// Hands openraft one [`Network`] per peer, all over the same [`PeerRpc`].
#[derive(Clone)]
pub(crate) struct NetworkFactory {
    pub(crate) rpc: Arc<dyn PeerRpc>,
}

impl std::fmt::Debug for NetworkFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NetworkFactory")
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: u64, node: &MemberAddr) -> Network {
        Network {
            rpc: Arc::clone(&self.rpc),
            target,
            node: node.clone(),
        }
    }
}

/// openraft's client for one peer.
pub(crate) struct Network {
    rpc: Arc<dyn PeerRpc>,
    target: u64,
    node: MemberAddr,
}

/// A failed round trip, before it is shaped into whichever error openraft expects.
#[derive(Debug, Error)]
enum CallError {
    /// Not delivered: openraft backs off before trying this peer again.
    #[error(transparent)]
    Unreachable(RpcError),
    #[error("{0}")]
    Network(String),
}

impl CallError {
    fn into_rpc(self) -> RPCError<TypeConfig> {
        match self {
            Self::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            Self::Network(_) => RPCError::Network(NetworkError::new(&self)),
        }
    }

    fn into_streaming(self) -> StreamingError<TypeConfig> {
        match self {
            Self::Unreachable(e) => StreamingError::Unreachable(Unreachable::new(&e)),
            Self::Network(_) => StreamingError::Network(NetworkError::new(&self)),
        }
    }
}

/// The wrong kind of reply, or a failure the peer reported.
fn unexpected(reply: Reply) -> CallError {
    match reply {
        Reply::Failed(failure) => CallError::Network(failure.to_string()),
        other => CallError::Network(format!("unexpected reply {other:?}")),
    }
}

impl Network {
    async fn round_trip(&self, request: &Request, timeout: Duration) -> Result<Reply, CallError> {
        let bytes = wire::encode(request).map_err(|e| CallError::Network(e.to_string()))?;
        let reply = self
            .rpc
            .call(self.target, &self.node, bytes, timeout)
            .await
            .map_err(|e| match e {
                RpcError::Unreachable { .. } => CallError::Unreachable(e),
                RpcError::Timeout { .. } => CallError::Network(e.to_string()),
            })?;
        wire::decode(&reply).map_err(|e| CallError::Network(e.to_string()))
    }
}

impl RaftNetworkV2<TypeConfig> for Network {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .round_trip(&Request::Append(rpc), option.hard_ttl())
            .await
        {
            Ok(Reply::Append(reply)) => Ok(reply),
            Ok(other) => Err(unexpected(other).into_rpc()),
            Err(e) => Err(e.into_rpc()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .round_trip(&Request::Vote(rpc), option.hard_ttl())
            .await
        {
            Ok(Reply::Vote(reply)) => Ok(reply),
            Ok(other) => Err(unexpected(other).into_rpc()),
            Err(e) => Err(e.into_rpc()),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .round_trip(&Request::PreVote(rpc), option.hard_ttl())
            .await
        {
            Ok(Reply::Vote(reply)) => Ok(reply),
            Ok(other) => Err(unexpected(other).into_rpc()),
            Err(e) => Err(e.into_rpc()),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let request = Request::Snapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot,
        };
        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            reply = self.round_trip(&request, option.hard_ttl()) => reply,
        };
        match reply {
            Ok(Reply::Snapshot(reply)) => Ok(reply),
            Ok(other) => Err(unexpected(other).into_streaming()),
            Err(e) => Err(e.into_streaming()),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .round_trip(&Request::TransferLeader(req), option.hard_ttl())
            .await
        {
            Ok(Reply::TransferLeader(reply)) => Ok(reply),
            Ok(other) => Err(unexpected(other).into_rpc()),
            Err(e) => Err(e.into_rpc()),
        }
    }
}
