//! Requests and replies between members over the [`Transport`], plus one-way messages.
//!
//! A request is a frame of kind [`REQUEST`]: `u64` id, `u8` service, body. Its reply is a frame
//! of kind [`REPLY`] on the same channel, sent to the address the caller gave in its
//! handshake: `u64` id, `u8` status (0 served, 1 refused with a UTF-8 reason), body. Kinds from
//! [`FIRST_MESSAGE_KIND`] up are one-way messages handed to the [`Handler`] as they are.
//!
//! Delivery is at most once, like the transport's: a call whose request or reply is lost ends
//! in [`CallError::Timeout`], and callers retry only what is safe to repeat (Raft messages,
//! idempotent forwarded operations).
//!
//! Invariants:
//! * calls in flight are bounded ([`CALLS_IN_FLIGHT_MAX`]); a call that ends for any reason
//!   (reply, timeout, the caller dropping it) leaves no entry behind;
//! * requests served at once are bounded per channel ([`SERVED_IN_FLIGHT_MAX`]); past it a
//!   request is refused at once rather than queued, so a flood of one kind cannot hold the
//!   inbox and starve replies;
//! * replies never wait behind requests: the inbox loop only hands requests to tasks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use thiserror::Error;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::frame::Frame;
use super::hello::{Channel, PeerIdentity};
use super::transport::{Inbound, Inbox, SendError, Transport};

/// Frame kind of a request.
pub const REQUEST: u8 = 1;
/// Frame kind of a reply.
pub const REPLY: u8 = 2;
/// One-way messages use this kind and those above it.
pub const FIRST_MESSAGE_KIND: u8 = 16;

/// Calls this member may have waiting for replies at once.
pub const CALLS_IN_FLIGHT_MAX: usize = 16_384;
/// Requests this member serves at once, per channel.
pub const SERVED_IN_FLIGHT_MAX: usize = 1024;

const STATUS_SERVED: u8 = 0;
const STATUS_REFUSED: u8 = 1;

/// Why a call has no reply body.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CallError {
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("too many calls in flight")]
    Busy,
    #[error("the link to {0} is closed")]
    Closed(String),
    #[error("the peer refused the request: {0}")]
    Refused(String),
    #[error("a malformed reply")]
    Malformed,
}

/// What a member does with what its peers send.
pub trait Handler: Send + Sync + 'static {
    /// Serves one request: the reply body, or why it was refused. The future must end by
    /// itself (it holds one of the channel's [`SERVED_IN_FLIGHT_MAX`] slots until it does).
    fn serve(
        &self,
        from: PeerIdentity,
        service: u8,
        body: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, String>>;

    /// A one-way message (kind ≥ [`FIRST_MESSAGE_KIND`]). Called on the inbox loop: it must
    /// not block.
    fn message(&self, from: PeerIdentity, channel: Channel, frame: Frame);
}

type Waiting = oneshot::Sender<Result<Bytes, CallError>>;

/// Calls waiting for their replies, by id.
#[derive(Debug, Default)]
struct Pending(Mutex<HashMap<u64, Waiting>>);

impl Pending {
    fn insert(&self, id: u64, waiting: Waiting) -> Result<(), CallError> {
        let mut calls = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if calls.len() >= CALLS_IN_FLIGHT_MAX {
            return Err(CallError::Busy);
        }
        calls.insert(id, waiting);
        Ok(())
    }

    fn take(&self, id: u64) -> Option<Waiting> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id)
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// Removes a call's entry however the call ends.
struct Forget<'a> {
    pending: &'a Pending,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.pending.take(self.id);
    }
}

/// Requests, replies and messages over one member's transport.
pub struct Rpc {
    transport: Arc<Transport>,
    pending: Arc<Pending>,
    next_id: AtomicU64,
    loops: [JoinHandle<()>; 2],
}

impl Drop for Rpc {
    fn drop(&mut self) {
        for task in &self.loops {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rpc")
            .field("me", self.transport.me())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Rpc {
    /// Serves the inbox with `handler` until the `Rpc` is dropped.
    pub fn start(transport: Arc<Transport>, inbox: Inbox, handler: &Arc<dyn Handler>) -> Self {
        let pending = Arc::new(Pending::default());
        let serve = |frames| {
            tokio::spawn(inbox_loop(
                frames,
                Arc::clone(&transport),
                Arc::clone(&pending),
                Arc::clone(handler),
            ))
        };
        let loops = [serve(inbox.control), serve(inbox.data)];
        Self {
            transport,
            pending,
            next_id: AtomicU64::new(1),
            loops,
        }
    }

    /// The transport the calls travel on.
    pub fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }

    /// Calls `service` on the member at `addr` and waits up to `timeout` for its reply.
    pub async fn call(
        &self,
        addr: &str,
        channel: Channel,
        service: u8,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (waiting, reply) = oneshot::channel();
        self.pending.insert(id, waiting)?;
        let _forget = Forget {
            pending: &self.pending,
            id,
        };
        let mut out = BytesMut::with_capacity(9 + body.len());
        out.put_u64(id);
        out.put_u8(service);
        out.put_slice(body);
        let link = self.transport.link(addr, channel);
        match tokio::time::timeout_at(deadline, link.send(Frame::new(REQUEST, out.freeze()))).await
        {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(CallError::Closed(addr.to_owned())),
            Err(_) => return Err(CallError::Timeout(timeout)),
        }
        match tokio::time::timeout_at(deadline, reply).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(CallError::Closed(addr.to_owned())),
            Err(_) => Err(CallError::Timeout(timeout)),
        }
    }

    /// Queues a one-way message to the member at `addr` if its link has room.
    pub fn send(&self, addr: &str, channel: Channel, frame: Frame) -> Result<(), SendError> {
        debug_assert!(frame.kind >= FIRST_MESSAGE_KIND, "a one-way kind");
        self.transport.link(addr, channel).try_send(frame)
    }
}

async fn inbox_loop(
    mut frames: mpsc::Receiver<Inbound>,
    transport: Arc<Transport>,
    pending: Arc<Pending>,
    handler: Arc<dyn Handler>,
) {
    let serving = Arc::new(Semaphore::new(SERVED_IN_FLIGHT_MAX));
    while let Some(Inbound {
        from,
        channel,
        frame,
    }) = frames.recv().await
    {
        match frame.kind {
            REPLY => on_reply(&pending, frame.body),
            REQUEST => on_request(&transport, &handler, &serving, from, channel, frame.body),
            kind if kind >= FIRST_MESSAGE_KIND => handler.message(from, channel, frame),
            kind => tracing::warn!(peer = %from.name, kind, "unknown cluster frame kind dropped"),
        }
    }
}

fn on_reply(pending: &Pending, mut body: Bytes) {
    if body.len() < 9 {
        tracing::warn!("a cluster reply without its header dropped");
        return;
    }
    let id = body.get_u64();
    let status = body.get_u8();
    let Some(waiting) = pending.take(id) else {
        return; // Timed out or dropped by its caller meanwhile.
    };
    let result = match status {
        STATUS_SERVED => Ok(body),
        STATUS_REFUSED => Err(CallError::Refused(
            String::from_utf8_lossy(&body).into_owned(),
        )),
        _ => Err(CallError::Malformed),
    };
    let _ = waiting.send(result);
}

fn on_request(
    transport: &Arc<Transport>,
    handler: &Arc<dyn Handler>,
    serving: &Arc<Semaphore>,
    from: PeerIdentity,
    channel: Channel,
    mut body: Bytes,
) {
    if body.len() < 9 {
        tracing::warn!(peer = %from.name, "a cluster request without its header dropped");
        return;
    }
    let id = body.get_u64();
    let service = body.get_u8();
    let link = transport.link(&from.addr, channel);
    let Ok(slot) = Arc::clone(serving).try_acquire_owned() else {
        let _ = link.try_send(reply(id, Err("busy: too many requests in flight".into())));
        return;
    };
    let served = handler.serve(from, service, body);
    tokio::spawn(async move {
        let result = served.await;
        drop(slot);
        // Waits while the link's queue is full: the caller's timeout bounds what it gains.
        let _ = link.send(reply(id, result)).await;
    });
}

fn reply(id: u64, result: Result<Bytes, String>) -> Frame {
    let (status, body) = match result {
        Ok(body) => (STATUS_SERVED, body),
        Err(why) => (STATUS_REFUSED, Bytes::from(why)),
    };
    let mut out = BytesMut::with_capacity(9 + body.len());
    out.put_u64(id);
    out.put_u8(status);
    out.put_slice(&body);
    Frame::new(REPLY, out.freeze())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const ECHO: u8 = 1;
    const REFUSE: u8 = 2;
    const NEVER: u8 = 3;

    /// Echoes, refuses, or never answers; forwards one-way messages to the test.
    struct Test {
        messages: mpsc::UnboundedSender<(String, Frame)>,
    }

    impl Handler for Test {
        fn serve(
            &self,
            from: PeerIdentity,
            service: u8,
            body: Bytes,
        ) -> BoxFuture<'static, Result<Bytes, String>> {
            Box::pin(async move {
                match service {
                    ECHO => Ok(Bytes::from([from.name.as_bytes(), b":", &body].concat())),
                    REFUSE => Err("not here".to_owned()),
                    _ => std::future::pending().await,
                }
            })
        }

        fn message(&self, from: PeerIdentity, _: Channel, frame: Frame) {
            let _ = self.messages.send((from.name, frame));
        }
    }

    async fn member(name: &str) -> (Rpc, mpsc::UnboundedReceiver<(String, Frame)>) {
        let (transport, inbox) = super::super::transport::bind_for_test(name, b"").await;
        let (messages, received) = mpsc::unbounded_channel();
        (
            Rpc::start(
                transport,
                inbox,
                &(Arc::new(Test { messages }) as Arc<dyn Handler>),
            ),
            received,
        )
    }

    fn addr(rpc: &Rpc) -> String {
        rpc.transport().local_addr().to_string()
    }

    const SECOND: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn concurrent_calls_each_get_their_own_reply() {
        let (a, _) = member("a").await;
        let (b, _) = member("b").await;
        let to_b = addr(&b);
        let calls = (0..500u32).map(|n| {
            let (a, to_b) = (&a, &to_b);
            async move {
                let channel = if n % 2 == 0 {
                    Channel::Data
                } else {
                    Channel::Control
                };
                let got = a
                    .call(to_b, channel, ECHO, n.to_string().as_bytes(), SECOND)
                    .await
                    .unwrap();
                assert_eq!(got, format!("a:{n}").as_bytes());
            }
        });
        futures_util::future::join_all(calls).await;
        assert_eq!(a.pending.len(), 0, "nothing left behind");
    }

    #[tokio::test]
    async fn a_refusal_and_a_silence_end_the_call_and_leave_nothing() {
        let (a, _) = member("a").await;
        let (b, _) = member("b").await;
        let refused = a.call(&addr(&b), Channel::Data, REFUSE, b"", SECOND).await;
        assert_eq!(refused, Err(CallError::Refused("not here".into())));
        let short = Duration::from_millis(200);
        let silent = a.call(&addr(&b), Channel::Data, NEVER, b"", short).await;
        assert_eq!(silent, Err(CallError::Timeout(short)));
        assert_eq!(a.pending.len(), 0);
    }

    #[tokio::test]
    async fn requests_past_the_bound_are_refused_at_once() {
        let (a, _) = member("a").await;
        let (b, _) = member("b").await;
        let to_b = addr(&b);
        let hold = Duration::from_secs(2);
        let stuck: Vec<_> = (0..SERVED_IN_FLIGHT_MAX)
            .map(|_| a.call(&to_b, Channel::Data, NEVER, b"", hold))
            .collect();
        let (_, next) = tokio::join!(futures_util::future::join_all(stuck), async {
            // Let the stuck calls take every slot first.
            tokio::time::sleep(Duration::from_millis(500)).await;
            a.call(&to_b, Channel::Data, ECHO, b"x", SECOND).await
        });
        assert!(
            matches!(next, Err(CallError::Refused(ref why)) if why.starts_with("busy")),
            "{next:?}"
        );
        // The other channel has its own slots.
        let control = a.call(&to_b, Channel::Control, ECHO, b"y", SECOND).await;
        assert_eq!(control.unwrap(), &b"a:y"[..]);
    }

    #[tokio::test]
    async fn one_way_messages_reach_the_handler() {
        let (a, _) = member("a").await;
        let (b, mut at_b) = member("b").await;
        a.send(
            &addr(&b),
            Channel::Data,
            Frame::new(FIRST_MESSAGE_KIND, &b"hi"[..]),
        )
        .unwrap();
        let (from, frame) = tokio::time::timeout(SECOND, at_b.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((from.as_str(), &frame.body[..]), ("a", &b"hi"[..]));
    }
}
