//! The cluster's I/O (CLUSTER.md): how members reach each other. The replicated control
//! state, the partition table and its assignment are pure and live in the `topgun-cluster`
//! crate; this module carries them between processes.
//!
//! Built so far:
//! * [`frame`]: `u32` length, type byte, body — bounded before anything is read;
//! * [`hello`]: the handshake that proves both sides know the cluster secret and name;
//! * [`transport`]: the listener and the outbound links, with backoff and bounded queues;
//! * [`rpc`]: requests with replies, and one-way messages, over the transport;
//! * [`maps`]: the committed `PARTITION_MAP`, encoded once and pushed to every connection;
//! * [`formation`]: whether a member not yet in a cluster joins one, bootstraps one, or
//!   waits (sans I/O);
//! * [`routes`]: who owns each partition under the applied table;
//! * [`forwarder`]: writes to partitions other members own, sent and served (§8), and
//!   [`pushes`]: OR-Map pushes likewise;
//! * [`reads`]: reads gathered from every member, interests and relayed events and topic
//!   messages (§9), whose bytes are [`read_wire`]'s; [`counters`]: counters asked of their
//!   owners, their updates relayed; [`locks`]: every lock on one designated member;
//! * [`resume`]: a durable member's kept Raft log, resumed after a restart or cleared;
//! * [`node`]: one member — forming (`forming`), its Raft node, the leader's duties
//!   (`duties`), graceful leave; [`wire`] holds the control channel's own messages.
//!
//! Invariants of the module: no frame from a peer is read before the peer has proven itself,
//! and every queue between members has a bound.

pub mod catalogs;
pub mod counters;
mod duties;
pub mod formation;
mod forming;
pub mod forwarder;
pub mod frame;
pub mod hello;
pub mod locks;
pub mod maps;
pub mod node;
mod peer_rpc;
pub mod pushes;
pub mod read_wire;
pub mod reads;
pub mod resume;
pub mod routes;
pub mod rpc;
pub mod transport;
pub mod wire;
