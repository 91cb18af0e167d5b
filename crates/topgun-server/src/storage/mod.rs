//! Durability: the write-ahead log, the store it is checkpointed into, backups, and the
//! recovery that joins them at start-up (DESIGN §4.2).
//!
//! Owns everything on disk: the data directory and its lock ([`data_dir`]), the log
//! ([`wal`]), the store trait and its backends ([`store`], [`redb`], [`pg`]), the
//! checkpointer that drains the log into the store ([`checkpoint`]) and backups
//! ([`backup`]). [`open`] opens the configured pair and recovers the records.
//!
//! Invariants:
//! * a write acknowledged under the default durability is in a synced log frame;
//! * a log segment is released only once the store holds everything in it;
//! * the store's mark names the log it expects: damage is refused, never skipped silently.
//!
//! Public face: [`open()`], [`StorageConfig`], [`Opened`] and the [`store::Store`] trait.

pub mod backup;
pub mod checkpoint;
pub mod data_dir;
pub mod open;
pub mod pg;
pub mod redb;
pub mod store;
pub mod wal;

pub use open::{Backend, Durability, Opened, StorageConfig, StorageError, open, open_with_store};
