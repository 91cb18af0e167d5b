//! The data path: client writes and Merkle sync over the partitioned records (DESIGN §4.1).
//!
//! Owns the records: each shard ([`shard::Shard`], sans I/O) holds a set of partitions and
//! only its task ([`shard::service`]) touches them. [`plane::DataPlane`] routes a connection's
//! data requests to the shards and assembles their replies; [`ops`] turns a client op into a
//! validated write.
//!
//! Invariants:
//! * partition `p` (= `fnv1a(key) % 271`) belongs to exactly one shard;
//! * a write is acknowledged only once it is durable as configured, and published to
//!   subscribers only then;
//! * a connection's requests reach every shard in the order it sent them.
//!
//! Public face: [`plane::DataPlane`] and the [`shard::Shard`] model.

pub mod extensions;
pub mod ops;
pub mod plane;
pub mod shard;
