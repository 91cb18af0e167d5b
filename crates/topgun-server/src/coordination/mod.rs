//! Coordination between clients: pub/sub topics, distributed locks with fencing tokens and
//! PN counters, with the server's own durable state kept in reserved maps.
//!
//! Owns topic subscriptions ([`topics`]), the lock table ([`locks`], sans I/O) and its task
//! ([`locks::service`]), the counters ([`counters`]), the naming rules shared by topics and
//! locks ([`names`]) and the reserved maps ([`internal`]).
//!
//! Invariants:
//! * a fencing token never goes backwards, across restarts included;
//! * a connection's locks are released and its subscriptions dropped when it closes.
//!
//! Public face: [`topics::Topics`], [`locks::service::Locks`], [`counters::Counters`].

pub mod counters;
pub mod extensions;
pub mod internal;
pub mod locks;
pub mod names;
pub mod router;
pub mod topics;
