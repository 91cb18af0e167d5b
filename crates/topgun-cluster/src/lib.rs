//! TopGun cluster control state: pure logic, no I/O (CLUSTER.md §2–§4).
//!
//! This crate owns what every member of a cluster must agree on — the members, their
//! incarnations and Raft ids, the 271-partition table with owners, backups and epochs, and
//! the one committed table version clients see — as a deterministic state machine driven by
//! a replicated log. It never reads a clock, opens a socket or draws a random number: time
//! comes inside the log, and the Raft layer and the transport live elsewhere.
//!
//! | Module | Owns |
//! |---|---|
//! | [`ids`] | `MemberName` (validated), `Incarnation`, `RaftId`, `Epoch`, `ClusterUuid` |
//! | [`member`] | the member record and its life cycle `Joining → Active → Leaving`, `Down` |
//! | [`table`] | `PARTITION_COUNT`, `partition_of(key)`, the 271-entry `PartitionTable` |
//! | [`assign`] | `assign(members, current, backups) → Target`: minimal-movement, balanced |
//! | [`plan`] | `plan(current, target, max_parallel) → wave of Move`s: promotions, then copies |
//! | [`command`] | `Command`, `CommandResult`, `Refusal`, `Effect` |
//! | [`catalog`] | the replicated catalogs (admin policies, the index catalog): bounded maps of opaque values, changed by `CatalogPut` |
//! | [`state`] | `ControlState::apply(cmd, now_ms) → Outcome`: the state machine |
//! | [`voters`] | `desired_voters`: 3 voters, 5 from 5 live members, the rest learners |
//! | [`view`] | `partition_map`: the client view as `topgun-core`'s `PartitionMap` |
//!
//! Invariants (kept by `state.rs`, asserted after every command in debug builds and after
//! every step of `tests/simulation.rs`):
//! * every partition has exactly one owner; while any member is live that owner is live;
//! * no backup is its partition's owner, and backups are live and distinct;
//! * a partition's epoch rises by one exactly when its owner changes, so no two members own
//!   a partition in one epoch; commands naming an old epoch change nothing;
//! * `table_version` rises by one exactly when the client view changes;
//!   `PARTITION_MAP.version = version_base + table_version`;
//! * member names are unique; Raft ids are never reused;
//! * catalogs stay within their bounds, and their revision rises by one per change.
//!
//! Not here yet: replication, ISR changes driven by acks, migrations, handoff (part 2), the
//! openraft adapter and the transport.

pub mod assign;
pub mod catalog;
pub mod command;
pub mod ids;
pub mod member;
pub mod plan;
pub mod state;
pub mod table;
pub mod view;
pub mod voters;

pub use assign::{Candidate, Target, TargetEntry, assign};
pub use catalog::{CatalogPut, Catalogs, Expect};
pub use command::{
    BACKUPS_MAX, BootstrapMember, Command, CommandResult, Effect, Outcome, Refusal, version_base_at,
};
pub use ids::{ClusterUuid, Epoch, Incarnation, MemberName, NameError, RaftId};
pub use member::{Member, MemberAddrs, MemberState};
pub use plan::{CopyTask, MAX_PARALLEL_MIGRATIONS, Move, plan};
pub use state::{Cluster, ControlState};
pub use table::{
    Migration, PARTITION_COUNT, PartitionEntry, PartitionId, PartitionState, PartitionTable,
    TableError, partition_of,
};
pub use view::partition_map;
pub use voters::desired_voters;
