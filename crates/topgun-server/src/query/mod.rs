//! Live queries (PROTOCOL.md §4.7, §5): one task owns every subscription's view
//! ([`topgun_core::live_query::View`]) and turns committed LWW changes into `QUERY_UPDATE`s.
//!
//! A `QUERY_SUB` registers the subscription first and then loads the map's records from every
//! shard; changes committed meanwhile are buffered and, once the snapshot is in, applied only
//! where they are newer than what the snapshot saw — so a write racing the subscription is
//! neither lost nor told twice. `QUERY_RESP` and then the updates go through the connection's
//! outbox, so the response always comes first. A writer is not sent updates for its own
//! writes (the TS client applies them itself), though its views still change.
//!
//! Shards hand changes over only for maps that have queries ([`handle::Queries::watches`]), and never
//! wait for this task: writes must not stall behind live queries. When its queue is full the
//! change is not handed over and the map is marked *lagged*; the task then closes every
//! connection subscribed to a query of that map as a slow consumer (`query_lag`) and drops
//! those views, so that no subscriber goes on with a view that missed a change. The clients
//! reconnect and subscribe again, from a fresh snapshot.
//!
//! | file | what it holds |
//! |---|---|
//! | [`handle`] | [`handle::Queries`]: what shards and connections hold; the request queue |
//! | [`service`] | the task: subscriptions, snapshots, updates, shedding lagged maps |
//! | [`view`] | a view shared by every subscription asking the same, and how a change steps it |
//! | [`index`] | one map's subscriptions, indexed so a change costs only those it concerns |
//! | `once` | one-shot queries over a snapshot (HTTP sync) |
//! | [`index_catalog`] | the admin API's index definitions (intent; results never depend on them) |
//!
//! Public face: [`handle::Queries`], held by shards and connections, and [`service::run`],
//! the task itself (started by `services.rs`).

pub mod handle;
mod index;
pub mod index_catalog;
pub(crate) mod once;
pub mod service;
pub(crate) mod view;
