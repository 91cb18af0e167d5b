//! Seeded simulation of the control plane as a model log (CLUSTER.md §17 step 2, the part
//! that exists today): a committed log of commands applied in order by N replicas of
//! `ControlState`, which lag behind it by random amounts. Proposers read their own (possibly
//! stale) replica, so plans and `OwnerChanged` built on an old table reach the log too, as
//! they would from a deposed leader. Processes form a cluster, join, leave gracefully, crash
//! (`MarkDown` after silence), pause and resume (`MarkUp`), restart under the same name as a
//! new incarnation, and collide with a second process of the same name.
//!
//! The checker (below) runs after every applied entry (on the first replica to apply it; the
//! others must then match that replica exactly):
//! * while any member is live, every partition is owned by a live member (§6);
//! * `table_version` rises by exactly one per view change, and `PARTITION_MAP.version` with
//!   it (§3.8);
//! * one owner per (partition, epoch) across all replicas and all time (§5.5), and epochs
//!   never go back;
//! * replicas that applied the same prefix of the log hold identical states and produced
//!   identical outcomes (§3.1: determinism);
//! * a `Join` is refused `NameInUse` exactly when a live member holds the name elsewhere.
//!
//! Seeds: 200 by default (~30 s in a debug build); `TOPGUN_SIM_SEEDS=20000` for more (use
//! `--release`: ~20 s per 1,000 seeds); `TOPGUN_SEED=<n>` replays one.
//! A failure names its seed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::{addrs, boot_member, name};
use topgun_cluster::{
    ClusterUuid, Command, CommandResult, ControlState, Effect, Epoch, Incarnation,
    MAX_PARALLEL_MIGRATIONS, MemberState, Outcome, PartitionId, PartitionState, RaftId, Refusal,
};

const REPLICAS: usize = 3;
const STEPS: usize = 200;
const PROCESSES_MAX: usize = 7;

/// `SplitMix64`: tiny, seedable, and good enough to choose events.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len())])
    }
}

/// A server process as the world sees it (not as the cluster does).
#[derive(Debug, Clone)]
struct Process {
    incarnation: u128,
    port: u16,
    /// Crashed, or paused: silent either way.
    running: bool,
}

struct Replica {
    state: ControlState,
    applied: usize,
}

struct Sim {
    rng: Rng,
    now_ms: u64,
    log: Vec<(Command, u64)>,
    replicas: Vec<Replica>,
    processes: BTreeMap<String, Process>,
    next_name: usize,
    checker: Checker,
}

impl Sim {
    fn new(seed: u64) -> Self {
        Self {
            rng: Rng(seed),
            now_ms: 0,
            log: Vec::new(),
            replicas: (0..REPLICAS)
                .map(|_| Replica {
                    state: ControlState::new(),
                    applied: 0,
                })
                .collect(),
            processes: BTreeMap::new(),
            next_name: 0,
            checker: Checker::default(),
        }
    }

    fn run(mut self) -> Coverage {
        self.form();
        for _ in 0..STEPS {
            self.now_ms += 1 + self.rng.next() % 500;
            self.step();
        }
        self.settle();
        self.checker.coverage
    }

    /// Formation: 1–4 processes started together; the lowest name bootstraps them all.
    fn form(&mut self) {
        let k = 1 + self.rng.below(4);
        let members = (0..k)
            .map(|_| {
                let n = self.spawn();
                boot_member(&n, self.processes[&n].incarnation)
            })
            .collect();
        let backups = u8::try_from(self.rng.below(3)).unwrap();
        self.commit(Command::Bootstrap {
            cluster_uuid: ClusterUuid(1),
            version_base: 1_000,
            backups,
            members,
        });
        self.catch_up_all();
    }

    fn spawn(&mut self) -> String {
        self.next_name += 1;
        let n = format!("m{:02}", self.next_name);
        let p = Process {
            incarnation: u128::from(self.rng.next()),
            port: 9000,
            running: true,
        };
        self.processes.insert(n.clone(), p);
        n
    }

    fn step(&mut self) {
        match self.rng.below(12) {
            0 | 1 => self.catch_up_some(),
            2 => self.world_event(),
            _ => {
                let proposer = self.rng.below(REPLICAS);
                if let Some(cmd) = self.propose(proposer) {
                    self.commit(cmd);
                }
            }
        }
    }

    /// Something happens to a process: a new one starts, one crashes or pauses, one resumes,
    /// a crashed one restarts as a new incarnation, or a misconfigured twin appears.
    fn world_event(&mut self) {
        let names: Vec<String> = self.processes.keys().cloned().collect();
        let pick = self.rng.below(names.len());
        let n = names[pick].clone();
        match self.rng.below(5) {
            0 if self.processes.len() < PROCESSES_MAX => {
                let n = self.spawn();
                self.commit(join(&n, &self.processes[&n]));
            }
            1 => self.processes.get_mut(&n).unwrap().running = false,
            2 => self.processes.get_mut(&n).unwrap().running = true,
            3 => {
                // Restart (kill -9 then start): a new incarnation at the same address.
                let p = self.processes.get_mut(&n).unwrap();
                p.incarnation = u128::from(self.rng.next());
                p.running = true;
                let cmd = join(&n, &self.processes[&n]);
                self.commit(cmd);
            }
            _ => {
                // A second process configured with the same name, at another address.
                let twin = Process {
                    incarnation: u128::from(self.rng.next()),
                    port: 9999,
                    running: true,
                };
                self.commit(join(&n, &twin));
            }
        }
    }

    /// What a node would propose from its own replica's view of the cluster.
    fn propose(&mut self, proposer: usize) -> Option<Command> {
        let c = self.replicas[proposer].state.cluster()?;
        let members: Vec<(RaftId, String, MemberState)> = c
            .members()
            .map(|m| (m.raft_id, m.name.to_string(), m.state))
            .collect();
        let running = |n: &str| self.processes.get(n).is_some_and(|p| p.running);
        let silent: Vec<RaftId> = members
            .iter()
            .filter(|(_, n, s)| s.is_live() && !running(n))
            .map(|m| m.0)
            .collect();
        let back: Vec<RaftId> = members
            .iter()
            .filter(|(_, n, s)| !s.is_live() && running(n))
            .map(|m| m.0)
            .collect();
        let down: Vec<RaftId> = members
            .iter()
            .filter(|m| m.2 == MemberState::Down)
            .map(|m| m.0)
            .collect();
        let joining: Vec<RaftId> = members
            .iter()
            .filter(|m| m.2 == MemberState::Joining)
            .map(|m| m.0)
            .collect();
        let active: Vec<RaftId> = members
            .iter()
            .filter(|m| m.2 == MemberState::Active)
            .map(|m| m.0)
            .collect();
        let owns_nothing = |id: RaftId| {
            c.table()
                .iter()
                .all(|(_, e)| e.owner != id && !e.isr.contains(&id))
        };
        let left: Vec<RaftId> = members
            .iter()
            .filter(|m| m.2 == MemberState::Leaving && owns_nothing(m.0))
            .map(|m| m.0)
            .collect();
        let any: Vec<RaftId> = members.iter().map(|m| m.0).collect();
        let id = match self.rng.below(10) {
            0 => return self.rng.pick(&silent).map(|id| Command::MarkDown { id }),
            1 => return self.rng.pick(&back).map(|id| Command::MarkUp { id }),
            2 => return self.rng.pick(&joining).map(|id| Command::Activate { id }),
            3 if active.len() > 1 && self.rng.chance(30) => {
                return self.rng.pick(&active).map(|id| Command::Leave { id });
            }
            4 => {
                let id = self
                    .rng
                    .pick(&left)
                    .or_else(|| self.rng.pick(&down).filter(|_| self.rng.chance(30)));
                return id.map(|id| Command::Remove { id });
            }
            5 => self.rng.pick(&any),
            _ => None,
        };
        if let Some(owner) = id {
            let pid = PartitionId::new(u32::try_from(self.rng.below(271)).unwrap()).unwrap();
            let epoch = c.table().get(pid).epoch.next();
            return Some(Command::OwnerChanged { pid, owner, epoch });
        }
        if self.rng.chance(10) && !self.log.is_empty() {
            // A retried proposal: the same command committed twice.
            let i = self.rng.below(self.log.len());
            return Some(self.log[i].0.clone());
        }
        let moves = c.next_wave(MAX_PARALLEL_MIGRATIONS);
        (!moves.is_empty()).then_some(Command::ApplyPlan { moves })
    }

    fn commit(&mut self, cmd: Command) {
        self.log.push((cmd, self.now_ms));
        // The leader applies what it commits at once; the others lag.
        let leader = self.rng.below(REPLICAS);
        self.catch_up(leader, self.log.len());
    }

    fn catch_up_some(&mut self) {
        let r = self.rng.below(REPLICAS);
        let behind = self.log.len() - self.replicas[r].applied;
        let upto = self.replicas[r].applied + self.rng.below(behind + 1);
        self.catch_up(r, upto);
    }

    fn catch_up_all(&mut self) {
        for r in 0..REPLICAS {
            self.catch_up(r, self.log.len());
        }
    }

    fn catch_up(&mut self, r: usize, upto: usize) {
        while self.replicas[r].applied < upto {
            let i = self.replicas[r].applied;
            let (cmd, now_ms) = self.log[i].clone();
            let replica = &mut self.replicas[r];
            replica.applied += 1;
            if let Some((state, out)) = self.checker.after.get(i) {
                // Another replica applied entry i first and was checked: match it exactly.
                let outcome = replica.state.apply(cmd, now_ms);
                assert_eq!(
                    out, &outcome,
                    "log entry {i}: replicas produced different outcomes"
                );
                assert!(
                    state == &replica.state,
                    "log entry {i}: replicas hold different states"
                );
                continue;
            }
            let before = replica.state.clone();
            let outcome = replica.state.apply(cmd.clone(), now_ms);
            self.checker
                .check(i, &cmd, &before, &replica.state, &outcome);
        }
    }

    /// Quiescence: the world stops changing, the leader proposes what is left to do; then
    /// every replica is equal and the table balanced over the `Active` members.
    fn settle(&mut self) {
        for _ in 0..600 {
            self.catch_up_all();
            let Some(cmd) = self.settle_command() else {
                break;
            };
            self.now_ms += 1;
            self.commit(cmd);
        }
        self.catch_up_all();
        assert!(
            self.settle_command().is_none(),
            "the cluster did not settle"
        );
        let first = &self.replicas[0].state;
        assert!(
            self.replicas.iter().all(|r| &r.state == first),
            "replicas differ after the whole log"
        );
        let c = first.cluster().unwrap();
        let counts = c.table().owner_counts();
        let active = c
            .members()
            .filter(|m| m.state == MemberState::Active)
            .count();
        if active > 0 {
            assert_eq!(
                counts.len(),
                active,
                "an Active member owns nothing, or a non-Active one owns"
            );
            let (lo, hi) = (
                counts.values().min().unwrap(),
                counts.values().max().unwrap(),
            );
            assert!(hi - lo <= 1, "unbalanced after settling: {counts:?}");
        }
    }

    fn settle_command(&self) -> Option<Command> {
        let c = self.replicas[0].state.cluster()?;
        let running = |n: &str| self.processes.get(n).is_some_and(|p| p.running);
        for m in c.members() {
            match m.state {
                s if s.is_live() && !running(m.name.as_str()) => {
                    return Some(Command::MarkDown { id: m.raft_id });
                }
                MemberState::Down if running(m.name.as_str()) => {
                    return Some(Command::MarkUp { id: m.raft_id });
                }
                MemberState::Joining => return Some(Command::Activate { id: m.raft_id }),
                _ => {}
            }
        }
        let moves = c.next_wave(MAX_PARALLEL_MIGRATIONS);
        if !moves.is_empty() {
            return Some(Command::ApplyPlan { moves });
        }
        let leaving = c.members().find(|m| m.state == MemberState::Leaving);
        leaving.map(|m| Command::Remove { id: m.raft_id })
    }
}

fn join(n: &str, p: &Process) -> Command {
    Command::Join {
        name: name(n),
        incarnation: Incarnation(p.incarnation),
        addrs: addrs(n, p.port),
    }
}

/// The invariants of the module doc, checked after every applied log entry.
#[derive(Default)]
struct Checker {
    coverage: Coverage,
    /// (partition, epoch) → the one owner it ever had.
    owners: BTreeMap<(PartitionId, Epoch), RaftId>,
    /// Log index → the state and outcome after applying it, from the first replica there.
    after: Vec<(ControlState, Outcome)>,
}

impl Checker {
    fn check(
        &mut self,
        i: usize,
        cmd: &Command,
        before: &ControlState,
        after: &ControlState,
        outcome: &Outcome,
    ) {
        assert_eq!(self.after.len(), i, "entries applied out of order");
        self.after.push((after.clone(), outcome.clone()));
        self.coverage.count(cmd, outcome);
        if let CommandResult::Refused(_) = outcome.result {
            assert_eq!(
                before, after,
                "a refused command changed the state: {cmd:?}"
            );
        }
        join_refused_exactly_when_the_name_is_live_elsewhere(cmd, before, outcome);
        let Some(c) = after.cluster() else { return };
        c.check();
        let any_live = c.members().any(|m| m.state.is_live());
        for (pid, e) in c.table().iter() {
            // §6: failover happens in the same step as MarkDown.
            assert!(
                !any_live || c.is_live(e.owner),
                "{pid} owned by {} which is not live",
                e.owner
            );
            assert!(
                any_live || e.state == PartitionState::Lost,
                "{pid} not Lost with nobody live"
            );
            // §5.5: one owner per (pid, epoch).
            let owner = *self.owners.entry((pid, e.epoch)).or_insert(e.owner);
            assert_eq!(owner, e.owner, "{pid} has two owners at {}", e.epoch);
            if let Some(old) = before.cluster() {
                assert!(
                    e.epoch >= old.table().get(pid).epoch,
                    "{pid}: epoch went back"
                );
            }
        }
        versions_follow_the_view(before, after, outcome);
    }
}

/// §3.8: `table_version` +1 exactly on view changes, announced once, last.
fn versions_follow_the_view(before: &ControlState, after: &ControlState, outcome: &Outcome) {
    let (v0, m0) = before
        .cluster()
        .map_or((0, 0), |c| (c.table_version(), c.map_version()));
    let c = after.cluster().unwrap();
    let changed = common::view_key(before) != common::view_key(after);
    assert_eq!(
        c.table_version(),
        v0 + u64::from(changed),
        "table_version did not follow the view"
    );
    let announced: Vec<&Effect> = outcome
        .effects
        .iter()
        .filter(|e| matches!(e, Effect::TableChanged { .. }))
        .collect();
    if changed {
        assert!(c.map_version() > m0, "map version did not rise");
        let expected = Effect::TableChanged {
            table_version: c.table_version(),
            map_version: c.map_version(),
        };
        assert_eq!(announced, vec![&expected]);
        assert_eq!(
            outcome.effects.last(),
            Some(&expected),
            "TableChanged is not last"
        );
    } else {
        assert!(announced.is_empty(), "TableChanged without a view change");
    }
}

/// §3.4: a JOIN of a live name from another address is refused, and only then.
fn join_refused_exactly_when_the_name_is_live_elsewhere(
    cmd: &Command,
    before: &ControlState,
    outcome: &Outcome,
) {
    let (
        Command::Join {
            name,
            incarnation,
            addrs,
        },
        Some(c),
    ) = (cmd, before.cluster())
    else {
        return;
    };
    let holder = c.member_by_name(name).filter(|m| {
        m.state.is_live()
            && m.incarnation != *incarnation
            && m.addrs.cluster_addr != addrs.cluster_addr
    });
    match holder {
        Some(m) => assert_eq!(
            outcome.result,
            CommandResult::Refused(Refusal::NameInUse {
                name: name.clone(),
                holder: m.raft_id
            })
        ),
        None => assert!(
            matches!(outcome.result, CommandResult::Joined { .. }),
            "{outcome:?}"
        ),
    }
}

/// How often the paths worth reaching were reached, so that a change to the generator
/// cannot quietly stop exercising them.
#[derive(Debug, Default, Clone, Copy)]
struct Coverage {
    name_in_use: u64,
    restarts: u64,
    failovers: u64,
    stale_moves: u64,
    stale_epochs: u64,
    lost: u64,
}

impl Coverage {
    fn count(&mut self, cmd: &Command, outcome: &Outcome) {
        match (&outcome.result, cmd) {
            (CommandResult::Refused(Refusal::NameInUse { .. }), _) => self.name_in_use += 1,
            (CommandResult::Refused(Refusal::StaleEpoch { .. }), _) => self.stale_epochs += 1,
            (
                CommandResult::Joined {
                    replaced: Some(_), ..
                },
                _,
            ) => self.restarts += 1,
            (CommandResult::PlanApplied { skipped, .. }, _) if *skipped > 0 => {
                self.stale_moves += 1;
            }
            (CommandResult::Done, Command::MarkDown { .. }) => self.failovers += 1,
            _ => {}
        }
        if outcome
            .effects
            .iter()
            .any(|e| matches!(e, Effect::PartitionLost { .. }))
        {
            self.lost += 1;
        }
    }

    fn add(&mut self, o: Self) {
        self.name_in_use += o.name_in_use;
        self.restarts += o.restarts;
        self.failovers += o.failovers;
        self.stale_moves += o.stale_moves;
        self.stale_epochs += o.stale_epochs;
        self.lost += o.lost;
    }

    fn all_reached(&self) -> bool {
        [
            self.name_in_use,
            self.restarts,
            self.failovers,
            self.stale_moves,
            self.stale_epochs,
            self.lost,
        ]
        .iter()
        .all(|&n| n > 0)
    }
}

fn run_seed(seed: u64) -> Coverage {
    let result = std::panic::catch_unwind(|| Sim::new(seed).run());
    match result {
        Ok(coverage) => coverage,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("simulation failed at seed {seed} (replay: TOPGUN_SEED={seed}): {msg}");
        }
    }
}

#[test]
fn the_control_log_keeps_its_invariants_on_every_seed() {
    if let Some(seed) = std::env::var("TOPGUN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        run_seed(seed);
        return;
    }
    let seeds: u64 = std::env::var("TOPGUN_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let mut coverage = Coverage::default();
    for seed in 0..seeds {
        coverage.add(run_seed(seed));
    }
    assert!(
        seeds < 100 || coverage.all_reached(),
        "paths never reached: {coverage:?}"
    );
}
