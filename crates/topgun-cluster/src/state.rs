//! `ControlState`: the replicated control state and its one entry point, [`ControlState::apply`].
//!
//! Every member applies the same committed commands in the same order and so holds the same
//! state; nothing here reads a clock, a socket or a random source. Invariants, checked by
//! [`Cluster::check`] after every applied command (debug builds) and by the simulation:
//! 1. Member names are unique in the member list (a new incarnation replaces the old one).
//! 2. When any member is live, every partition is owned by a live member and `Stable`; when
//!    none is, every partition is `Lost` and still names its last owner.
//! 3. Backups are live members, distinct, never the owner.
//! 4. An epoch changes exactly when its partition's owner changes, by +1.
//! 5. `table_version` rises by exactly 1 per command that changes the client view (owners,
//!    backups, member list or member status) and never otherwise.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::assign::{self, Candidate};
use crate::catalog::Catalogs;
use crate::command::{
    BACKUPS_MAX, BootstrapMember, Command, CommandResult, Effect, Outcome, Refusal,
};
use crate::ids::{ClusterUuid, Epoch, Incarnation, MemberName, RaftId};
use crate::member::{Member, MemberAddrs, MemberState};
use crate::plan::{self, Move};
use crate::table::{PartitionEntry, PartitionId, PartitionState, PartitionTable};
use crate::view::ViewKey;

/// The replicated state machine: nothing until `Bootstrap`, then a [`Cluster`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ControlState {
    cluster: Option<Cluster>,
    /// The latest time a command changed the state at. Each leader stamps its own wall clock,
    /// and a new leader's may be behind its predecessor's: commands apply at no earlier time
    /// than this, so time in the state never goes backwards. Defaulted: a state written
    /// before it existed still decodes.
    #[serde(default)]
    time_ms: u64,
}

/// A formed cluster's control state (CLUSTER.md §3.1, the part-1 subset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    uuid: ClusterUuid,
    version_base: u32,
    backups: usize,
    /// The next Raft id to hand out; ids below it are never handed out again.
    next_raft_id: u64,
    members: BTreeMap<RaftId, Member>,
    table: PartitionTable,
    table_version: u64,
    /// Admin policies and the index catalog. Last, and defaulted, so that a snapshot or log
    /// written before catalogs existed still decodes.
    #[serde(default)]
    catalogs: Catalogs,
}

impl ControlState {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// The time of the latest command that changed the state (see [`ControlState::apply`]).
    pub fn time_ms(&self) -> u64 {
        self.time_ms
    }

    /// Applies one committed command. `now_ms` is the leader's clock, carried in the log; the
    /// command applies at the later of it and the time of the latest change so far.
    pub fn apply(&mut self, cmd: Command, now_ms: u64) -> Outcome {
        let now_ms = now_ms.max(self.time_ms);
        // Commands are few (membership, ownership, admin catalogs): a copy to compare is
        // cheaper than tracking every path that may change something.
        let before = self.cluster.clone();
        let outcome = match (cmd, &mut self.cluster) {
            (
                Command::Bootstrap {
                    cluster_uuid,
                    version_base,
                    backups,
                    members,
                },
                None,
            ) => match Cluster::bootstrap(cluster_uuid, version_base, backups, members, now_ms) {
                Ok((cluster, outcome)) => {
                    self.cluster = Some(cluster);
                    outcome
                }
                Err(refusal) => Outcome::refused(refusal),
            },
            (Command::Bootstrap { .. }, Some(_)) => Outcome::refused(Refusal::AlreadyBootstrapped),
            (_, None) => Outcome::refused(Refusal::NotBootstrapped),
            (cmd, Some(cluster)) => cluster.apply(cmd, now_ms),
        };
        // Only a change moves time on: a command that changes nothing leaves the state
        // exactly as it was.
        if self.cluster != before {
            self.time_ms = now_ms;
        }
        if cfg!(debug_assertions)
            && let Some(cluster) = &self.cluster
        {
            cluster.check();
        }
        outcome
    }
}

impl Cluster {
    fn bootstrap(
        uuid: ClusterUuid,
        version_base: u32,
        backups: u8,
        mut members: Vec<BootstrapMember>,
        now_ms: u64,
    ) -> Result<(Self, Outcome), Refusal> {
        validate_bootstrap(&mut members, backups)?;
        let members: BTreeMap<RaftId, Member> = (1..)
            .zip(members)
            .map(|(n, m)| (RaftId(n), active_member(RaftId(n), m, now_ms)))
            .collect();
        let next_raft_id = members.len() as u64 + 1;
        let ids = members
            .values()
            .map(|m| (m.name.clone(), m.raft_id))
            .collect();
        let mut cluster = Self {
            uuid,
            version_base,
            backups: usize::from(backups),
            next_raft_id,
            members,
            table: PartitionTable::from_fn(|_| placeholder_entry()),
            table_version: 0,
            catalogs: Catalogs::default(),
        };
        cluster.initial_table();
        let mut effects: Vec<Effect> = cluster
            .members
            .keys()
            .map(|&id| Effect::MemberJoined { id })
            .collect();
        cluster.bump_version(&mut effects);
        Ok((
            cluster,
            Outcome {
                result: CommandResult::Bootstrapped { ids },
                effects,
            },
        ))
    }

    /// The even assignment of a new cluster at epoch 1: nothing to copy, nothing held yet.
    fn initial_table(&mut self) {
        let target = assign::assign(&self.candidates(), &self.table, self.backups);
        let target = target.unwrap_or_else(|| unreachable!("bootstrap has members"));
        self.table = PartitionTable::from_fn(|pid| {
            let want = target.get(pid);
            PartitionEntry {
                epoch: Epoch(1),
                owner: want.owner,
                isr: want.backups.clone(),
                ..placeholder_entry()
            }
        });
    }

    fn apply(&mut self, cmd: Command, now_ms: u64) -> Outcome {
        let before = ViewKey::of(self);
        let mut effects = Vec::new();
        let result = match cmd {
            Command::Bootstrap { .. } => CommandResult::Refused(Refusal::AlreadyBootstrapped),
            Command::Join {
                name,
                incarnation,
                addrs,
            } => self.join(name, incarnation, addrs, now_ms, &mut effects),
            Command::Activate { id } => self.activate(id, now_ms, &mut effects),
            Command::Leave { id } => self.leave(id, now_ms, &mut effects),
            Command::MarkDown { id } => self.mark_down(id, now_ms, &mut effects),
            Command::MarkUp { id } => self.mark_up(id, now_ms, &mut effects),
            Command::Remove { id } => self.remove(id, now_ms, &mut effects),
            Command::ApplyPlan { moves } => self.apply_plan(moves, &mut effects),
            Command::OwnerChanged { pid, owner, epoch } => {
                self.owner_changed(pid, owner, epoch, &mut effects)
            }
            Command::CatalogPut(put) => self.catalogs.apply(put),
        };
        if !matches!(result, CommandResult::Refused(_)) {
            self.repair(&mut effects);
        }
        // The version follows the view itself rather than per-path bookkeeping, so no path
        // can forget to count a change or count one that clients cannot see.
        if ViewKey::of(self) != before {
            self.bump_version(&mut effects);
        }
        debug_assert!(
            !matches!(result, CommandResult::Refused(_)) || effects.is_empty(),
            "a refused command changed the state"
        );
        Outcome { result, effects }
    }

    fn bump_version(&mut self, effects: &mut Vec<Effect>) {
        self.table_version += 1;
        effects.push(Effect::TableChanged {
            table_version: self.table_version,
            map_version: self.map_version(),
        });
    }

    // ---- read access ---------------------------------------------------------------------

    pub fn uuid(&self) -> ClusterUuid {
        self.uuid
    }

    pub fn version_base(&self) -> u32 {
        self.version_base
    }

    pub fn backups(&self) -> usize {
        self.backups
    }

    pub fn table(&self) -> &PartitionTable {
        &self.table
    }

    pub fn table_version(&self) -> u64 {
        self.table_version
    }

    /// The replicated catalogs (admin policies, the index catalog).
    pub fn catalogs(&self) -> &Catalogs {
        &self.catalogs
    }

    /// `PARTITION_MAP.version` = `version_base + table_version` (§3.8), saturating at
    /// `u32::MAX`: a cluster would need ~136 years of seconds plus billions of changes.
    pub fn map_version(&self) -> u32 {
        let v = u64::from(self.version_base) + self.table_version;
        u32::try_from(v).unwrap_or(u32::MAX)
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn member(&self, id: RaftId) -> Option<&Member> {
        self.members.get(&id)
    }

    pub fn member_by_name(&self, name: &MemberName) -> Option<&Member> {
        self.members.values().find(|m| &m.name == name)
    }

    pub fn is_live(&self, id: RaftId) -> bool {
        self.members.get(&id).is_some_and(|m| m.state.is_live())
    }

    /// Members that may be given partitions by a plan: `Active` ones.
    pub fn candidates(&self) -> Vec<Candidate> {
        self.members
            .values()
            .filter(|m| m.state == MemberState::Active)
            .map(|m| Candidate {
                id: m.raft_id,
                name: m.name.clone(),
            })
            .collect()
    }

    /// The next wave towards the balanced assignment of the `Active` members, for the
    /// leader to propose as `ApplyPlan`; empty when balanced (or nobody is `Active`).
    pub fn next_wave(&self, max_parallel: usize) -> Vec<Move> {
        match assign::assign(&self.candidates(), &self.table, self.backups) {
            Some(target) => plan::plan(&self.table, &target, max_parallel),
            None => Vec::new(),
        }
    }

    // ---- membership ----------------------------------------------------------------------

    fn join(
        &mut self,
        name: MemberName,
        incarnation: Incarnation,
        addrs: MemberAddrs,
        now_ms: u64,
        effects: &mut Vec<Effect>,
    ) -> CommandResult {
        let old = self.member_by_name(&name).map(|m| {
            (
                m.raft_id,
                m.incarnation,
                m.state,
                m.addrs.cluster_addr == addrs.cluster_addr,
            )
        });
        let replaced = match old {
            // A retried JOIN of the same process: answer as the first time.
            Some((id, inc, _, _)) if inc == incarnation => {
                return CommandResult::Joined {
                    raft_id: id,
                    replaced: None,
                };
            }
            Some((holder, _, state, false)) if state.is_live() => {
                return CommandResult::Refused(Refusal::NameInUse { name, holder });
            }
            // A restart (same address) or the return of a dead name: the old incarnation
            // goes first, so the name stays unique and its Raft id is retired.
            Some((id, _, _, _)) => {
                self.set_down(id, now_ms, effects);
                self.members.remove(&id);
                effects.push(Effect::MemberRemoved { id });
                Some(id)
            }
            None => None,
        };
        let raft_id = RaftId(self.next_raft_id);
        self.next_raft_id += 1;
        let member = Member {
            raft_id,
            name,
            incarnation,
            addrs,
            state: MemberState::Joining,
            since_ms: now_ms,
        };
        self.members.insert(raft_id, member);
        effects.push(Effect::MemberJoined { id: raft_id });
        CommandResult::Joined { raft_id, replaced }
    }

    fn activate(&mut self, id: RaftId, now_ms: u64, effects: &mut Vec<Effect>) -> CommandResult {
        self.transition(id, "Activate", now_ms, |s| match s {
            MemberState::Joining => Some(Ok(MemberState::Active)),
            MemberState::Active => None,
            _ => Some(Err(())),
        })
        .inspect(|_| effects.push(Effect::MemberActivated { id }))
        .unwrap_or_else(|r| r)
    }

    fn leave(&mut self, id: RaftId, now_ms: u64, effects: &mut Vec<Effect>) -> CommandResult {
        self.transition(id, "Leave", now_ms, |s| match s {
            MemberState::Joining | MemberState::Active => Some(Ok(MemberState::Leaving)),
            MemberState::Leaving => None,
            MemberState::Down => Some(Err(())),
        })
        .inspect(|_| effects.push(Effect::MemberLeaving { id }))
        .unwrap_or_else(|r| r)
    }

    fn mark_down(&mut self, id: RaftId, now_ms: u64, effects: &mut Vec<Effect>) -> CommandResult {
        match self.members.get(&id) {
            None => self.unknown(id),
            Some(m) if !m.state.is_live() => CommandResult::Unchanged,
            Some(_) => {
                self.set_down(id, now_ms, effects);
                CommandResult::Done
            }
        }
    }

    /// A durable member that was silent (paused, cut off) is heard again; it keeps its Raft
    /// id because it kept its log. It comes back `Active` and owns what the next plan gives it.
    fn mark_up(&mut self, id: RaftId, now_ms: u64, effects: &mut Vec<Effect>) -> CommandResult {
        self.transition(id, "MarkUp", now_ms, |s| match s {
            MemberState::Down => Some(Ok(MemberState::Active)),
            _ => None,
        })
        .inspect(|_| effects.push(Effect::MemberUp { id }))
        .unwrap_or_else(|r| r)
    }

    fn remove(&mut self, id: RaftId, now_ms: u64, effects: &mut Vec<Effect>) -> CommandResult {
        if !self.members.contains_key(&id) {
            return self.unknown(id);
        }
        if self.is_live(id) {
            self.set_down(id, now_ms, effects);
        }
        self.members.remove(&id);
        effects.push(Effect::MemberRemoved { id });
        CommandResult::Done
    }

    /// `Refused(UnknownMember)` for an id never handed out; `Unchanged` for one removed
    /// already, so a retried `Remove` is harmless.
    fn unknown(&self, id: RaftId) -> CommandResult {
        if id.0 < self.next_raft_id {
            CommandResult::Unchanged
        } else {
            CommandResult::Refused(Refusal::UnknownMember { id })
        }
    }

    /// Moves `id` to the state `step` picks: `None` = already there (`Unchanged`),
    /// `Some(Err)` = not allowed from here. `Ok(Done)` when the state changed.
    fn transition(
        &mut self,
        id: RaftId,
        command: &'static str,
        now_ms: u64,
        step: impl Fn(MemberState) -> Option<Result<MemberState, ()>>,
    ) -> Result<CommandResult, CommandResult> {
        let Some(member) = self.members.get_mut(&id) else {
            return Err(self.unknown(id));
        };
        match step(member.state) {
            None => Err(CommandResult::Unchanged),
            Some(Err(())) => Err(CommandResult::Refused(Refusal::WrongState {
                id,
                state: member.state,
                command: command.into(),
            })),
            Some(Ok(state)) => {
                member.state = state;
                member.since_ms = now_ms;
                Ok(CommandResult::Done)
            }
        }
    }

    /// Marks `id` down and drops it from every ISR; its owned partitions fail over in
    /// [`Self::repair`] at the end of the same command.
    fn set_down(&mut self, id: RaftId, now_ms: u64, effects: &mut Vec<Effect>) {
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        if !member.state.is_live() {
            return;
        }
        member.state = MemberState::Down;
        member.since_ms = now_ms;
        for pid in PartitionId::all() {
            self.table.get_mut(pid).isr.retain(|&b| b != id);
        }
        effects.push(Effect::MemberDown { id });
    }

    // ---- the table -----------------------------------------------------------------------

    /// Failover (§6), run at the end of every accepted command so that no command can leave
    /// a partition with a dead owner while a live member exists: the first in-sync backup is
    /// promoted, else the least-loaded `Active` member (any live one if none is `Active`)
    /// takes it. Until replication exists nothing is copied either way. With no live member
    /// at all the partition is `Lost`, keeping its owner, which gets it back on `MarkUp`.
    fn repair(&mut self, effects: &mut Vec<Effect>) {
        let mut load: BTreeMap<RaftId, usize> = BTreeMap::new();
        for (_, e) in self.table.iter().filter(|(_, e)| self.is_live(e.owner)) {
            *load.entry(e.owner).or_insert(0) += 1;
        }
        let heirs = self.failover_heirs();
        for pid in PartitionId::all() {
            let entry = self.table.get(pid);
            if self.is_live(entry.owner) {
                if entry.state == PartitionState::Lost {
                    self.table.get_mut(pid).state = PartitionState::Stable;
                    effects.push(Effect::PartitionRecovered { pid });
                }
                continue;
            }
            let promoted = entry.isr.iter().copied().find(|&b| self.is_live(b));
            let heir = promoted.or_else(|| {
                heirs
                    .iter()
                    .min_by_key(|&&id| load.get(&id).copied().unwrap_or(0))
                    .copied()
            });
            match heir {
                Some(new) => {
                    self.set_owner(pid, new, effects);
                    *load.entry(new).or_insert(0) += 1;
                }
                None if entry.state != PartitionState::Lost => {
                    self.table.get_mut(pid).state = PartitionState::Lost;
                    effects.push(Effect::PartitionLost { pid });
                }
                None => {}
            }
        }
    }

    /// Who may take an orphaned partition: `Active` members, else any live one, in name
    /// order (so `min_by_key` breaks load ties by name).
    fn failover_heirs(&self) -> Vec<RaftId> {
        let mut live: Vec<&Member> = self
            .members
            .values()
            .filter(|m| m.state.is_live())
            .collect();
        if live.iter().any(|m| m.state == MemberState::Active) {
            live.retain(|m| m.state == MemberState::Active);
        }
        live.sort_by(|a, b| a.name.cmp(&b.name));
        live.into_iter().map(|m| m.raft_id).collect()
    }

    /// Hands `pid` to `new` at the next epoch; `new` leaves the backups it was among.
    fn set_owner(&mut self, pid: PartitionId, new: RaftId, effects: &mut Vec<Effect>) {
        let entry = self.table.get_mut(pid);
        debug_assert_ne!(entry.owner, new, "{pid}: owner change to the same owner");
        let old = std::mem::replace(&mut entry.owner, new);
        entry.epoch = entry.epoch.next();
        entry.isr.retain(|&b| b != new);
        entry.state = PartitionState::Stable;
        effects.push(Effect::OwnershipChanged {
            pid,
            old,
            new,
            epoch: entry.epoch,
        });
    }

    /// Applies every move still valid. Until replication exists a move's copies need no
    /// data to travel, so the move takes effect at once.
    fn apply_plan(&mut self, moves: Vec<Move>, effects: &mut Vec<Effect>) -> CommandResult {
        let (mut applied, mut skipped) = (0, 0);
        for mv in moves {
            if !self.move_is_valid(&mv) {
                skipped += 1;
                continue;
            }
            applied += 1;
            if self.table.get(mv.pid).owner != mv.owner {
                self.set_owner(mv.pid, mv.owner, effects);
            }
            self.table.get_mut(mv.pid).isr = mv.backups;
        }
        CommandResult::PlanApplied { applied, skipped }
    }

    /// A move is stale once its partition's epoch moved on (a failover happened since it was
    /// planned) and invalid if it names a member that is not live.
    fn move_is_valid(&self, mv: &Move) -> bool {
        let entry = self.table.get(mv.pid);
        let backups_ok = mv
            .backups
            .iter()
            .enumerate()
            .all(|(i, &b)| b != mv.owner && self.is_live(b) && !mv.backups[..i].contains(&b));
        entry.epoch == mv.epoch && self.is_live(mv.owner) && backups_ok
    }

    fn owner_changed(
        &mut self,
        pid: PartitionId,
        owner: RaftId,
        epoch: Epoch,
        effects: &mut Vec<Effect>,
    ) -> CommandResult {
        let entry = self.table.get(pid);
        if epoch != entry.epoch.next() {
            return CommandResult::Refused(Refusal::StaleEpoch {
                pid,
                current: entry.epoch,
                given: epoch,
            });
        }
        let reason = if !self.is_live(owner) {
            Some("not a live member")
        } else if owner == entry.owner {
            Some("already the owner")
        } else {
            None
        };
        if let Some(reason) = reason {
            return CommandResult::Refused(Refusal::BadOwner {
                pid,
                owner,
                reason: reason.into(),
            });
        }
        self.set_owner(pid, owner, effects);
        CommandResult::Done
    }

    /// Asserts the invariants of the module doc (all but 4 and 5, which need the previous
    /// state: the simulation checks those).
    pub fn check(&self) {
        self.table.check();
        self.catalogs.check();
        let mut names: Vec<&MemberName> = self.members.values().map(|m| &m.name).collect();
        names.sort();
        assert!(
            names.windows(2).all(|w| w[0] != w[1]),
            "member names repeat: {names:?}"
        );
        assert!(
            self.members.keys().all(|id| id.0 < self.next_raft_id),
            "a Raft id beyond the counter"
        );
        let any_live = self.members.values().any(|m| m.state.is_live());
        for (pid, e) in self.table.iter() {
            if any_live {
                assert!(
                    self.is_live(e.owner),
                    "{pid}: owner {} is not live",
                    e.owner
                );
                assert_eq!(
                    e.state,
                    PartitionState::Stable,
                    "{pid}: not stable with live members"
                );
            } else {
                assert_eq!(
                    e.state,
                    PartitionState::Lost,
                    "{pid}: no live member but not lost"
                );
            }
            assert!(
                e.isr.iter().all(|&b| self.is_live(b)),
                "{pid}: a backup is not live"
            );
        }
    }
}

fn validate_bootstrap(members: &mut [BootstrapMember], backups: u8) -> Result<(), Refusal> {
    if members.is_empty() {
        return Err(Refusal::BadBootstrap {
            reason: "no members".into(),
        });
    }
    if backups > BACKUPS_MAX {
        return Err(Refusal::BadBootstrap {
            reason: "more than 3 backups".into(),
        });
    }
    // §3.3: Raft ids 1..=k go out in name order.
    members.sort_by(|a, b| a.name.cmp(&b.name));
    if members.windows(2).any(|w| w[0].name == w[1].name) {
        return Err(Refusal::BadBootstrap {
            reason: "a member name is listed twice".into(),
        });
    }
    Ok(())
}

fn active_member(raft_id: RaftId, m: BootstrapMember, now_ms: u64) -> Member {
    Member {
        raft_id,
        name: m.name,
        incarnation: m.incarnation,
        addrs: m.addrs,
        state: MemberState::Active,
        since_ms: now_ms,
    }
}

/// A row that exists only between allocating a new table and filling it in.
fn placeholder_entry() -> PartitionEntry {
    PartitionEntry {
        epoch: Epoch(0),
        owner: RaftId(0),
        isr: Vec::new(),
        catching_up: Vec::new(),
        migration: None,
        state: PartitionState::Stable,
    }
}
