//! Counters across members (CLUSTER.md §9): a counter lives on the member owning its
//! name's partition; others forward `COUNTER_REQUEST`/`COUNTER_SYNC` to it and hear of its
//! durable updates through their interest.
//!
//! * `COUNTER` (a request on the data channel): `u64` the asker's table version, `u64` the
//!   asking connection ([`remote_writer`]), `u64` the asker's interest generation in the
//!   counter (0: none; else the owner starts relaying to it first), then the client's `COUNTER_REQUEST` or
//!   `COUNTER_SYNC` as encoded for clients. The reply is `0` and the owner's answer (a
//!   `COUNTER_RESPONSE`, a `COUNTER_UPDATE` once durable, or an `ERROR`), or `2` and the
//!   owner's table version: it does not own the counter — the asker waits to know that
//!   table and asks again (a sync is a merge, so asking twice is harmless).
//! * `COUNTER_RELAY` (one-way): `u64` the receiver's interest generation, `u64` the syncing
//!   connection on the receiver (0: none), then the `COUNTER_UPDATE` frame. A counter's
//!   update carries its whole state, so one lost on the way only delays the next: no
//!   numbering is needed.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use topgun_cluster::table::partition_of;
use topgun_core::PnCounter;
use topgun_core::protocol::Message;
use topgun_core::protocol::messages::{CounterRequest, CounterState};

use super::hello::{Channel, PeerIdentity};
use super::read_wire::decode_message;
use super::routes::{Routes, RoutesWatch};
use super::rpc::Rpc;
use crate::connection::ConnId;
use crate::coordination::counters::{Ask, CounterPeers, CounterSink};
use crate::data::forward::{Owner, REMOTE_WRITER, remote_writer, writer_origin};
use crate::data::plane::DataPlane;
use crate::error::code;

/// The service id of a counter ask.
pub const COUNTER: u8 = 13;
/// The message kind of a relayed counter update.
pub const COUNTER_RELAY: u8 = 19;

/// How long an owner may take to answer (a sync waits for durability).
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long either side waits to learn a newer table.
const TABLE_CATCH_UP: Duration = Duration::from_secs(2);
/// Tries of one ask: the first, and again after ownership moved.
const ATTEMPTS: usize = 3;

const ANSWERED: u8 = 0;
const MOVED: u8 = 2;

type Refusal = (u32, String);

/// This member's way to the counters other members own.
#[derive(Debug)]
pub struct RemoteCounters {
    pub rpc: Arc<Rpc>,
    pub routes: RoutesWatch,
}

impl RemoteCounters {
    fn current(&self) -> Option<Arc<Routes>> {
        self.routes.borrow().clone()
    }
}

fn owner_of(routes: &Routes, name: &str) -> Option<Owner> {
    let owner = routes.owner(partition_of(name));
    if owner == routes.me {
        return None;
    }
    let addr = routes.members().find(|(id, _)| *id == owner)?.1;
    Some(Owner { id: owner.0, addr })
}

impl CounterPeers for RemoteCounters {
    fn owner_elsewhere(&self, name: &str) -> Option<Owner> {
        owner_of(&*self.current()?, name)
    }

    fn ask(&self, owner: Owner, ask: Ask) -> BoxFuture<'static, Result<PnCounter, Refusal>> {
        let (rpc, mut routes) = (Arc::clone(&self.rpc), self.routes.clone());
        async move {
            let Ask {
                name,
                sync,
                author,
                follow,
            } = ask;
            let mut owner = owner;
            for _ in 0..ATTEMPTS {
                let current = routes.borrow().clone();
                let (version, me) = current.map_or((0, 0), |r| (r.version, r.me.0));
                let header = (version, remote_writer(me, author), follow);
                let body = ask_body(header, &name, sync.as_ref());
                let reply = rpc
                    .call(&owner.addr, Channel::Data, COUNTER, &body, ASK_TIMEOUT)
                    .await
                    .map_err(|e| {
                        let why = format!("the member holding counter {name:?} did not answer ({e}); send it again");
                        (code::UNAVAILABLE, why)
                    })?;
                match read_reply(reply)? {
                    Reply::Answered(answer) => return answer,
                    Reply::Moved(theirs) => {
                        let newer = routes.wait_for(|r| r.as_ref().is_some_and(|r| r.version >= theirs));
                        let _ = tokio::time::timeout(TABLE_CATCH_UP, newer).await;
                        let Some(next) = routes.borrow().as_ref().and_then(|r| owner_of(r, &name))
                        else {
                            break;
                        };
                        owner = next;
                    }
                }
            }
            Err((
                code::UNAVAILABLE,
                format!("counter {name:?} kept changing members; send it again"),
            ))
        }
        .boxed()
    }
}

/// An ask's bytes: the header `(table version, author, follow)`, then the message.
fn ask_body(header: (u64, u64, u64), name: &str, sync: Option<&PnCounter>) -> Vec<u8> {
    let (version, author, follow) = header;
    let message = match sync {
        Some(state) => Message::CounterSync(CounterState {
            name: name.into(),
            state: state.clone(),
        }),
        None => Message::CounterRequest(CounterRequest { name: name.into() }),
    };
    let mut body = BytesMut::new();
    body.put_u64(version);
    body.put_u64(author);
    body.put_u64(follow);
    body.put_slice(&message.encode());
    body.to_vec()
}

enum Reply {
    Answered(Result<PnCounter, Refusal>),
    Moved(u64),
}

fn read_reply(mut reply: Bytes) -> Result<Reply, Refusal> {
    let malformed = || {
        (
            code::INTERNAL,
            "a malformed counter answer from a member".to_owned(),
        )
    };
    if reply.is_empty() {
        return Err(malformed());
    }
    match reply.get_u8() {
        ANSWERED => Ok(Reply::Answered(
            match decode_message(&reply).map_err(|_| malformed())? {
                Message::CounterResponse(s) | Message::CounterUpdate(s) => Ok(s.state),
                Message::Error(e) => Err((e.code, e.message.to_string())),
                _ => return Err(malformed()),
            },
        )),
        MOVED if reply.len() == 8 => Ok(Reply::Moved(reply.get_u64())),
        _ => Err(malformed()),
    }
}

/// The owner's side of an ask: answered if this member owns the counter under a table at
/// least as new as the asker's.
pub async fn serve(
    reads: &super::reads::Reads,
    from: &PeerIdentity,
    data: &DataPlane,
    mut body: Bytes,
) -> Result<Bytes, String> {
    if body.len() < 24 {
        return Err("a counter ask without its header".into());
    }
    let theirs = body.get_u64();
    let author = Some(body.get_u64())
        .filter(|w| writer_origin(*w).is_some())
        .unwrap_or(REMOTE_WRITER);
    let follow = body.get_u64();
    let routes = reads.routes();
    let (name, sync) = match decode_message(&body)? {
        Message::CounterRequest(r) => (r.name.to_string(), None),
        Message::CounterSync(s) => (s.name.to_string(), Some(s.state)),
        _ => return Err("a counter ask that is neither a request nor a sync".into()),
    };
    let mut watch = routes.clone();
    let newer = watch.wait_for(|r| r.as_ref().is_some_and(|r| r.version >= theirs));
    let _ = tokio::time::timeout(TABLE_CATCH_UP, newer).await;
    let current = routes.borrow().clone();
    let owned = current
        .as_ref()
        .is_some_and(|r| r.version >= theirs && r.owns(partition_of(&name)));
    let mut out = BytesMut::new();
    if !owned {
        out.put_u8(MOVED);
        out.put_u64(current.map_or(0, |r| r.version));
        return Ok(out.freeze());
    }
    if let Some((member, _)) = writer_origin(author).filter(|_| follow != 0) {
        // Relaying starts before the answer is computed, in the counter task's order.
        let sink: Arc<dyn CounterSink> = reads.link(member, from);
        data.counters()
            .interest(name.clone(), member, follow, Some(sink))
            .await;
    }
    let answer = data.counters().serve(name, sync, author).await;
    out.put_u8(ANSWERED);
    out.put_slice(&answer.encode());
    Ok(out.freeze())
}

/// A relayed counter update's bytes.
pub fn relay_body(generation: u64, except: ConnId, frame: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(16 + frame.len());
    out.put_u64(generation);
    out.put_u64(except);
    out.put_slice(frame);
    out.freeze()
}

/// A relayed counter update: the generation, the syncing connection here, the counter's
/// name and state; an error for anything else.
pub fn read_relay(mut body: Bytes) -> Result<(u64, ConnId, String, PnCounter), String> {
    if body.len() < 16 {
        return Err("a relayed counter update without its header".into());
    }
    let (generation, except) = (body.get_u64(), body.get_u64());
    match decode_message(&body)? {
        Message::CounterUpdate(s) => Ok((generation, except, s.name.to_string(), s.state)),
        _ => Err("a relayed counter update that is not one".into()),
    }
}

/// A counter update relayed to this member (on the inbox loop: handed on without waiting).
pub fn on_relay(reads: &super::reads::Reads, data: &DataPlane, from: &PeerIdentity, body: Bytes) {
    let (generation, except, name, state) = match read_relay(body) {
        Ok(relay) => relay,
        Err(why) => {
            tracing::warn!(peer = %from.name, %why, "a relayed counter update dropped");
            return;
        }
    };
    let followed = crate::data::peers::Followed::Counter;
    let held = data.interests().and_then(|i| i.generation(followed, &name));
    if held != Some(generation) {
        reads.end_interest(from, followed, &name, generation);
        return;
    }
    data.counters().try_relayed(name, state, except);
}

impl CounterSink for super::reads::RelayLink {
    fn relay(
        &self,
        name: &str,
        generation: u64,
        except: ConnId,
        frame: &crate::connection::outbox::SharedFrame,
    ) {
        let _ = name;
        self.send(
            COUNTER_RELAY,
            relay_body(generation, except, &frame.bytes()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_and_relays_read_back_and_bad_bytes_are_refused() {
        let mut state = PnCounter::new();
        state.add("n1", 3.0).unwrap();
        let mut body = Bytes::from(ask_body((4, 9, 2), "likes", Some(&state)));
        assert_eq!((body.get_u64(), body.get_u64(), body.get_u64()), (4, 9, 2));
        assert!(matches!(decode_message(&body), Ok(Message::CounterSync(_))));
        let update = Message::CounterUpdate(CounterState {
            name: "likes".into(),
            state: state.clone(),
        });
        let relay = relay_body(2, 7, &update.encode());
        assert_eq!(
            read_relay(relay.clone()),
            Ok((2, 7, "likes".into(), state.clone()))
        );
        assert!(read_relay(relay.slice(..12)).is_err());
        let not_an_update = relay_body(
            2,
            7,
            &Message::Ping(topgun_core::protocol::messages::Ping { timestamp: 1 }).encode(),
        );
        assert!(read_relay(not_an_update).is_err());
        let mut answered = BytesMut::new();
        answered.put_u8(ANSWERED);
        answered.put_slice(&update.encode());
        assert!(matches!(read_reply(answered.freeze()), Ok(Reply::Answered(Ok(s))) if s == state));
        let mut moved = BytesMut::new();
        moved.put_u8(MOVED);
        moved.put_u64(12);
        assert!(matches!(read_reply(moved.freeze()), Ok(Reply::Moved(12))));
        assert!(read_reply(Bytes::from_static(b"\x07")).is_err());
    }
}
