//! How a member that is not in a cluster yet decides what to do (CLUSTER.md §3.3), without
//! I/O: from what it has heard of its seeds, join a cluster one of them is in, bootstrap a
//! new one, or wait.
//!
//! Invariants:
//! * one set of members never bootstraps twice: only the member with the lowest name among
//!   those known bootstraps, and only with `bootstrap_expect` of them — or, once the
//!   bootstrap timeout has passed, a majority of it, and two disjoint majorities of one
//!   number cannot exist;
//! * a member given seeds or discovery never bootstraps alone;
//! * being in a cluster beats everything: a member that hears of one joins it.

use std::collections::BTreeMap;

use topgun_cluster::command::BootstrapMember;
use topgun_cluster::ids::{ClusterUuid, Incarnation, MemberName};
use topgun_cluster::member::MemberAddrs;

/// What a member says of itself while the cluster forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub name: MemberName,
    pub incarnation: Incarnation,
    pub addrs: MemberAddrs,
    pub in_cluster: Option<InCluster>,
}

/// The cluster a member belongs to, and where it last saw the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InCluster {
    pub uuid: ClusterUuid,
    /// The leader's cluster address, when known.
    pub leader: Option<String>,
}

/// What the member should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing yet: hear from more members, or wait for the lowest-named to bootstrap.
    Wait,
    /// Ask the cluster at this address (the leader if known, else a member) to admit us.
    Join { via: String },
    /// Form a cluster of these members (self among them), in name order.
    Bootstrap { members: Vec<BootstrapMember> },
}

/// What the member knows while forming.
#[derive(Debug, Clone)]
pub struct Formation {
    me: Status,
    /// Whether seeds or discovery were configured: then the member never bootstraps alone.
    has_seeds: bool,
    bootstrap_expect: usize,
    bootstrap_timeout_ms: u64,
    started_ms: u64,
    /// The latest status heard from each member, by name.
    heard: BTreeMap<MemberName, Status>,
}

impl Formation {
    pub fn new(
        me: Status,
        has_seeds: bool,
        bootstrap_expect: usize,
        bootstrap_timeout_ms: u64,
        now_ms: u64,
    ) -> Self {
        Self {
            me,
            has_seeds,
            bootstrap_expect: bootstrap_expect.max(1),
            bootstrap_timeout_ms,
            started_ms: now_ms,
            heard: BTreeMap::new(),
        }
    }

    /// A status heard from a peer; its own name is ignored (a member listed among its own
    /// seeds). A newer incarnation of a name replaces the older one.
    pub fn heard(&mut self, status: Status) {
        if status.name != self.me.name {
            self.heard.insert(status.name.clone(), status);
        }
    }

    /// A peer stopped answering: it no longer counts towards the bootstrap.
    pub fn lost(&mut self, name: &MemberName) {
        self.heard.remove(name);
    }

    /// What to do at `now_ms`.
    pub fn decide(&self, now_ms: u64) -> Decision {
        if let Some(via) = self.cluster_to_join() {
            return Decision::Join { via };
        }
        let known = 1 + self.heard.len();
        let needed = if now_ms.saturating_sub(self.started_ms) >= self.bootstrap_timeout_ms {
            self.bootstrap_expect / 2 + 1
        } else {
            self.bootstrap_expect
        };
        let needed = if self.has_seeds {
            needed.max(2)
        } else {
            needed
        };
        let lowest = self.heard.keys().next().is_none_or(|n| self.me.name < *n);
        if known < needed || !lowest {
            return Decision::Wait;
        }
        let mut members: Vec<_> = std::iter::once(&self.me)
            .chain(self.heard.values())
            .map(|s| BootstrapMember {
                name: s.name.clone(),
                incarnation: s.incarnation,
                addrs: s.addrs.clone(),
            })
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        Decision::Bootstrap { members }
    }

    /// The address to join through: a leader someone named, else any member in a cluster.
    /// Several clusters heard of (misconfigured seeds): the lowest uuid, so every member
    /// picks alike.
    fn cluster_to_join(&self) -> Option<String> {
        let in_cluster = self
            .heard
            .values()
            .filter_map(|s| Some((s.in_cluster.as_ref()?, s)))
            .min_by_key(|(c, _)| c.uuid.0)?;
        let (cluster, status) = in_cluster;
        Some(
            cluster
                .leader
                .clone()
                .unwrap_or_else(|| status.addrs.cluster_addr.clone()),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn status(name: &str) -> Status {
        Status {
            name: MemberName::new(name).unwrap(),
            incarnation: Incarnation(u128::from(name.as_bytes()[0])),
            addrs: MemberAddrs {
                cluster_addr: format!("{name}:9000"),
                client_url: format!("ws://{name}:8080"),
                http_url: format!("http://{name}:8080"),
            },
            in_cluster: None,
        }
    }

    fn names(decision: &Decision) -> Vec<&str> {
        match decision {
            Decision::Bootstrap { members } => members.iter().map(|m| m.name.as_str()).collect(),
            other => panic!("not a bootstrap: {other:?}"),
        }
    }

    #[test]
    fn the_lowest_name_bootstraps_once_everyone_expected_is_known() {
        let mut b = Formation::new(status("b"), true, 3, 10_000, 0);
        b.heard(status("c"));
        assert_eq!(b.decide(100), Decision::Wait, "two of three");
        b.heard(status("a"));
        assert_eq!(b.decide(100), Decision::Wait, "a is lower: a bootstraps");
        let mut a = Formation::new(status("a"), true, 3, 10_000, 0);
        a.heard(status("c"));
        a.heard(status("b"));
        a.heard(status("a"));
        assert_eq!(
            names(&a.decide(100)),
            ["a", "b", "c"],
            "itself once, by name"
        );
    }

    #[test]
    fn after_the_timeout_a_majority_of_the_expected_suffices() {
        let mut a = Formation::new(status("a"), true, 3, 10_000, 1_000);
        a.heard(status("b"));
        assert_eq!(a.decide(10_999), Decision::Wait);
        assert_eq!(names(&a.decide(11_000)), ["a", "b"]);
        let mut five = Formation::new(status("a"), true, 5, 10_000, 0);
        five.heard(status("b"));
        assert_eq!(five.decide(20_000), Decision::Wait, "2 of 5 is no majority");
        five.heard(status("c"));
        assert_eq!(names(&five.decide(20_000)), ["a", "b", "c"]);
    }

    #[test]
    fn with_seeds_a_member_never_bootstraps_alone_without_it_at_once() {
        let seeded = Formation::new(status("a"), true, 1, 0, 0);
        assert_eq!(seeded.decide(1_000_000), Decision::Wait);
        let lone = Formation::new(status("a"), false, 1, 10_000, 0);
        assert_eq!(names(&lone.decide(0)), ["a"]);
    }

    #[test]
    fn a_member_in_a_cluster_is_joined_through_its_leader() {
        let mut c = Formation::new(status("c"), true, 3, 10_000, 0);
        c.heard(status("a"));
        let mut b = status("b");
        b.in_cluster = Some(InCluster {
            uuid: ClusterUuid(9),
            leader: None,
        });
        c.heard(b.clone());
        assert_eq!(
            c.decide(0),
            Decision::Join {
                via: "b:9000".into()
            }
        );
        b.in_cluster = Some(InCluster {
            uuid: ClusterUuid(9),
            leader: Some("a:9000".into()),
        });
        c.heard(b);
        assert_eq!(
            c.decide(0),
            Decision::Join {
                via: "a:9000".into()
            }
        );
    }

    #[test]
    fn its_own_name_and_lost_peers_do_not_count() {
        let mut a = Formation::new(status("a"), true, 2, 10_000, 0);
        a.heard(status("a"));
        assert_eq!(a.decide(0), Decision::Wait, "listed among its own seeds");
        a.heard(status("b"));
        assert_eq!(names(&a.decide(0)), ["a", "b"]);
        a.lost(&MemberName::new("b").unwrap());
        assert_eq!(a.decide(0), Decision::Wait);
    }
}
