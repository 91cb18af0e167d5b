//! Connections between members (CLUSTER.md §13): a listener that authenticates every peer
//! before reading its frames, and one outbound link per (peer address, channel) that dials,
//! proves itself, and redials with backoff when the connection drops.
//!
//! Each member sends on its own outbound connections and receives on the ones its peers
//! opened, so a pair of members holds one socket per direction and channel. Nobody has to
//! decide who dials whom (two members that dial each other at once need no tie-break), and
//! a socket's writer and reader are never the same task. The control and data channels are
//! separate sockets, so a burst of data never delays a Raft heartbeat.
//!
//! Delivery is at most once: a frame queued while its link is down waits for the next
//! connection, but a frame lost with a dropped connection is not sent again. Raft retries on
//! its own; callers that need more correlate replies by request id and retry.
//!
//! Invariants:
//! * every queue is bounded: a link's outbound queue ([`LINK_QUEUE_LEN`] frames; senders
//!   wait, or use [`Link::try_send`]) and the two inbound queues, one per channel, shared by
//!   the accepted connections ([`INBOUND_QUEUE_LEN`]; a connection whose frames are not
//!   taken stops being read, and TCP pushes back on its sender). A data burst never queues
//!   ahead of a heartbeat on either side;
//! * a link's task ends when the last [`Link`] handle and the transport's own are dropped;
//! * dropping the [`Transport`] (or both inbound receivers) closes the listener and every
//!   accepted connection at once, so a member that stops frees its port for a restart.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::frame::{Frame, FrameError, read_frame};
use super::hello::{self, Channel, Credentials, HandshakeError, PeerIdentity};

/// Frames a link holds for its peer while connected or not.
pub const LINK_QUEUE_LEN: usize = 1024;

/// Frames received from every peer on one channel, waiting for the member to take them.
pub const INBOUND_QUEUE_LEN: usize = 4096;

/// The first and the longest wait between two dials of one peer.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The most a TCP connect may take before the next address or attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A frame from a peer.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub from: PeerIdentity,
    pub channel: Channel,
    pub frame: Frame,
}

/// What peers send, by channel.
#[derive(Debug)]
pub struct Inbox {
    pub control: mpsc::Receiver<Inbound>,
    pub data: mpsc::Receiver<Inbound>,
}

/// The sending ends of an [`Inbox`].
#[derive(Debug, Clone)]
struct InboxTx {
    control: mpsc::Sender<Inbound>,
    data: mpsc::Sender<Inbound>,
}

impl InboxTx {
    fn of(&self, channel: Channel) -> &mpsc::Sender<Inbound> {
        match channel {
            Channel::Control => &self.control,
            Channel::Data => &self.data,
        }
    }

    async fn closed(&self) {
        self.control.closed().await;
        self.data.closed().await;
    }
}

/// What a link knows of its peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Dialling (or waiting to dial again).
    Connecting,
    /// Connected and proven: frames flow.
    Up(PeerIdentity),
    /// The last attempt failed the handshake (another cluster, a wrong secret, another
    /// protocol): dialling goes on at the longest backoff, since either side may be
    /// reconfigured.
    Refused(String),
}

/// The sending end of one outbound link.
#[derive(Debug, Clone)]
pub struct Link {
    frames: mpsc::Sender<Frame>,
    state: watch::Receiver<LinkState>,
}

/// A link's queue is full, or its task has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the link's queue is full")]
    Full,
    #[error("the link is closed")]
    Closed,
}

impl Link {
    /// Queues `frame`, waiting while the queue is full.
    pub async fn send(&self, frame: Frame) -> Result<(), SendError> {
        self.frames.send(frame).await.map_err(|_| SendError::Closed)
    }

    /// Queues `frame` if there is room.
    pub fn try_send(&self, frame: Frame) -> Result<(), SendError> {
        self.frames.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }

    /// What the link knows of its peer now.
    pub fn state(&self) -> LinkState {
        self.state.borrow().clone()
    }

    /// Waits until the link is up; the peer it reached.
    pub async fn connected(&self) -> Option<PeerIdentity> {
        let mut state = self.state.clone();
        let up = state
            .wait_for(|s| matches!(s, LinkState::Up(_)))
            .await
            .ok()?;
        match &*up {
            LinkState::Up(peer) => Some(peer.clone()),
            _ => None,
        }
    }
}

/// A member's side of the cluster network.
#[derive(Debug)]
pub struct Transport {
    creds: Arc<Credentials>,
    local_addr: SocketAddr,
    links: Mutex<HashMap<(String, Channel), Link>>,
    /// The listener and the connections it accepted; aborted when the transport is dropped.
    accepting: JoinHandle<()>,
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl Transport {
    /// Listens on `addr` and accepts authenticated peers; their frames arrive in the inbox.
    /// Peers are told to reply at `advertise_host` and the port actually bound (`creds.me.addr`
    /// is set here). Serving stops when the transport or both receivers are dropped.
    pub async fn bind(
        addr: SocketAddr,
        advertise_host: &str,
        mut creds: Credentials,
    ) -> std::io::Result<(Arc<Self>, Inbox)> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        creds.me.addr = host_port(advertise_host, local_addr.port());
        let creds = Arc::new(creds);
        let (control, control_rx) = mpsc::channel(INBOUND_QUEUE_LEN);
        let (data, data_rx) = mpsc::channel(INBOUND_QUEUE_LEN);
        let inbox = InboxTx { control, data };
        let accepting = tokio::spawn(accept_loop(listener, Arc::clone(&creds), inbox));
        let transport = Arc::new(Self {
            creds,
            local_addr,
            links: Mutex::new(HashMap::new()),
            accepting,
        });
        let inbox = Inbox {
            control: control_rx,
            data: data_rx,
        };
        Ok((transport, inbox))
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Who this member is to its peers.
    pub fn me(&self) -> &PeerIdentity {
        &self.creds.me
    }

    /// The link to `addr` (`host:port`, resolved at each dial) on `channel`, started on first
    /// use.
    pub fn link(&self, addr: &str, channel: Channel) -> Link {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        links
            .entry((addr.to_owned(), channel))
            .or_insert_with(|| start_link(addr.to_owned(), channel, Arc::clone(&self.creds)))
            .clone()
    }

    /// Frames waiting in every link's queue.
    pub fn queued_frames(&self) -> usize {
        let links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        links
            .values()
            .map(|l| l.frames.max_capacity() - l.frames.capacity())
            .sum()
    }

    /// Forgets the links to `addr`: their tasks end once no other handle holds them.
    pub fn forget(&self, addr: &str) {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        links.retain(|(a, _), _| a != addr);
    }
}

/// Credentials of member `name` in cluster `test`, for tests.
#[cfg(test)]
pub(crate) fn test_credentials(name: &str, secret: &[u8]) -> Credentials {
    Credentials {
        cluster: "test".into(),
        me: PeerIdentity {
            name: name.into(),
            incarnation: u128::from(name.len() as u64),
            addr: String::new(),
        },
        secret: secret.to_vec(),
    }
}

/// A transport on a free loopback port, in cluster `test`, for tests of what runs over it.
#[cfg(test)]
pub(crate) async fn bind_for_test(name: &str, secret: &[u8]) -> (Arc<Transport>, Inbox) {
    let creds = test_credentials(name, secret);
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    Transport::bind(listen, "127.0.0.1", creds)
        .await
        .expect("a free loopback port")
}

/// `host:port`, with an IPv6 literal in brackets.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn start_link(addr: String, channel: Channel, creds: Arc<Credentials>) -> Link {
    let (frames, queued) = mpsc::channel(LINK_QUEUE_LEN);
    let (state_tx, state) = watch::channel(LinkState::Connecting);
    tokio::spawn(run_link(addr, channel, creds, queued, state_tx));
    Link { frames, state }
}

/// Dials, proves itself, and pumps queued frames until the connection drops; again, with
/// backoff, until every handle to the link is gone.
async fn run_link(
    addr: String,
    channel: Channel,
    creds: Arc<Credentials>,
    mut queued: mpsc::Receiver<Frame>,
    state: watch::Sender<LinkState>,
) {
    let mut backoff = BACKOFF_FIRST;
    loop {
        match connect(&addr, &creds, channel).await {
            Ok((stream, peer)) => {
                backoff = BACKOFF_FIRST;
                tracing::debug!(%addr, peer = %peer.name, ?channel, "cluster link up");
                state.send_replace(LinkState::Up(peer));
                if pump(stream, &mut queued).await == Pumped::Closed {
                    return;
                }
                state.send_replace(LinkState::Connecting);
            }
            Err(DialError::Handshake(e)) if e.is_refusal() => {
                let why = e.to_string();
                if !matches!(&*state.borrow(), LinkState::Refused(old) if *old == why) {
                    tracing::warn!(%addr, %why, "could not join a cluster peer");
                }
                state.send_replace(LinkState::Refused(why));
                backoff = BACKOFF_MAX;
            }
            Err(e) => tracing::debug!(%addr, error = %e, "cluster dial failed"),
        }
        // Wait out the backoff, but end at once if every handle is gone.
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = queued_closed(&queued) => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Completes once no sender of the queue is left.
async fn queued_closed(queued: &mpsc::Receiver<Frame>) {
    while !queued.is_closed() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("no address of {0} accepted a connection")]
    Unreachable(String),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
}

/// Connects to the first address of `addr` that answers, and proves this member to it.
async fn connect(
    addr: &str,
    creds: &Credentials,
    channel: Channel,
) -> Result<(TcpStream, PeerIdentity), DialError> {
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map(Iterator::collect)
        .unwrap_or_default();
    for candidate in resolved {
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(candidate)).await
        else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let peer = hello::dial(&mut stream, creds, channel).await?;
        return Ok((stream, peer));
    }
    Err(DialError::Unreachable(addr.to_owned()))
}

#[derive(Debug, PartialEq, Eq)]
enum Pumped {
    /// The connection dropped: dial again.
    Dropped,
    /// Every handle is gone: the link ends.
    Closed,
}

/// Writes queued frames until the connection drops. The peer never writes on this socket,
/// so a read that returns is the peer closing it.
async fn pump(stream: TcpStream, queued: &mut mpsc::Receiver<Frame>) -> Pumped {
    let (mut reader, mut writer) = stream.into_split();
    let mut probe = [0u8; 1];
    loop {
        tokio::select! {
            frame = queued.recv() => {
                let Some(frame) = frame else { return Pumped::Closed };
                let sent = match frame.encode() {
                    Ok(bytes) => writer.write_all(&bytes).await,
                    Err(e) => {
                        tracing::error!(error = %e, "a cluster frame over its bound was dropped");
                        continue;
                    }
                };
                if sent.is_err() {
                    return Pumped::Dropped;
                }
            }
            _ = tokio::io::AsyncReadExt::read(&mut reader, &mut probe) => return Pumped::Dropped,
        }
    }
}

/// Accepts peers until both inbound receivers are dropped. The accepted connections live in
/// a `JoinSet` owned here, so ending (or aborting) this task closes them all.
async fn accept_loop(listener: TcpListener, creds: Arc<Credentials>, inbound: InboxTx) {
    let mut peers = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = inbound.closed() => return,
            Some(_) = peers.join_next() => continue,
        };
        let Ok((stream, from)) = accepted else {
            // Out of descriptors and the like: wait instead of spinning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        peers.spawn(serve_peer(
            stream,
            from,
            Arc::clone(&creds),
            inbound.clone(),
        ));
    }
}

/// Authenticates one accepted connection, then hands its frames on until it closes.
async fn serve_peer(
    mut stream: TcpStream,
    from: SocketAddr,
    creds: Arc<Credentials>,
    inbound: InboxTx,
) {
    let _ = stream.set_nodelay(true);
    let (peer, channel) = match hello::accept(&mut stream, &creds).await {
        Ok(accepted) => accepted,
        Err(e) => {
            tracing::warn!(%from, error = %e, "a cluster connection was refused");
            return;
        }
    };
    tracing::debug!(%from, peer = %peer.name, ?channel, "cluster peer connected");
    loop {
        let frame = match read_frame(&mut stream).await {
            Ok(frame) => frame,
            Err(FrameError::Closed) => return,
            Err(e) => {
                tracing::warn!(peer = %peer.name, error = %e, "cluster connection dropped");
                return;
            }
        };
        let message = Inbound {
            from: peer.clone(),
            channel,
            frame,
        };
        if inbound.of(channel).send(message).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn creds(name: &str, secret: &[u8]) -> Credentials {
        test_credentials(name, secret)
    }

    async fn member(name: &str, secret: &[u8]) -> (Arc<Transport>, Inbox) {
        Transport::bind(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1",
            creds(name, secret),
        )
        .await
        .unwrap()
    }

    async fn next(frames: &mut mpsc::Receiver<Inbound>) -> Inbound {
        tokio::time::timeout(Duration::from_secs(5), frames.recv())
            .await
            .expect("a frame within 5 s")
            .expect("the transport is running")
    }

    #[tokio::test]
    async fn frames_reach_the_peer_in_order_on_their_channel() {
        let (a, _) = member("a", b"s").await;
        let (b, mut at_b) = member("b", b"s").await;
        let to_b = a.link(&b.local_addr().to_string(), Channel::Control);
        for n in 0..100u8 {
            to_b.send(Frame::new(9, vec![n])).await.unwrap();
        }
        assert_eq!(to_b.connected().await.unwrap().name, "b");
        for n in 0..100u8 {
            let got = next(&mut at_b.control).await;
            assert_eq!(
                (got.from.name.as_str(), got.channel),
                ("a", Channel::Control)
            );
            assert_eq!(got.frame.body[..], [n]);
        }
    }

    #[tokio::test]
    async fn each_channel_has_its_own_inbox_and_peers_say_where_to_reply() {
        let (a, _) = member("a", b"s").await;
        let (b, mut at_b) = member("b", b"s").await;
        let addr = b.local_addr().to_string();
        for n in 0..10u8 {
            a.link(&addr, Channel::Data)
                .send(Frame::new(2, vec![n]))
                .await
                .unwrap();
        }
        a.link(&addr, Channel::Control)
            .send(Frame::new(1, &b"beat"[..]))
            .await
            .unwrap();
        // The heartbeat is not behind the ten data frames nobody has taken yet.
        let beat = next(&mut at_b.control).await;
        assert_eq!(beat.frame.body, &b"beat"[..]);
        assert_eq!(beat.from.addr, a.me().addr);
        assert_eq!(a.me().addr, a.local_addr().to_string());
        for n in 0..10u8 {
            assert_eq!(next(&mut at_b.data).await.frame.body[..], [n]);
        }
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(host_port("::1", 9), "[::1]:9");
        assert_eq!(host_port("[::1]", 9), "[::1]:9");
        assert_eq!(host_port("node-1.svc", 9), "node-1.svc:9");
    }

    #[tokio::test]
    async fn a_link_redials_a_peer_that_restarts_on_the_same_port() {
        let (a, _) = member("a", b"s").await;
        let (b, mut at_b) = member("b", b"s").await;
        let addr = b.local_addr();
        let to_b = a.link(&addr.to_string(), Channel::Data);
        to_b.send(Frame::new(1, &b"first"[..])).await.unwrap();
        assert_eq!(next(&mut at_b.data).await.frame.body, &b"first"[..]);
        // The peer goes away: its receiver and listener with it.
        drop(at_b);
        drop(b);
        // Dropping the transport aborts its listener and connections; once the runtime has
        // run the abort, the port is free.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        let (_b2, mut at_b2) = loop {
            match Transport::bind(addr, "127.0.0.1", creds("b", b"s")).await {
                Ok(bound) => break bound,
                Err(e) => assert!(tokio::time::Instant::now() < deadline, "port held: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let _ = to_b.try_send(Frame::new(1, &b"again"[..]));
            if let Ok(Some(got)) =
                tokio::time::timeout(Duration::from_millis(200), at_b2.data.recv()).await
            {
                assert_eq!(got.frame.body, &b"again"[..]);
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "never redialled");
        }
    }

    #[tokio::test]
    async fn a_member_without_the_secret_is_refused_and_delivers_nothing() {
        let (a, _) = member("a", b"wrong").await;
        let (b, mut at_b) = member("b", b"right").await;
        let to_b = a.link(&b.local_addr().to_string(), Channel::Control);
        to_b.send(Frame::new(1, &b"let me in"[..])).await.unwrap();
        let refused = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if to_b.state() != LinkState::Connecting {
                    return to_b.state();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap();
        assert!(!matches!(refused, LinkState::Up(_)), "{refused:?}");
        assert!(
            tokio::time::timeout(Duration::from_millis(300), at_b.control.recv())
                .await
                .is_err(),
            "nothing was delivered"
        );
    }

    #[tokio::test]
    async fn a_full_link_queue_says_so() {
        let (a, _) = member("a", b"").await;
        // Nobody listens there: the link keeps dialling and its queue fills.
        let to_nowhere = a.link("127.0.0.1:1", Channel::Data);
        for _ in 0..LINK_QUEUE_LEN {
            to_nowhere.try_send(Frame::new(1, Vec::new())).unwrap();
        }
        assert_eq!(
            to_nowhere.try_send(Frame::new(1, Vec::new())),
            Err(SendError::Full)
        );
    }
}
