//! Lock safety under contention, abrupt disconnects, lease expiry and a `kill -9` restart of
//! the real binary in the middle: a history checker verifies that, per lock, no two
//! holders' validity intervals overlap and fencing tokens strictly increase — including
//! across the restart.
//!
//! A holder's validity interval is what the protocol lets it assume, measured on this
//! process's monotonic clock: from receiving `LOCK_GRANTED` until the first of sending
//! `LOCK_RELEASE`, closing its connection, seeing its connection close, and its lease end
//! (counted from when it *sent* the request, which is no later than the server's grant).
//! `TOPGUN_SEED=<n>` replays a run's random choices.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as Ws;
use topgun_core::protocol::messages::{LockRelease, LockRequest};
use topgun_core::protocol::{Limits, Message};

const CLIENTS: u64 = 10;
const LOCKS: [&str; 3] = ["stress/a", "stress/b", "stress/c"];
const RUN: Duration = Duration::from_secs(6);
const RESTART_AT: Duration = Duration::from_secs(3);

/// One holder's validity interval.
#[derive(Debug, Clone)]
struct Hold {
    lock: &'static str,
    token: u64,
    from: Instant,
    until: Instant,
    client: u64,
    after_restart: bool,
}

fn spawn(dir: &Path) -> Served {
    let mut cmd = binary();
    cmd.arg("--data-dir").arg(dir).env("TOPGUN_NO_AUTH", "1");
    serve_binary(&mut cmd)
}

/// xorshift64: reproducible choices per client.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What a holder does with its lock.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Release,
    Disconnect,
    /// Keeps it past its lease without releasing (only with a ttl).
    Expire,
}

enum Outcome {
    Granted(u64),
    NotGranted,
    ConnectionLost,
}

struct Run {
    started: Instant,
    restarted: watch::Receiver<Option<Instant>>,
    addr: watch::Receiver<SocketAddr>,
    history: Arc<Mutex<Vec<Hold>>>,
}

/// Waits for the grant of `request_id` up to the TS client's own timeout.
async fn await_grant(ws: &mut Client, request_id: &str, ttl: Option<u64>) -> Outcome {
    let wait = Duration::from_millis(ttl.unwrap_or(0) + 5_000);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next()).await;
        match frame {
            Err(_) => return Outcome::NotGranted,
            Ok(Some(Ok(Ws::Binary(bytes)))) => {
                match Message::decode(&bytes, &Limits::default()).unwrap() {
                    Message::LockGranted(g) if g.request_id == request_id => {
                        return Outcome::Granted(g.fencing_token);
                    }
                    Message::LockGranted(_) | Message::LockReleased(_) | Message::GcPrune(_) => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return Outcome::ConnectionLost,
        }
    }
}

/// Holds for `hold`, watching the socket: returns early (with `false`) if it closes.
async fn hold_watching(ws: &mut Client, hold: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + hold;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return true,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return false,
        }
    }
}

async fn client(id: u64, seed: u64, run: Arc<Run>) {
    let mut rng = Rng((seed ^ (id + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
    let mut request = 0;
    'connect: while run.started.elapsed() < RUN {
        let addr = *run.addr.borrow();
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await
        else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        while run.started.elapsed() < RUN {
            let lock = LOCKS[usize::try_from(rng.below(LOCKS.len() as u64)).unwrap()];
            let ttl = (rng.below(5) > 0).then(|| 150 + rng.below(1_000));
            request += 1;
            let request_id = format!("c{id}-{request}");
            let msg = Message::LockRequest(LockRequest {
                request_id: request_id.as_str().into(),
                name: lock.into(),
                ttl,
            });
            let sent = Instant::now();
            if ws.send(Ws::Binary(msg.encode().into())).await.is_err() {
                continue 'connect;
            }
            let token = match await_grant(&mut ws, &request_id, ttl).await {
                Outcome::Granted(token) => token,
                Outcome::NotGranted => continue,
                Outcome::ConnectionLost => continue 'connect,
            };
            let from = Instant::now();
            let lease_end = ttl.map(|ttl| sent + Duration::from_millis(ttl));
            let ending = match rng.below(10) {
                0..=5 => Ending::Release,
                6 | 7 => Ending::Disconnect,
                _ if ttl.is_some() => Ending::Expire,
                _ => Ending::Release,
            };
            let hold = match ending {
                Ending::Expire => Duration::from_millis(ttl.unwrap_or(0) + 100),
                _ => Duration::from_millis(rng.below(250)),
            };
            let still_open = hold_watching(&mut ws, hold).await;
            let mut until = Instant::now();
            if still_open && matches!(ending, Ending::Release) {
                let release = Message::LockRelease(LockRelease {
                    request_id: Some(format!("{request_id}-r").into()),
                    name: lock.into(),
                    fencing_token: token,
                });
                let _ = ws.send(Ws::Binary(release.encode().into())).await;
                until = Instant::now().min(until);
            }
            let until = lease_end.map_or(until, |end| end.min(until));
            let after_restart = run.restarted.borrow().is_some_and(|at| at < from);
            run.history.lock().unwrap().push(Hold {
                lock,
                token,
                from,
                until,
                client: id,
                after_restart,
            });
            if !still_open {
                continue 'connect;
            }
            if matches!(ending, Ending::Disconnect) {
                drop(ws);
                continue 'connect;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_stay_exclusive_and_tokens_increase_through_contention_and_a_restart() {
    let seed: u64 = std::env::var("TOPGUN_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) * 2_654_435_761 + 7);
    eprintln!("lock stress seed {seed} (TOPGUN_SEED={seed} replays the clients' choices)");
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path());
    let (addr_tx, addr) = watch::channel(server.addr);
    let (restarted_tx, restarted) = watch::channel(None);
    let run = Arc::new(Run {
        started: Instant::now(),
        restarted,
        addr,
        history: Arc::default(),
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client(id, seed, Arc::clone(&run))))
        .collect();
    tokio::time::sleep(RESTART_AT).await;
    drop(server); // SIGKILL
    let server = spawn(dir.path());
    restarted_tx.send_replace(Some(Instant::now()));
    addr_tx.send_replace(server.addr);
    for c in clients {
        c.await.unwrap();
    }
    drop(server);

    let history = run.history.lock().unwrap().clone();
    check(&history, seed);
}

/// The safety properties, per lock: intervals in grant order do not overlap, and tokens
/// strictly increase in that order.
fn check(history: &[Hold], seed: u64) {
    let mut by_lock: BTreeMap<&str, Vec<&Hold>> = BTreeMap::new();
    for hold in history {
        by_lock.entry(hold.lock).or_default().push(hold);
    }
    for (lock, holds) in &mut by_lock {
        holds.sort_by_key(|h| h.from);
        for pair in holds.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(
                a.until <= b.from,
                "seed {seed}: {lock}: client {} (token {}) still held it {:?} after client {} \
                 (token {}) was granted it",
                a.client,
                a.token,
                a.until - b.from,
                b.client,
                b.token
            );
            assert!(
                a.token < b.token,
                "seed {seed}: {lock}: token {} granted after token {}",
                b.token,
                a.token
            );
        }
    }
    let before = history.iter().filter(|h| !h.after_restart).count();
    let after = history.len() - before;
    eprintln!(
        "{} grants checked ({before} before the restart, {after} after)",
        history.len()
    );
    assert!(
        before >= 20 && after >= 20,
        "too few grants to mean anything: {before} before, {after} after the restart"
    );
}
