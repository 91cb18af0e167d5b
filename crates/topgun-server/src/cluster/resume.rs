//! A durable member's Raft state across restarts (CLUSTER.md §3.2, §3.4). With a storage
//! backend that writes a data directory, the control log lives in `<data dir>/raft.redb`,
//! and `<data dir>/cluster-member.json` says whose it is: the member's name, its Raft id
//! and its cluster's uuid (written once the member is in a cluster).
//!
//! A member restarted over such a directory asks its seeds where its cluster's leader is
//! and asks the leader (`REJOIN`) whether it still lists the member under that id:
//! * yes — it *resumes*: its Raft node opens over the kept log under its old id, and the
//!   leader catches it up; it keeps its partitions if it was not down long enough to lose
//!   them;
//! * no (it was removed while away) — the files are cleared and it forms like a new member
//!   (a join, as a new incarnation);
//! * no leader answers within [`LEADERLESS`] — the whole cluster is restarting, each member
//!   from its own log: it resumes, and the logs elect a leader.
//!
//! Invariant: a member never opens a log under an id its cluster has removed, so a removed
//! member's old log cannot vote or lead again.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use topgun_cluster::command::Command;
use topgun_cluster::ids::RaftId;
use topgun_control::ControlPlane;

use super::hello::Channel;
use super::node::ClusterNode;
use super::wire;

/// The identity file's name in the data directory.
pub const IDENTITY_FILE: &str = "cluster-member.json";
/// How long a restarted member looks for a leader before it resumes on its own log.
const LEADERLESS: Duration = Duration::from_secs(3);
/// How often it asks its seeds meanwhile.
const ROUND: Duration = Duration::from_millis(200);
/// How long one `REJOIN` may take.
const CALL: Duration = Duration::from_secs(2);

/// Whose the kept Raft log is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    pub name: String,
    pub raft_id: u64,
    /// The cluster's uuid, as a decimal string (JSON numbers are not u128).
    pub cluster_uuid: String,
}

/// Where a durable member keeps its Raft state.
#[derive(Debug, Clone)]
pub struct RaftDir(pub PathBuf);

impl RaftDir {
    pub fn log(&self) -> PathBuf {
        self.0.join(topgun_control::store::FILE_NAME)
    }

    fn identity(&self) -> PathBuf {
        self.0.join(IDENTITY_FILE)
    }

    /// The kept identity, if it is `name`'s and its log is there.
    pub fn read(&self, name: &str) -> Option<Identity> {
        let bytes = std::fs::read(self.identity()).ok()?;
        let identity: Identity = serde_json::from_slice(&bytes).ok()?;
        (identity.name == name && self.log().exists()).then_some(identity)
    }

    /// Writes `identity` durably: a temporary file, synced, renamed over the old one.
    pub fn write(&self, identity: &Identity) -> std::io::Result<()> {
        let tmp = self.0.join(format!("{IDENTITY_FILE}.tmp"));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(identity).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, self.identity())?;
        sync_dir(&self.0)
    }

    /// Forgets a kept log and identity: this member starts over as a new one.
    pub fn clear(&self) -> std::io::Result<()> {
        for path in [self.identity(), self.log()] {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The leader's answer to a `REJOIN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejoinReply {
    /// Still a member under that id: open the kept log.
    Resume,
    /// Not a member any more (or another name holds the id): start over.
    Fresh,
    /// Not the leader: ask this cluster address.
    Redirect { leader: String },
}

/// Resumes on the kept log, or starts over; see the module docs.
pub(crate) async fn resume_or_form(node: Weak<ClusterNode>, dir: RaftDir, identity: Identity) {
    let started = Instant::now();
    let fresh = loop {
        let Some(member) = node.upgrade() else { return };
        if let Some(answer) = ask_leader(&member, &identity).await {
            break answer == RejoinReply::Fresh;
        }
        if started.elapsed() >= LEADERLESS {
            break false;
        }
        drop(member);
        tokio::time::sleep(ROUND).await;
    };
    let Some(member) = node.upgrade() else { return };
    if fresh {
        tracing::warn!(
            raft_id = identity.raft_id,
            "the cluster no longer lists this member: starting over as a new one"
        );
        if let Err(e) = dir.clear() {
            tracing::error!(error = %e, "could not clear the kept Raft state");
            return;
        }
        drop(member);
        super::forming::form(node).await;
        return;
    }
    tracing::info!(raft_id = identity.raft_id, "resuming on the kept Raft log");
    member.open_control(identity.raft_id).await;
}

/// The leader's answer, if a seed in this member's cluster names one that answers.
async fn ask_leader(node: &Arc<ClusterNode>, identity: &Identity) -> Option<RejoinReply> {
    let uuid: u128 = identity.cluster_uuid.parse().ok()?;
    let leader = super::forming::ask_seeds(node)
        .await
        .into_iter()
        .filter_map(|(_, status)| status?.in_cluster)
        .filter(|c| c.uuid.0 == uuid)
        .find_map(|c| c.leader)?;
    let body = wire::encode(&(identity.name.clone(), identity.raft_id));
    let mut via = leader;
    for _ in 0..3 {
        let reply = node
            .rpc
            .call(&via, Channel::Control, wire::REJOIN, &body, CALL)
            .await
            .ok()?;
        match wire::decode::<RejoinReply>(&reply).ok()? {
            RejoinReply::Redirect { leader } => via = leader,
            answer => return Some(answer),
        }
    }
    None
}

/// The leader's side of a `REJOIN`: whether `(name, raft id)` is still a member (a down one
/// is marked up again: it is back, with its log).
pub(crate) async fn on_rejoin(node: &Arc<ClusterNode>, body: &[u8]) -> Result<Bytes, String> {
    let (name, raft_id): (String, u64) = wire::decode(body)?;
    let control = node.control().ok_or("not in a cluster yet")?;
    let reply = if control.is_leader() {
        let listed = node.cluster().and_then(|state| {
            let member = state.cluster()?.member(RaftId(raft_id))?.clone();
            (member.name.as_str() == name).then_some(member)
        });
        match listed {
            Some(member) => {
                if !member.state.is_live() {
                    let _ = control
                        .propose(Command::MarkUp { id: member.raft_id })
                        .await;
                }
                node.heard_now(raft_id);
                RejoinReply::Resume
            }
            None => RejoinReply::Fresh,
        }
    } else {
        let leader = control.leader().and_then(|id| {
            let state = node.cluster()?;
            Some(
                state
                    .cluster()?
                    .member(RaftId(id))?
                    .addrs
                    .cluster_addr
                    .clone(),
            )
        });
        match leader {
            Some(leader) => RejoinReply::Redirect { leader },
            None => return Err("no leader right now".into()),
        }
    };
    Ok(Bytes::from(wire::encode(&reply)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_is_kept_for_its_name_and_log_only() {
        let dir = tempfile::tempdir().unwrap();
        let raft = RaftDir(dir.path().to_owned());
        let identity = Identity {
            name: "n1".into(),
            raft_id: 3,
            cluster_uuid: u128::MAX.to_string(),
        };
        raft.write(&identity).unwrap();
        assert_eq!(raft.read("n1"), None, "no log beside it");
        std::fs::write(raft.log(), b"").unwrap();
        assert_eq!(raft.read("n1"), Some(identity.clone()));
        assert_eq!(raft.read("n2"), None, "another member's");
        raft.clear().unwrap();
        assert_eq!(raft.read("n1"), None);
        assert!(!raft.log().exists());
        raft.clear().unwrap();
        std::fs::write(dir.path().join(IDENTITY_FILE), b"{not json").unwrap();
        assert_eq!(raft.read("n1"), None, "a torn file is no identity");
    }
}
