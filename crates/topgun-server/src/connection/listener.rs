//! Accepting connections, and what a connection may cost before it authenticates.
//!
//! With JWT auth on, every accepted TCP connection counts as *unauthenticated* until its
//! WebSocket `AUTH` succeeds or it closes ([`Unauthenticated`]). Beyond
//! `preauth_connections_max` of them, or `preauth_connections_per_ip_max` from one address,
//! a new connection is answered `503 Service Unavailable` and closed before any of its bytes
//! are read. Without auth every connection is authenticated from the start, and none of this
//! applies.
//!
//! **Why bytes are metered here, under the HTTP and WebSocket stacks.** tungstenite buffers
//! a whole message, up to its configured maximum, before the application sees any of it; and
//! neither axum's `WebSocket` nor tokio-tungstenite's stream can change that maximum once the
//! connection is upgraded. A small maximum for everyone would refuse authenticated clients'
//! large frames; a large one lets any unauthenticated connection make the server hold
//! megabytes (the maximum is four times `max_frame_bytes`). So the socket itself hands the
//! stacks above it at most `preauth_bytes_max` bytes until `AUTH` succeeds: whatever they
//! buffer, they cannot buffer more than they were given. Then the meter is lifted.
//!
//! **The bound.** The allowance counts from the connection's accept, and starts again at
//! each plain HTTP request (so a keep-alive scraper of `/metrics` is never cut off); not at
//! the WebSocket upgrade, so the upgrade request and the frames before `AUTH` share it.
//! Bytes read before a new start may still sit unparsed in hyper's buffer, so a connection
//! holds at most twice the allowance, and all of them together at most
//! `2 × preauth_bytes_max × preauth_connections_max` (128 MiB with the defaults) before
//! authentication, on top of each connection's fixed buffers.
//!
//! **Time is bounded too.** Before its upgrade a connection must send each HTTP request
//! within `auth_deadline_ms` of its accept or of its previous request, else it is closed
//! (a silent TCP connection must not hold a place for ever); after the upgrade the session's
//! auth deadline closes it with 1008.
//!
//! **When the allowance is spent,** reads wait. A WebSocket connection is then closed by its
//! driver with 1009 (the frame it is sending can never complete): [`PreAuth::spent`]
//! completes, and [`PreAuth::discard`] lets the socket drain unseen meanwhile, so that the
//! client, which may be blocked writing its frame, reads the close frame instead of a reset.
//! Before the upgrade, a request that does not fit is never read in full, and the request
//! deadline closes the connection (hyper may also read ahead while serving a request that
//! did fit, so an early error there could cut that request off).

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::config::PreAuthLimits;
use crate::metrics::Metrics;
use crate::security::guard::{PreAuthRefusal, Unauthenticated};

/// `remaining` of a connection that has authenticated: unmetered.
const UNMETERED: usize = usize::MAX;
/// `deadline_ms` of a connection whose session keeps the deadline now.
const NO_DEADLINE: u64 = u64::MAX;
/// Longest a refused or closed connection is drained so that its client reads our answer
/// rather than a reset.
pub(crate) const LINGER: Duration = Duration::from_secs(1);
/// Refused connections drained at once; beyond this they are simply closed.
const LINGERING_MAX: usize = 64;
/// Reads made while draining in one poll, so a fast sender cannot hold a worker thread.
const DRAIN_READS_PER_POLL: usize = 16;
/// Refusals are logged at `warn` at most this often (the rest at `debug`, and all counted in
/// `/metrics`), so a flood does not flood the log.
const WARN_EVERY_MS: u64 = 10_000;

/// What one unauthenticated connection may still do, shared by its socket ([`Metered`]) and
/// its request handlers ([`Peer`]). Atomics only: the socket reads it on every poll.
#[derive(Debug)]
pub struct PreAuth {
    /// Bytes the connection may still send; [`UNMETERED`] once it has authenticated.
    remaining: AtomicUsize,
    allowance: usize,
    /// Set when a read found the allowance spent.
    spent: AtomicBool,
    spent_changed: Notify,
    /// Once set, reads drain the socket and hand nothing up (the connection is closing).
    discarding: AtomicBool,
    /// The reader waiting for the allowance (woken when the meter is lifted).
    reader: AtomicWaker,
    /// When the next HTTP request must have arrived, in ms after `accepted`;
    /// [`NO_DEADLINE`] once upgraded.
    deadline_ms: AtomicU64,
    request_within_ms: u64,
    accepted: Instant,
    ip: IpAddr,
    /// Counted in `waiting` until authenticated or closed; `left` makes that happen once.
    waiting: Arc<Unauthenticated>,
    left: AtomicBool,
    metrics: Arc<Metrics>,
}

impl PreAuth {
    fn new(gate: &Gate, ip: IpAddr) -> Self {
        Self {
            remaining: AtomicUsize::new(gate.limits.bytes_max),
            allowance: gate.limits.bytes_max,
            spent: AtomicBool::new(false),
            spent_changed: Notify::new(),
            discarding: AtomicBool::new(false),
            reader: AtomicWaker::new(),
            deadline_ms: AtomicU64::new(gate.request_within_ms),
            request_within_ms: gate.request_within_ms,
            accepted: Instant::now(),
            ip,
            waiting: Arc::clone(&gate.waiting),
            left: AtomicBool::new(false),
            metrics: Arc::clone(&gate.metrics),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn is_authenticated(&self) -> bool {
        self.remaining.load(Ordering::Acquire) == UNMETERED
    }

    /// A plain HTTP request arrived: the allowance and the time for the next request start
    /// again.
    pub fn refill(&self) {
        if self.is_authenticated() {
            return;
        }
        self.remaining.store(self.allowance, Ordering::Release);
        let next = self.elapsed_ms().saturating_add(self.request_within_ms);
        self.deadline_ms.store(next, Ordering::Release);
        self.reader.wake();
    }

    /// The connection became a WebSocket: its session's auth deadline applies from now on.
    pub fn upgraded(&self) {
        self.deadline_ms.store(NO_DEADLINE, Ordering::Release);
    }

    /// `AUTH` succeeded: the meter is lifted for good and the place is freed.
    pub fn authenticated(&self) {
        if self.is_authenticated() {
            return;
        }
        self.remaining.store(UNMETERED, Ordering::Release);
        self.spent.store(false, Ordering::Release);
        self.leave();
        self.reader.wake();
    }

    /// Completes once a read has found the allowance spent; never, after `AUTH`.
    pub async fn spent(&self) {
        loop {
            let changed = self.spent_changed.notified();
            if self.spent.load(Ordering::Acquire) {
                return;
            }
            changed.await;
        }
    }

    /// From now on the socket is drained and nothing more is handed up: the connection is
    /// being closed, and its client must be able to finish writing and read why.
    pub fn discard(&self) {
        self.discarding.store(true, Ordering::Release);
        self.reader.wake();
    }

    pub fn is_discarding(&self) -> bool {
        self.discarding.load(Ordering::Acquire)
    }

    fn leave(&self) {
        if !self.left.swap(true, Ordering::AcqRel) {
            self.waiting.leave(self.ip);
        }
    }
}

/// What request handlers learn of a connection (axum `ConnectInfo`).
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// `None` without auth: nothing to meter.
    pub preauth: Option<Arc<PreAuth>>,
}

impl Connected<IncomingStream<'_, Admission>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Admission>) -> Self {
        Self {
            addr: *stream.remote_addr(),
            preauth: stream.io().preauth.clone(),
        }
    }
}

/// A TCP connection whose reads are metered until it authenticates (see the module doc).
/// Writes pass straight through.
#[derive(Debug)]
pub struct Metered {
    io: TcpStream,
    preauth: Option<Arc<PreAuth>>,
    /// The HTTP request deadline's timer, made at the first read that needs it.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Drop for Metered {
    fn drop(&mut self) {
        if let Some(preauth) = &self.preauth {
            preauth.leave();
        }
    }
}

impl Metered {
    /// `Err` once the HTTP request deadline has passed.
    fn poll_deadline(&mut self, preauth: &PreAuth, cx: &mut Context<'_>) -> io::Result<()> {
        loop {
            let deadline_ms = preauth.deadline_ms.load(Ordering::Acquire);
            if deadline_ms == NO_DEADLINE {
                self.timer = None;
                return Ok(());
            }
            let at = preauth.accepted + Duration::from_millis(deadline_ms);
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if timer.deadline() != at {
                timer.as_mut().reset(at);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            // A refill may have moved the deadline while the timer ran out.
            if preauth.deadline_ms.load(Ordering::Acquire) == deadline_ms {
                let spent = preauth.remaining.load(Ordering::Acquire) == 0;
                preauth
                    .metrics
                    .preauth_refused(if spent { "bytes" } else { "timeout" });
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no complete HTTP request within the auth deadline",
                ));
            }
        }
    }

    /// Reads and drops what arrives; `Ready` only at the end of the stream.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut scratch = [0u8; 4096];
        for _ in 0..DRAIN_READS_PER_POLL {
            let mut buf = ReadBuf::new(&mut scratch);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
            if buf.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl AsyncRead for Metered {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(preauth) = this.preauth.clone() else {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        };
        if preauth.discarding.load(Ordering::Acquire) {
            return this.poll_drain(cx);
        }
        if preauth.is_authenticated() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        this.poll_deadline(&preauth, cx)?;
        preauth.reader.register(cx.waker());
        let remaining = preauth.remaining.load(Ordering::Acquire);
        if remaining == 0 {
            // Before the upgrade hyper may read ahead while it still serves a request that
            // fit: the request deadline, not this read, ends such a connection.
            let upgraded = preauth.deadline_ms.load(Ordering::Acquire) == NO_DEADLINE;
            if upgraded && !preauth.spent.swap(true, Ordering::AcqRel) {
                preauth.spent_changed.notify_waiters();
            }
            return Poll::Pending;
        }
        if remaining == UNMETERED {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        // At most `remaining` bytes go up. (Reading into a sub-buffer needs no `unsafe`:
        // initialising the unfilled part costs a memset only while unauthenticated.)
        let limit = remaining.min(buf.remaining());
        let mut part = ReadBuf::new(buf.initialize_unfilled_to(limit));
        ready!(Pin::new(&mut this.io).poll_read(cx, &mut part))?;
        let read = part.filled().len();
        buf.advance(read);
        let _ = preauth
            .remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                (left != UNMETERED).then(|| left.saturating_sub(read))
            });
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// What admits connections in JWT mode.
#[derive(Debug)]
struct Gate {
    limits: PreAuthLimits,
    request_within_ms: u64,
    waiting: Arc<Unauthenticated>,
    metrics: Arc<Metrics>,
    /// Refused connections being drained (at most [`LINGERING_MAX`]).
    lingering: Arc<Semaphore>,
    /// When a refusal was last logged at `warn`, in ms since `started`; and those since.
    warned_ms: AtomicU64,
    unlogged: AtomicU64,
    started: Instant,
}

impl Gate {
    /// Answers a refused connection with a 503 naming the reason, drains what it sent for
    /// a moment (closing with unread data would reset the connection and lose the answer),
    /// and closes it.
    fn refuse(&self, mut stream: TcpStream, peer: SocketAddr, why: PreAuthRefusal) {
        self.metrics.preauth_refused(why.label());
        self.log(peer, why);
        let Ok(permit) = Arc::clone(&self.lingering).try_acquire_owned() else {
            return;
        };
        let body = why.reason();
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 1\r\n\
             connection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(LINGER, async {
                stream.write_all(answer.as_bytes()).await?;
                stream.shutdown().await?;
                let mut drained = Metered {
                    io: stream,
                    preauth: None,
                    timer: None,
                };
                std::future::poll_fn(|cx| drained.poll_drain(cx)).await
            })
            .await;
        });
    }

    fn log(&self, peer: SocketAddr, why: PreAuthRefusal) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.warned_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= WARN_EVERY_MS;
        if due
            && self
                .warned_ms
                .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let since = self.unlogged.swap(0, Ordering::Relaxed);
            tracing::warn!(
                %peer,
                reason = why.label(),
                waiting = self.waiting.count(),
                refused_unlogged = since,
                "connection refused before authentication: {}",
                why.reason()
            );
        } else {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, reason = why.label(), "connection refused before authentication");
        }
    }
}

/// The server's listener: accepts TCP connections, sets `TCP_NODELAY`, and in JWT mode
/// admits and meters them (see the module doc).
#[derive(Debug)]
pub struct Admission {
    listener: TcpListener,
    gate: Option<Gate>,
}

impl Admission {
    /// `waiting` is `Some` in JWT mode: the count of unauthenticated connections, bounded by
    /// `limits`; each must send its HTTP request within `request_within_ms`.
    pub fn new(
        listener: TcpListener,
        waiting: Option<Arc<Unauthenticated>>,
        limits: PreAuthLimits,
        request_within_ms: u64,
        metrics: Arc<Metrics>,
    ) -> Self {
        let gate = waiting.map(|waiting| Gate {
            limits,
            request_within_ms,
            waiting,
            metrics,
            lingering: Arc::new(Semaphore::new(LINGERING_MAX)),
            warned_ms: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
            started: Instant::now(),
        });
        Self { listener, gate }
    }

    async fn accept_tcp(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => {
                    // Nagle's algorithm would hold a small frame back until the peer
                    // acknowledges the previous one, which a delayed ACK can postpone by up
                    // to 40 ms: every ack and event of this protocol is a small frame.
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                    return (stream, addr);
                }
                // The connection went away before it was accepted: nothing to wait for.
                Err(e) if is_connection_error(&e) => {}
                // Out of file descriptors and the like: retrying at once would spin.
                Err(e) => {
                    tracing::error!(error = %e, "accept failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

impl Listener for Admission {
    type Io = Metered;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Metered, SocketAddr) {
        loop {
            let (io, addr) = self.accept_tcp().await;
            let Some(gate) = &self.gate else {
                let plain = Metered {
                    io,
                    preauth: None,
                    timer: None,
                };
                return (plain, addr);
            };
            match gate.waiting.admit(addr.ip()) {
                Ok(()) => {
                    let preauth = Some(Arc::new(PreAuth::new(gate, addr.ip())));
                    let metered = Metered {
                        io,
                        preauth,
                        timer: None,
                    };
                    return (metered, addr);
                }
                Err(why) => gate.refuse(io, addr, why),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}
