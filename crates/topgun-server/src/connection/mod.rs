//! Connections: accepting them, their protocol state, and what is pushed to them.
//!
//! Owns each connection's session state ([`session`], sans I/O), its bounded outbox of pushed
//! frames ([`outbox`]), its handle for the services that push to it ([`fanout`]) and the
//! listener that bounds what unauthenticated connections may cost ([`listener`]).
//!
//! Invariants:
//! * a connection's replies leave in the order of its requests; pushed frames (events,
//!   query updates, topic messages) may be interleaved between them but never reorder them;
//! * every byte waiting for a connection is counted against its budget and the server's; a
//!   connection over either is closed as a slow consumer, never buffered without bound;
//! * before authentication a connection may cost only the pre-auth budget.
//!
//! Public face: [`session::Session`], [`fanout::ConnHandle`], [`outbox::Outbox`] and
//! [`listener::PreAuth`]; the socket driving all of them is in `server`.

/// Identifies a connection for the lifetime of a server.
pub type ConnId = u64;

pub mod fanout;
pub mod listener;
pub mod outbox;
pub mod session;
