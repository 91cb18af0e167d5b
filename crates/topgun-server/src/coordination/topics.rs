//! Pub/sub topics (PROTOCOL §4.8, §7.2): per-connection subscriptions to exact topic names,
//! and fan-out of `TOPIC_MESSAGE` to every subscriber but the publisher.
//!
//! * A message is encoded once and the same bytes are offered to every subscriber's event
//!   queue ([`ConnHandle::offer`]); a subscriber whose queue is full is kicked (closed so
//!   that it reconnects), never silently skipped, and never lets memory grow.
//! * Per publisher, order is kept: a connection's `TOPIC_PUB`s are handled one after the
//!   other by its reader, and each subscriber's queue is FIFO.
//! * Messages are not stored: a subscriber hears what is published while it is subscribed.
//! * In a cluster (CLUSTER.md §9), each subscription counts towards this member's interest
//!   in the topic, which every other member hears of; a publication is delivered here and
//!   relayed, encoded once, to every member interested in the topic ([`TopicSink`]), which
//!   delivers the same frame with [`Topics::deliver`]. Per publisher, order holds (one FIFO
//!   data link per pair of members); delivery is best-effort, as on one node.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use topgun_core::Value;
use topgun_core::protocol::Message;
use topgun_core::protocol::messages::TopicMessage;

use crate::connection::ConnId;
use crate::connection::fanout::{ConnHandle, Delivery};
use crate::connection::outbox::SharedFrame;
use crate::coordination::names;
use crate::data::peers::{Cluster, Followed, MemberInterest, add_interest, end_interest};
use crate::error::code::{BAD_REQUEST, TOO_MANY};
use crate::security::policy::{Action, Resource};

/// Why a topic request was refused: an `ERROR` code and message.
pub type Refusal = (u32, String);

/// The topics one connection subscribes to (kept by the connection, so that its clean-up
/// touches only its own topics). Boxed: most connections never subscribe to one, and an
/// empty set's 48 bytes would sit in every connection's state.
#[derive(Debug, Default)]
#[allow(clippy::box_collection)]
pub struct TopicSubs(Option<Box<HashSet<String>>>);

impl TopicSubs {
    fn set(&mut self) -> &mut HashSet<String> {
        self.0.get_or_insert_with(Box::default)
    }

    fn contains(&self, topic: &str) -> bool {
        self.0.as_ref().is_some_and(|s| s.contains(topic))
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |s| s.len())
    }
}

/// Where a topic's messages go for another member's subscribers.
pub trait TopicSink: Send + Sync + std::fmt::Debug {
    /// Sends one `TOPIC_MESSAGE` frame under the receiver's interest `generation`.
    fn relay(&self, topic: &str, generation: u64, frame: &SharedFrame);
}

/// Another member's interest in a topic.
type Remote = MemberInterest<dyn TopicSink>;

/// Every topic's subscribers; shared by all connections.
#[derive(Debug)]
pub struct Topics {
    /// std Mutex: held to update a list or to offer one frame to it, never across an await.
    subscribers: Mutex<HashMap<String, Vec<ConnHandle>>>,
    /// Other members interested in each topic (cluster mode).
    remote: Mutex<HashMap<String, Vec<Remote>>>,
    /// In a cluster: this member's interests, which each subscription counts towards.
    cluster: Arc<OnceLock<Cluster>>,
    per_connection_max: usize,
}

impl Topics {
    pub fn new(per_connection_max: usize, cluster: Arc<OnceLock<Cluster>>) -> Self {
        Self {
            subscribers: Mutex::default(),
            remote: Mutex::default(),
            cluster,
            per_connection_max,
        }
    }

    fn remote(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Remote>>> {
        self.remote.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a subscription begun (`on`) or ended towards this member's interest.
    fn follow(&self, topic: &str, on: bool) {
        if let Some(cluster) = self.cluster.get() {
            let peers = cluster.peers.as_ref();
            if on {
                cluster.interests.join(peers, Followed::Topic, topic);
            } else {
                cluster.interests.leave(peers, Followed::Topic, topic);
            }
        }
    }

    /// Relays the topic's messages to `member` from now on, under its interest `generation`
    /// (an older generation than the one held changes nothing).
    pub fn add_remote(&self, topic: &str, member: u64, generation: u64, sink: Arc<dyn TopicSink>) {
        let mut remote = self.remote();
        let list = remote.entry(topic.to_owned()).or_default();
        let interest = Remote {
            member,
            generation,
            sink,
        };
        add_interest(list, interest);
    }

    /// Ends `member`'s interest `generation` in the topic (and any older one).
    pub fn remove_remote(&self, topic: &str, member: u64, generation: u64) {
        let mut remote = self.remote();
        if let Some(list) = remote.get_mut(topic) {
            end_interest(list, member, generation);
            if list.is_empty() {
                remote.remove(topic);
            }
        }
    }

    /// Drops every interest of a member that left the cluster.
    pub fn forget_member(&self, member: u64) {
        self.remote().retain(|_, list| {
            list.retain(|r| r.member != member);
            !list.is_empty()
        });
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<ConnHandle>>> {
        // Every update leaves the table consistent, so a panic elsewhere cannot corrupt it.
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `TOPIC_SUB`: subscribing again to a topic is a no-op.
    pub fn subscribe(
        &self,
        subs: &mut TopicSubs,
        conn: &ConnHandle,
        topic: &str,
    ) -> Result<(), Refusal> {
        names::check("topic", topic).map_err(|why| (BAD_REQUEST, why))?;
        if subs.contains(topic) {
            return Ok(());
        }
        if subs.len() >= self.per_connection_max {
            return Err((
                TOO_MANY,
                format!(
                    "this connection already subscribes to {} topics, the most allowed; \
                     topic {topic:?} is not subscribed",
                    self.per_connection_max
                ),
            ));
        }
        subs.set().insert(topic.to_owned());
        self.table()
            .entry(topic.to_owned())
            .or_default()
            .push(conn.clone());
        self.follow(topic, true);
        Ok(())
    }

    /// `TOPIC_UNSUB`: unsubscribing from a topic one does not subscribe to is a no-op.
    pub fn unsubscribe(&self, subs: &mut TopicSubs, conn: ConnId, topic: &str) {
        if subs.0.as_mut().is_some_and(|s| s.remove(topic)) {
            self.remove(conn, topic);
        }
    }

    /// Drops every subscription of a closed connection.
    pub fn forget(&self, subs: &mut TopicSubs, conn: ConnId) {
        for topic in subs.0.take().map(|s| *s).unwrap_or_default() {
            self.remove(conn, &topic);
        }
    }

    fn remove(&self, conn: ConnId, topic: &str) {
        let mut table = self.table();
        if let Some(list) = table.get_mut(topic) {
            list.retain(|c| c.id != conn);
            if list.is_empty() {
                table.remove(topic);
            }
        }
        drop(table);
        self.follow(topic, false);
    }

    /// `TOPIC_PUB`: sends `TOPIC_MESSAGE` to every subscriber but the publisher, who need
    /// not subscribe. `publisher_id` names the publishing user (or connection).
    pub fn publish(
        &self,
        publisher: ConnId,
        publisher_id: Option<&str>,
        topic: &str,
        data: Value,
        now_ms: u64,
    ) -> Result<Delivery, Refusal> {
        names::check("topic", topic).map_err(|why| (BAD_REQUEST, why))?;
        let remote = self.remote().get(topic).cloned().unwrap_or_default();
        if remote.is_empty() && !self.table().contains_key(topic) {
            return Ok(Delivery::default());
        }
        let frame = SharedFrame::from(
            Message::TopicMessage(TopicMessage {
                topic: topic.into(),
                data,
                publisher_id: publisher_id.map(Into::into),
                timestamp: now_ms,
            })
            .encode(),
        );
        for r in &remote {
            r.sink.relay(topic, r.generation, &frame);
        }
        Ok(self.deliver(topic, publisher, &frame))
    }

    /// Offers an encoded `TOPIC_MESSAGE` to the topic's local subscribers but `except`;
    /// forgets those that are gone or were kicked.
    pub fn deliver(&self, topic: &str, except: ConnId, frame: &SharedFrame) -> Delivery {
        let mut delivery = Delivery::default();
        let mut table = self.table();
        let Some(list) = table.get_mut(topic) else {
            return delivery;
        };
        list.retain(|conn| {
            // Not sent to the publisher, nor (while its roles do not allow it) to a
            // subscriber that may no longer read the topic.
            if conn.id == except
                || !conn
                    .access()
                    .decide(Resource::Topic, topic, Action::Read)
                    .allowed()
            {
                return true;
            }
            delivery.offer(conn, frame.clone())
        });
        if list.is_empty() {
            table.remove(topic);
        }
        delivery
    }

    /// How many topics have subscribers (for tests and metrics).
    pub fn topic_count(&self) -> usize {
        self.table().len()
    }
}

#[cfg(test)]
mod tests {
    use topgun_core::protocol::Limits;

    use super::*;

    fn received(conn: &ConnHandle) -> Vec<TopicMessage> {
        conn.take_frames()
            .into_iter()
            .map(
                |f| match Message::decode(f.as_ref(), &Limits::default()).unwrap() {
                    Message::TopicMessage(m) => m,
                    other => panic!("expected TOPIC_MESSAGE, got {other:?}"),
                },
            )
            .collect()
    }

    #[test]
    fn publish_reaches_subscribers_but_not_the_publisher() {
        let topics = Topics::new(100, Arc::default());
        let ((a, _), (b, _)) = (ConnHandle::new(), ConnHandle::new());
        let (mut subs_a, mut subs_b) = (TopicSubs::default(), TopicSubs::default());
        topics.subscribe(&mut subs_a, &a, "t").unwrap();
        topics.subscribe(&mut subs_a, &a, "t").unwrap();
        topics.subscribe(&mut subs_b, &b, "t").unwrap();
        let delivered = topics
            .publish(a.id, Some("alice"), "t", Value::Int(1), 7)
            .unwrap();
        assert_eq!(delivered.queued, 1);
        assert!(received(&a).is_empty(), "the publisher is excluded");
        let got = received(&b);
        assert_eq!(got.len(), 1, "subscribing twice delivers once");
        assert_eq!(
            (got[0].publisher_id.as_deref(), got[0].timestamp),
            (Some("alice"), 7)
        );

        topics.unsubscribe(&mut subs_b, b.id, "t");
        topics.publish(a.id, None, "t", Value::Int(2), 8).unwrap();
        assert!(received(&b).is_empty());
        topics.forget(&mut subs_a, a.id);
        assert_eq!(topics.topic_count(), 0, "no empty lists are kept");
    }

    /// A member's link, as the topic sees it: what it was asked to relay.
    #[derive(Debug, Default)]
    struct Link(Mutex<Vec<(String, u64)>>);

    impl TopicSink for Link {
        fn relay(&self, topic: &str, generation: u64, _: &SharedFrame) {
            self.0.lock().unwrap().push((topic.to_owned(), generation));
        }
    }

    #[test]
    fn publications_reach_interested_members_under_their_newest_interest() {
        let topics = Topics::new(100, Arc::default());
        let link = Arc::new(Link::default());
        let (conn, _) = ConnHandle::new();
        topics.add_remote("t", 2, 5, link.clone());
        topics
            .publish(conn.id, None, "t", Value::Int(1), 1)
            .unwrap();
        topics
            .publish(conn.id, None, "other", Value::Int(1), 1)
            .unwrap();
        topics.add_remote("t", 2, 4, link.clone());
        topics.remove_remote("t", 2, 4);
        topics
            .publish(conn.id, None, "t", Value::Int(2), 2)
            .unwrap();
        assert_eq!(
            *link.0.lock().unwrap(),
            [("t".to_owned(), 5), ("t".to_owned(), 5)],
            "an older interest neither replaces nor ends a newer one"
        );
        topics.remove_remote("t", 2, 5);
        topics.add_remote("u", 3, 1, link.clone());
        topics.forget_member(3);
        topics
            .publish(conn.id, None, "t", Value::Int(3), 3)
            .unwrap();
        topics
            .publish(conn.id, None, "u", Value::Int(3), 3)
            .unwrap();
        assert_eq!(link.0.lock().unwrap().len(), 2, "ended, and forgotten");
    }

    #[test]
    fn limits_and_names_are_enforced() {
        let topics = Topics::new(2, Arc::default());
        let (conn, _) = ConnHandle::new();
        let mut subs = TopicSubs::default();
        topics.subscribe(&mut subs, &conn, "a").unwrap();
        topics.subscribe(&mut subs, &conn, "b").unwrap();
        let (code, why) = topics.subscribe(&mut subs, &conn, "c").unwrap_err();
        assert_eq!(code, TOO_MANY, "{why}");
        let (code, _) = topics.subscribe(&mut subs, &conn, "no spaces").unwrap_err();
        assert_eq!(code, BAD_REQUEST);
        let (code, _) = topics
            .publish(conn.id, None, "", Value::Nil, 0)
            .unwrap_err();
        assert_eq!(code, BAD_REQUEST);
    }
}
