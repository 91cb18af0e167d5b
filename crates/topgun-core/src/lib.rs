//! TopGun core: the pure logic every TopGun node and client shares.
//!
//! No I/O, no async runtime, no clock: time is always an argument. Every type here is a
//! plain state machine that can be tested by feeding inputs and asserting exact outputs.
//!
//! | module | what it holds |
//! |---|---|
//! | [`aggregate`] | [`aggregate::Aggregates`]: live `count`/`sum`/`min`/`max`/`avg` per `groupBy` group (§5.3) |
//! | [`hash`] | FNV-1a over UTF-16, `mix`/`combine`, partitions (PROTOCOL.md §3.1–3.2, §3.8) |
//! | [`hlc`] | [`Timestamp`], [`NodeId`], the hybrid logical clock [`Hlc`] (§2.1) |
//! | [`value`] | [`Value`]: any MsgPack value, with a canonical total order |
//! | [`js`] | JavaScript renderings (`String(n)`, allow-listed `JSON.stringify`) the OR hash needs |
//! | [`merkle`] | [`MerkleTree`]: depth-3 hex trie storing items, hashes kept incrementally (§3.3) |
//! | [`lww_map`] | [`LwwMap`]: last-write-wins map (§2.2) |
//! | [`or_map`] | [`OrMap`]: observed-remove multi-value map with the TS entry hash (§2.3, §3.6) |
//! | [`pn_counter`] | [`PnCounter`]: positive-negative counter (§4.10) |
//! | [`live_query`] | [`live_query::View`]: a live query's ordered rows and top-N window changes (§5.5) |
//! | [`predicate`] | [`predicate::Filter`]: which records a live query selects (§5.1–5.2) |
//! | [`protocol`] | every wire message, typed; bounded MsgPack decode and encode (§1, §4, §5) |
//!
//! The invariants each CRDT keeps are stated at the top of its module and in
//! `docs/ARCHITECTURE.md`.

pub mod aggregate;
pub mod hash;
pub mod hlc;
pub mod js;
pub mod live_query;
pub mod lww_map;
pub mod merkle;
pub mod or_map;
pub mod pn_counter;
pub mod predicate;
pub mod protocol;
pub mod value;

pub use hlc::{Hlc, HlcError, NodeId, Timestamp};
pub use lww_map::{LwwError, LwwMap, LwwRecord};
pub use merkle::{MerkleError, MerkleTree, SplitTree};
pub use or_map::{OrMap, OrMapEntry, OrMapError, OrRecord};
pub use pn_counter::{CounterError, PnCounter};
pub use value::{Value, ValueMap};
