//! Builders shared by the test files.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use topgun_cluster::{
    BootstrapMember, Cluster, ClusterUuid, Command, ControlState, Incarnation, MemberAddrs,
    MemberName, Outcome, RaftId,
};

pub const VERSION_BASE: u32 = 30_000_000;

pub fn name(s: &str) -> MemberName {
    MemberName::new(s).unwrap()
}

/// Addresses derived from the name and a port, so a restart can keep or change them.
pub fn addrs(s: &str, port: u16) -> MemberAddrs {
    MemberAddrs {
        cluster_addr: format!("{s}.local:{port}"),
        client_url: format!("ws://{s}.local:8080"),
        http_url: format!("http://{s}.local:8080"),
    }
}

pub fn boot_member(s: &str, incarnation: u128) -> BootstrapMember {
    BootstrapMember {
        name: name(s),
        incarnation: Incarnation(incarnation),
        addrs: addrs(s, 9000),
    }
}

pub fn bootstrap_cmd(names: &[&str], backups: u8) -> Command {
    Command::Bootstrap {
        cluster_uuid: ClusterUuid(7),
        version_base: VERSION_BASE,
        backups,
        members: names
            .iter()
            .zip(1..)
            .map(|(n, i)| boot_member(n, i))
            .collect(),
    }
}

pub fn formed(names: &[&str], backups: u8) -> ControlState {
    let mut state = ControlState::new();
    let out = state.apply(bootstrap_cmd(names, backups), 1_000);
    assert!(
        matches!(
            out.result,
            topgun_cluster::CommandResult::Bootstrapped { .. }
        ),
        "{out:?}"
    );
    state
}

pub fn cluster(state: &ControlState) -> &Cluster {
    state.cluster().expect("bootstrapped")
}

pub fn id_of(state: &ControlState, s: &str) -> RaftId {
    cluster(state)
        .member_by_name(&name(s))
        .expect("member")
        .raft_id
}

pub fn join_cmd(s: &str, incarnation: u128, port: u16) -> Command {
    Command::Join {
        name: name(s),
        incarnation: Incarnation(incarnation),
        addrs: addrs(s, port),
    }
}

/// Proposes waves until the table is balanced; returns the outcomes. Bounded: a plan that
/// never converges fails the test instead of looping.
pub fn converge(state: &mut ControlState, now_ms: u64) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for _ in 0..400 {
        let moves = cluster(state).next_wave(topgun_cluster::MAX_PARALLEL_MIGRATIONS);
        if moves.is_empty() {
            return outcomes;
        }
        outcomes.push(state.apply(Command::ApplyPlan { moves }, now_ms));
    }
    panic!("the plan did not converge in 400 waves");
}

/// Partitions owned per member id.
pub fn owner_counts(state: &ControlState) -> Vec<usize> {
    cluster(state)
        .table()
        .owner_counts()
        .into_values()
        .collect()
}

/// The client view by id, recomputed from the public API: what `table_version` must follow.
pub type ViewKey = (Vec<String>, Vec<(RaftId, Vec<RaftId>)>);

pub fn view_key(state: &ControlState) -> Option<ViewKey> {
    let c = state.cluster()?;
    let members = c
        .members()
        .map(|m| {
            format!(
                "{:?}/{:?}/{}/{}",
                m.raft_id, m.state, m.addrs.client_url, m.addrs.http_url
            )
        })
        .collect();
    let rows = c
        .table()
        .iter()
        .map(|(_, e)| (e.owner, e.isr.clone()))
        .collect();
    Some((members, rows))
}
