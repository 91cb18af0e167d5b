//! The admission table: for every request, the resource it names and what it needs of it.
//! Every gate on the request path asks this table — the data plane for whole requests, the
//! write path for each op of a batch — so that a request kind is checked in one place, the
//! same way everywhere.
//!
//! Access is checked first, before anything else about the request: a request that is both
//! refused by policy and malformed in another way is answered with the refusal by policy.
//! Deliveries that happen later (events, query updates, journal events, a lock granted after
//! a wait) are checked again when they are made, by their services.

use topgun_core::Value;
use topgun_core::protocol::Message;
use topgun_core::protocol::messages::{
    CounterRequest, CounterState, JournalRead, JournalSubscribe, LockRelease, LockRequest,
    MerkleReqBucket, OrMapDiffRequest, OrMapPushDiff, OrMapSyncInit, QuerySub, SyncInit,
};

use crate::error;
use crate::security::access::ConnAccess;
use crate::security::policy::{Action, Decision, Fields, Resource};

/// What a request needs of the resource it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Reading; a reader limited to some fields sees only those.
    Read,
    /// Reading whole values: OR-Map sync, whose entry hashes cover the values, so a reader
    /// limited to some fields could recover a hidden one by guessing it against the hashes.
    ReadWhole,
    Write,
    /// A counter sync, answered with the merged state: it reads as well as writes.
    ReadWrite,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Required<'a> {
    resource: Resource,
    name: &'a str,
    need: Need,
}

/// What `msg` needs before it is served; `None` when it names no resource (or, for
/// `CLIENT_OP` and `OP_BATCH`, when each op is admitted on its own by [`admit_op`]).
fn required(msg: &Message) -> Option<Required<'_>> {
    use Need::{Read, ReadWhole, ReadWrite, Write};
    use Resource::{Counter, Lock, Map, Topic};
    let (resource, name, need) = match msg {
        Message::SyncInit(SyncInit { map_name, .. })
        | Message::MerkleReqBucket(MerkleReqBucket { map_name, .. })
        | Message::QuerySub(QuerySub { map_name, .. }) => (Map, map_name, Read),
        Message::OrMapSyncInit(OrMapSyncInit { map_name, .. })
        | Message::OrMapMerkleReqBucket(MerkleReqBucket { map_name, .. })
        | Message::OrMapDiffRequest(OrMapDiffRequest { map_name, .. }) => {
            (Map, map_name, ReadWhole)
        }
        Message::OrMapPushDiff(OrMapPushDiff { map_name, .. }) => (Map, map_name, Write),
        // A journal request naming no map reads only the events its reader may see.
        Message::JournalSubscribe(JournalSubscribe { map_name, .. })
        | Message::JournalRead(JournalRead { map_name, .. }) => (Map, map_name.as_ref()?, Read),
        Message::TopicSub(topic) => (Topic, &topic.topic, Read),
        Message::TopicPub(publish) => (Topic, &publish.topic, Write),
        Message::LockRequest(LockRequest { name, .. })
        | Message::LockRelease(LockRelease { name, .. }) => (Lock, name, Write),
        Message::CounterRequest(CounterRequest { name }) => (Counter, name, Read),
        // A sync is answered with the merged state: it reads as well as writes.
        Message::CounterSync(CounterState { name, .. }) => (Counter, name, ReadWrite),
        _ => return None,
    };
    Some(Required {
        resource,
        name: name.as_str(),
        need,
    })
}

/// Admits `msg` on a connection: `Err` is the `ERROR 403` to answer; `Ok` carries the
/// fields a limited reader may see (`None`: all of them, or not a read).
pub fn admit(access: &ConnAccess, msg: &Message) -> Result<Option<Fields>, Box<Message>> {
    let Some(required) = required(msg) else {
        return Ok(None);
    };
    check(access, required)
        .map_err(|denied| error::refusal(error::code::FORBIDDEN, denied.reason(&required)))
}

/// Admits one op of a write to `map` (a row of its own: each op names its map, and an admin
/// policy may test the record it writes): `Err` is the reason its `OP_REJECTED` gives.
pub fn admit_op(
    access: &ConnAccess,
    map: &str,
    remove: bool,
    data: Option<&Value>,
) -> Result<(), String> {
    if access.decide_write(map, remove, data).allowed() {
        return Ok(());
    }
    let action = if remove { "REMOVE" } else { "WRITE" };
    Err(format!("not allowed: {action} on map {map:?}"))
}

/// Admits a read of `map` by a request that is not a message (a one-shot HTTP query):
/// `Ok` carries the fields its reader may see (`None`: all).
pub fn admit_read(access: &ConnAccess, map: &str) -> Result<Option<Fields>, Box<Message>> {
    let required = Required {
        resource: Resource::Map,
        name: map,
        need: Need::Read,
    };
    check(access, required)
        .map_err(|denied| error::refusal(error::code::FORBIDDEN, denied.reason(&required)))
}

/// Why a row of the table was not met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Denied {
    /// The connection may not take this action on the resource.
    Action(Action),
    /// It may read the map only in part, and the request needs whole values.
    PartialRead,
}

impl Denied {
    fn reason(self, required: &Required<'_>) -> String {
        let Required { resource, name, .. } = *required;
        match self {
            Self::Action(action) => error::forbidden_reason(resource, name, action),
            Self::PartialRead => format!(
                "map {name:?} may be read only in part, and an OR-Map's hashes cover whole \
                 values: OR-Map sync is not allowed"
            ),
        }
    }
}

/// Checks one row of the table against the connection's access.
fn check(access: &ConnAccess, required: Required<'_>) -> Result<Option<Fields>, Denied> {
    let decide = |action| access.decide(required.resource, required.name, action);
    match required.need {
        Need::Read => match decide(Action::Read) {
            Decision::Allow(fields) => Ok(fields),
            Decision::Deny => Err(Denied::Action(Action::Read)),
        },
        Need::ReadWhole => match decide(Action::Read) {
            Decision::Allow(None) => Ok(None),
            Decision::Allow(Some(_)) => Err(Denied::PartialRead),
            Decision::Deny => Err(Denied::Action(Action::Read)),
        },
        Need::Write => match decide(Action::Write) {
            Decision::Allow(_) => Ok(None),
            Decision::Deny => Err(Denied::Action(Action::Write)),
        },
        Need::ReadWrite => {
            for action in [Action::Read, Action::Write] {
                if !decide(action).allowed() {
                    return Err(Denied::Action(action));
                }
            }
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use topgun_core::protocol::messages::{CounterState, Ping, TopicPub};

    #[test]
    fn every_named_resource_has_a_row_and_others_none() {
        let publish = Message::TopicPub(TopicPub {
            topic: "news".into(),
            data: topgun_core::Value::Nil,
        });
        assert_eq!(
            required(&publish),
            Some(Required {
                resource: Resource::Topic,
                name: "news",
                need: Need::Write,
            })
        );
        let sync = Message::CounterSync(CounterState {
            name: "hits".into(),
            state: topgun_core::PnCounter::default(),
        });
        assert_eq!(required(&sync).map(|r| r.need), Some(Need::ReadWrite));
        assert_eq!(required(&Message::Ping(Ping { timestamp: 1 })), None);
    }
}
