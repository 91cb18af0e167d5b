//! Routes a connection's coordination requests — topics, locks, counters, the journal — to
//! their services, and tells the services a connection used when it closes. Access was
//! checked before a request gets here ([`crate::security::admission`]).

use std::sync::Arc;

use topgun_core::protocol::Message;

use crate::connection::fanout::{ConnHandle, Outbound};
use crate::coordination::counters::Counters;
use crate::coordination::extensions;
use crate::coordination::locks::service::Locks;
use crate::coordination::topics::{TopicSubs, Topics};
use crate::error::{self, code};
use crate::journal::service::Journals;
use crate::metrics::Metrics;

/// The coordination services; shared by every connection.
#[derive(Debug)]
pub(crate) struct Coordinator {
    pub(crate) topics: Topics,
    pub(crate) locks: Locks,
    pub(crate) counters: Counters,
    /// `None` with the journal turned off.
    pub(crate) journal: Option<Journals>,
    /// This server's node id, named in journal pages.
    pub(crate) node_id: String,
    pub(crate) metrics: Arc<Metrics>,
}

/// What one connection holds in the coordination services.
#[derive(Debug, Default)]
pub struct CoordState {
    topics: TopicSubs,
    /// Which services must hear of the disconnect.
    uses: Uses,
}

/// The services a connection has used (each is told when it closes).
#[derive(Debug, Default, Clone, Copy)]
struct Uses {
    locks: bool,
    counters: bool,
    journal: bool,
}

impl Coordinator {
    /// Serves a topic, lock, counter or journal request; declines the extensions this
    /// server does not serve, and answers `ERROR 501` to anything else.
    pub(crate) async fn serve(
        &self,
        state: &mut CoordState,
        conn: &ConnHandle,
        msg: Message,
        now_ms: u64,
    ) -> Option<Outbound> {
        let refusal = |(code, why): (u32, String)| Outbound::Message(error::refusal(code, why));
        match msg {
            Message::TopicSub(t) => {
                let subscribed = self.topics.subscribe(&mut state.topics, conn, &t.topic);
                subscribed.err().map(refusal)
            }
            Message::TopicUnsub(t) => {
                self.topics
                    .unsubscribe(&mut state.topics, conn.id, &t.topic);
                None
            }
            Message::TopicPub(p) => {
                // Without authentication there is no user: name the connection.
                let sender = conn
                    .access()
                    .user_id()
                    .unwrap_or_else(|| format!("connection:{}", conn.id));
                let outcome = self
                    .topics
                    .publish(conn.id, Some(&sender), &p.topic, p.data, now_ms);
                match outcome {
                    Ok(delivery) => {
                        self.metrics.events(delivery.queued);
                        None
                    }
                    Err(refused) => Some(refusal(refused)),
                }
            }
            Message::LockRequest(r) => {
                state.uses.locks = true;
                self.locks
                    .request(conn, &r.request_id, &r.name, r.ttl)
                    .await;
                None
            }
            Message::LockRelease(r) => {
                state.uses.locks = true;
                let request_id = r.request_id.as_deref().unwrap_or_default();
                self.locks
                    .release(conn, request_id, &r.name, r.fencing_token)
                    .await;
                None
            }
            Message::CounterRequest(r) => {
                state.uses.counters = true;
                Some(self.counters.request(conn, &r.name).await)
            }
            Message::CounterSync(s) => {
                state.uses.counters = true;
                Some(self.counters.sync(conn, s).await)
            }
            Message::JournalSubscribe(_)
            | Message::JournalUnsubscribe(_)
            | Message::JournalRead(_) => self.journal(state, conn, msg).await,
            other => Some(Outbound::Message(
                extensions::declined(other)
                    .unwrap_or_else(|other| error::not_served(other.type_name())),
            )),
        }
    }

    /// `JOURNAL_SUBSCRIBE`, `JOURNAL_UNSUBSCRIBE` and `JOURNAL_READ`.
    async fn journal(
        &self,
        state: &mut CoordState,
        conn: &ConnHandle,
        msg: Message,
    ) -> Option<Outbound> {
        let Some(journal) = &self.journal else {
            return Some(Outbound::Message(error::refusal(
                code::NOT_IMPLEMENTED,
                "the event journal is turned off on this server (journal_capacity = 0)",
            )));
        };
        state.uses.journal = true;
        match msg {
            Message::JournalSubscribe(s) => journal.subscribe(conn, s).await,
            Message::JournalUnsubscribe(u) => {
                journal.unsubscribe(conn.id, &u.subscription_id).await;
                None
            }
            Message::JournalRead(r) => Some(journal.read(conn, r, &self.node_id).await),
            _ => None,
        }
    }

    /// Drops a closed connection's subscriptions, locks and counter interest.
    pub(crate) async fn disconnect(&self, state: &mut CoordState, conn: &ConnHandle) {
        self.topics.forget(&mut state.topics, conn.id);
        if state.uses.locks {
            self.locks.disconnect(conn.id).await;
        }
        if state.uses.counters {
            self.counters.disconnect(conn.id).await;
        }
        if let (true, Some(journal)) = (state.uses.journal, &self.journal) {
            journal.disconnect(conn.id).await;
        }
    }
}
