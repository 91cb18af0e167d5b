//! The data path: client writes and Merkle sync over the partitioned records (DESIGN §4.1).
//!
//! Owns the records: each shard ([`shard::Shard`], sans I/O) holds a set of partitions and
//! only its task ([`shard::service`]) touches them. [`shards::Shards`] is the one place that
//! maps a key to its partition and shard. [`plane::DataPlane`] admits each request and hands
//! it to the [`write`] path (ops and pushes, validated by [`ops`]), the [`sync`] path (Merkle
//! trees gathered from every shard), the live queries or the coordination router; HTTP sync's
//! [`deltas`] are gathered from every shard by arrival time.
//! [`conn::ConnState`] is what one connection holds in all of them.
//!
//! Invariants:
//! * partition `p` (= `fnv1a(key) % 271`) belongs to exactly one shard;
//! * a write is acknowledged only once it is durable as configured, and published to
//!   subscribers only then;
//! * a connection's requests reach every shard in the order it sent them, so a `SYNC_INIT`
//!   after an `OP_BATCH` sees the batch;
//! * every queue is bounded: shard queues by [`shards::SHARD_QUEUE_LEN`] (a full one makes
//!   the reader wait), replies by the connection's outbox.
//!
//! Public face: [`plane::DataPlane`], [`conn::ConnState`] and the [`shard::Shard`] model.

pub mod conn;
pub mod deltas;
pub mod forward;
pub mod gate;
pub mod ops;
pub mod parts;
pub mod peers;
pub mod plane;
pub mod shard;
pub mod shards;
pub mod sync;
pub mod write;
