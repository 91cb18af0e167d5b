//! Raft's messages over the control channel: `topgun-control`'s [`PeerRpc`] on our [`Rpc`].

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use topgun_control::{BoxFuture, MemberAddr, PeerRpc, RpcError};

use super::hello::Channel;
use super::rpc::{CallError, Rpc};
use super::wire::RAFT;

/// Carries encoded Raft requests to the member at a node's cluster address.
pub(crate) struct RaftRpc(pub Arc<Rpc>);

impl PeerRpc for RaftRpc {
    fn call(
        &self,
        target: u64,
        node: &MemberAddr,
        request: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, RpcError>> {
        let rpc = Arc::clone(&self.0);
        let addr = node.cluster_addr.clone();
        async move {
            match rpc
                .call(&addr, Channel::Control, RAFT, &request, timeout)
                .await
            {
                Ok(reply) => Ok(reply.to_vec()),
                Err(CallError::Timeout(_)) => Err(RpcError::Timeout {
                    target,
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                }),
                Err(other) => Err(RpcError::Unreachable {
                    target,
                    reason: other.to_string(),
                }),
            }
        }
        .boxed()
    }
}
