//! Distributed locks with fencing tokens (PROTOCOL §4.9, §7.1, with the fix of §9.6), sans
//! I/O: inputs are requests, releases, disconnects, clock ticks and the outcome of making
//! tokens durable; outputs are [`Effect`]s for the driver ([`service`]) to carry out.
//!
//! * **Fencing tokens** come from one server-wide counter, so they strictly increase per
//!   lock name and across names. A token is announced only once it is durable: the table
//!   asks for a *reservation* (`Effect::Reserve { through }`, the driver persists the
//!   high-water mark) and grants from the reserved block without touching the disk until
//!   it is used up. After a restart, tokens continue above the last reserved value, so they
//!   keep increasing across restarts (a block's unused tokens are skipped).
//! * **A busy lock queues** the request (FIFO). The TS client reads any answer to an
//!   acquire other than `LOCK_GRANTED` as success (§9.6), so a waiting request is never
//!   answered until it is granted; it is dropped silently shortly before the client's own
//!   timeout (max(ttl + 5 s, 5 s)) would make `lock()` return `false` anyway.
//! * **Leases**: a grant with a `ttl` expires `ttl` ms after it is announced; the next
//!   waiter is then granted. Without `ttl` the lock is held until released or until its
//!   connection closes.
//! * **Release** must present the current token (the token is the capability; which
//!   connection presents it is not checked, as in TopGun). A re-request by the holding
//!   connection is granted again with the same token and renews the lease.
//! * A disconnect releases the connection's locks and drops its waiting requests.

pub mod service;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use crate::connection::ConnId;
use crate::coordination::names;
use crate::error::code::{BAD_REQUEST, TOO_MANY, UNAVAILABLE};

/// Tokens reserved per durable write of the high-water mark.
pub const RESERVE_BLOCK: u64 = 1024;
/// Waiting requests per lock; more are refused with `ERROR 429`.
pub const WAITERS_MAX: usize = 1024;
/// Locks one connection may hold or wait for at once; more are refused with `ERROR 429`
/// (so the table is bounded by the connections).
pub const PER_CONNECTION_MAX: usize = 1024;
/// Request ids one holder may have outstanding on its lock before the grant is announced.
const HOLDER_REQUESTS_MAX: usize = 16;
/// How long before the client's own timeout a waiting request is dropped (so that a grant
/// never reaches a client that has already given up).
pub const GIVE_UP_MARGIN_MS: u64 = 500;
/// The TS client waits max(ttl + 5 s, 5 s) for an answer to an acquire.
const CLIENT_WAIT_EXTRA_MS: u64 = 5_000;

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send `LOCK_GRANTED`.
    Grant {
        conn: ConnId,
        request_id: String,
        name: String,
        token: u64,
    },
    /// Send `LOCK_RELEASED` (the answer to a release).
    Released {
        conn: ConnId,
        request_id: String,
        name: String,
        success: bool,
    },
    /// Send `ERROR`.
    Refuse {
        conn: ConnId,
        code: u32,
        message: String,
    },
    /// Make `through` the durable high-water mark of tokens, then call
    /// [`LockTable::reserved`] (or [`LockTable::reserve_failed`]).
    Reserve { through: u64 },
}

#[derive(Debug)]
struct Holder {
    conn: ConnId,
    token: u64,
    ttl: Option<u64>,
    /// Set when the grant is announced (and the lease starts).
    expires_at: Option<u64>,
    announced: bool,
    /// Requests to answer when the grant is announced.
    request_ids: Vec<String>,
}

#[derive(Debug)]
struct Waiter {
    conn: ConnId,
    request_id: String,
    ttl: Option<u64>,
    gives_up_at: u64,
}

#[derive(Debug, Default)]
struct Lock {
    holder: Option<Holder>,
    waiting: VecDeque<Waiter>,
}

/// Every lock's holder and queue, and the token counter.
#[derive(Debug)]
pub struct LockTable {
    locks: HashMap<String, Lock>,
    /// The last token handed to a holder.
    issued: u64,
    /// The durable high-water mark: tokens up to it may be announced.
    reserved: u64,
    /// A reservation being made durable.
    reserving: Option<u64>,
    /// Locks whose holder waits for a reservation.
    unannounced: BTreeSet<String>,
    /// Lease expiries and waiters' give-up times; checked against the lock when due.
    deadlines: Deadlines,
    /// Names each connection holds or waits for.
    by_conn: HashMap<ConnId, HashSet<String>>,
}

impl LockTable {
    /// A table whose tokens continue above `durable_high` (the last reserved mark).
    pub fn new(durable_high: u64) -> Self {
        Self {
            locks: HashMap::new(),
            issued: durable_high,
            reserved: durable_high,
            reserving: None,
            unannounced: BTreeSet::new(),
            deadlines: Deadlines::default(),
            by_conn: HashMap::new(),
        }
    }

    /// `LOCK_REQUEST`.
    pub fn request(
        &mut self,
        conn: ConnId,
        request_id: &str,
        name: &str,
        ttl: Option<u64>,
        now: u64,
    ) -> Vec<Effect> {
        let refuse = |code, message| {
            vec![Effect::Refuse {
                conn,
                code,
                message,
            }]
        };
        if let Err(why) = names::check("lock", name) {
            return refuse(BAD_REQUEST, why);
        }
        if ttl == Some(0) {
            return refuse(
                BAD_REQUEST,
                format!("lock {name:?}: ttl must be a positive number of milliseconds"),
            );
        }
        let held = self.by_conn.get(&conn);
        if held.is_some_and(|names| names.len() >= PER_CONNECTION_MAX && !names.contains(name)) {
            return refuse(
                TOO_MANY,
                format!(
                    "lock {name:?}: this connection already holds or waits for \
                     {PER_CONNECTION_MAX} locks, the most allowed"
                ),
            );
        }
        let mut out = Vec::new();
        self.expire_at(name, now, &mut out);
        let holder = self.locks.get_mut(name).and_then(|l| l.holder.as_mut());
        match holder {
            Some(holder) if holder.conn == conn => {
                if holder.request_ids.len() >= HOLDER_REQUESTS_MAX {
                    return refuse(TOO_MANY, format!("lock {name:?}: too many requests"));
                }
                holder.ttl = ttl;
                holder.request_ids.push(request_id.to_owned());
                if holder.announced {
                    self.announce(name, now, &mut out);
                }
            }
            Some(_) => {
                let lock = self
                    .locks
                    .get_mut(name)
                    .expect("held locks are in the table");
                if lock.waiting.len() >= WAITERS_MAX {
                    return refuse(
                        TOO_MANY,
                        format!("lock {name:?} already has {WAITERS_MAX} waiting requests"),
                    );
                }
                let waits = ttl.unwrap_or(0).saturating_add(CLIENT_WAIT_EXTRA_MS);
                let gives_up_at = now.saturating_add(waits - GIVE_UP_MARGIN_MS);
                lock.waiting.push_back(Waiter {
                    conn,
                    request_id: request_id.to_owned(),
                    ttl,
                    gives_up_at,
                });
                self.deadlines.add(gives_up_at, name);
            }
            None => {
                let waiter = Waiter {
                    conn,
                    request_id: request_id.to_owned(),
                    ttl,
                    gives_up_at: u64::MAX,
                };
                self.hand_over(name, waiter, now, &mut out);
            }
        }
        self.by_conn
            .entry(conn)
            .or_default()
            .insert(name.to_owned());
        out
    }

    /// `LOCK_RELEASE`: succeeds iff `token` is the lock's current token.
    pub fn release(
        &mut self,
        conn: ConnId,
        request_id: &str,
        name: &str,
        token: u64,
        now: u64,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        self.expire_at(name, now, &mut out);
        let held = self
            .locks
            .get(name)
            .and_then(|l| l.holder.as_ref())
            .is_some_and(|h| h.token == token);
        out.push(Effect::Released {
            conn,
            request_id: request_id.to_owned(),
            name: name.to_owned(),
            success: held,
        });
        if held {
            self.free(name, now, &mut out);
        }
        out
    }

    /// A connection closed: its locks are released and its waiting requests dropped.
    pub fn disconnect(&mut self, conn: ConnId, now: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        for name in self.by_conn.remove(&conn).unwrap_or_default() {
            let Some(lock) = self.locks.get_mut(&name) else {
                continue;
            };
            let mut left = Vec::new();
            lock.waiting.retain(|w| {
                if w.conn == conn {
                    left.push(w.gives_up_at);
                }
                w.conn != conn
            });
            for at in left {
                self.deadlines.remove(at, &name);
            }
            let lock = self.locks.get(&name).expect("looked up above");
            if lock.holder.as_ref().is_some_and(|h| h.conn == conn) {
                self.free(&name, now, &mut out);
            } else {
                self.drop_if_idle(&name);
            }
        }
        out
    }

    /// Takes back a grant its connection may no longer have (its access changed before the
    /// grant went out): frees the lock if that connection holds it, handing it on.
    pub fn revoke(&mut self, conn: ConnId, name: &str, now: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        let holds = self
            .locks
            .get(name)
            .and_then(|l| l.holder.as_ref())
            .is_some_and(|h| h.conn == conn);
        if holds {
            self.free(name, now, &mut out);
        }
        out
    }

    /// Expires leases and waiting requests due by `now`.
    pub fn tick(&mut self, now: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        while let Some(name) = self.deadlines.pop_due(now) {
            self.expire_at(&name, now, &mut out);
        }
        out
    }

    /// When [`LockTable::tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.next()
    }

    /// Deadlines scheduled (each is dropped when its lease or wait ends another way).
    pub fn deadline_count(&self) -> usize {
        self.deadlines.len()
    }

    /// The high-water mark `through` is durable: announces the grants it covers.
    pub fn reserved(&mut self, through: u64, now: u64) -> Vec<Effect> {
        self.reserving = None;
        self.reserved = self.reserved.max(through);
        let mut out = Vec::new();
        let ready: Vec<String> = self
            .unannounced
            .iter()
            .filter(|name| {
                self.locks
                    .get(*name)
                    .and_then(|l| l.holder.as_ref())
                    .is_some_and(|h| h.token <= self.reserved)
            })
            .cloned()
            .collect();
        for name in ready {
            self.unannounced.remove(&name);
            self.announce(&name, now, &mut out);
        }
        self.reserve_if_needed(&mut out);
        out
    }

    /// Making a reservation durable failed (the store is unavailable): every grant waiting
    /// for it, and every request queued behind those, is refused.
    pub fn reserve_failed(&mut self, why: &str) -> Vec<Effect> {
        self.reserving = None;
        let mut out = Vec::new();
        for name in std::mem::take(&mut self.unannounced) {
            let Some(lock) = self.locks.remove(&name) else {
                continue;
            };
            let message =
                format!("lock {name:?} cannot be granted: its fencing token is not durable: {why}");
            let holder = lock.holder.map(|h| h.conn);
            for conn in holder
                .into_iter()
                .chain(lock.waiting.iter().map(|w| w.conn))
            {
                if let Some(names) = self.by_conn.get_mut(&conn) {
                    names.remove(&name);
                }
                out.push(Effect::Refuse {
                    conn,
                    code: UNAVAILABLE,
                    message: message.clone(),
                });
            }
        }
        out
    }

    /// The holder's connection and token of a lock, if it is held (tests, diagnostics).
    pub fn holder(&self, name: &str) -> Option<(ConnId, u64)> {
        let holder = self.locks.get(name)?.holder.as_ref()?;
        Some((holder.conn, holder.token))
    }

    /// Locks with a holder or waiters.
    pub fn len(&self) -> usize {
        self.locks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }

    /// The highest token reserved so far: every token handed out is at most this.
    pub fn high(&self) -> u64 {
        self.reserved.max(self.issued)
    }

    /// Tokens continue above `floor` from now on (the next one is reserved durably first,
    /// as any token above the reserved mark).
    pub fn raise(&mut self, floor: u64) {
        self.issued = self.issued.max(floor);
    }

    /// Makes `waiter` the holder with a new token; announces it if the token is reserved.
    fn hand_over(&mut self, name: &str, waiter: Waiter, now: u64, out: &mut Vec<Effect>) {
        self.issued += 1;
        let holder = Holder {
            conn: waiter.conn,
            token: self.issued,
            ttl: waiter.ttl,
            expires_at: None,
            announced: false,
            request_ids: vec![waiter.request_id],
        };
        self.locks.entry(name.to_owned()).or_default().holder = Some(holder);
        if self.issued <= self.reserved {
            self.announce(name, now, out);
        } else {
            self.unannounced.insert(name.to_owned());
            self.reserve_if_needed(out);
        }
    }

    fn reserve_if_needed(&mut self, out: &mut Vec<Effect>) {
        if self.reserving.is_none() && self.issued > self.reserved {
            let through = self.issued + RESERVE_BLOCK;
            self.reserving = Some(through);
            out.push(Effect::Reserve { through });
        }
    }

    /// Sends the holder's grant to each of its pending requests and (re)starts its lease.
    fn announce(&mut self, name: &str, now: u64, out: &mut Vec<Effect>) {
        let Some(holder) = self.locks.get_mut(name).and_then(|l| l.holder.as_mut()) else {
            return;
        };
        holder.announced = true;
        if let Some(old) = holder.expires_at {
            self.deadlines.remove(old, name);
        }
        holder.expires_at = holder.ttl.map(|ttl| now.saturating_add(ttl));
        if let Some(at) = holder.expires_at {
            self.deadlines.add(at, name);
        }
        for request_id in holder.request_ids.drain(..) {
            out.push(Effect::Grant {
                conn: holder.conn,
                request_id,
                name: name.to_owned(),
                token: holder.token,
            });
        }
    }

    /// Frees the lock and hands it to the first waiter still waiting.
    fn free(&mut self, name: &str, now: u64, out: &mut Vec<Effect>) {
        let Some(old) = self.locks.get_mut(name).and_then(|l| l.holder.take()) else {
            return;
        };
        if let Some(at) = old.expires_at {
            self.deadlines.remove(at, name);
        }
        self.unannounced.remove(name);
        self.untrack_if_unused(old.conn, name);
        loop {
            let next = self.locks.get_mut(name).and_then(|l| l.waiting.pop_front());
            if let Some(waiter) = &next {
                self.deadlines.remove(waiter.gives_up_at, name);
            }
            match next {
                Some(next) if next.gives_up_at > now => {
                    self.hand_over(name, next, now, out);
                    return;
                }
                Some(gave_up) => self.untrack_if_unused(gave_up.conn, name),
                None => break,
            }
        }
        self.drop_if_idle(name);
    }

    /// Forgets that `conn` uses the lock once it neither holds nor waits for it.
    fn untrack_if_unused(&mut self, conn: ConnId, name: &str) {
        let uses = self.locks.get(name).is_some_and(|l| {
            l.holder.as_ref().is_some_and(|h| h.conn == conn)
                || l.waiting.iter().any(|w| w.conn == conn)
        });
        if !uses && let Some(names) = self.by_conn.get_mut(&conn) {
            names.remove(name);
            if names.is_empty() {
                self.by_conn.remove(&conn);
            }
        }
    }

    fn drop_if_idle(&mut self, name: &str) {
        if self
            .locks
            .get(name)
            .is_some_and(|l| l.holder.is_none() && l.waiting.is_empty())
        {
            self.locks.remove(name);
        }
    }

    /// Drops the lock's waiters that gave up by `now` and ends its lease if it is over.
    fn expire_at(&mut self, name: &str, now: u64, out: &mut Vec<Effect>) {
        let Some(lock) = self.locks.get_mut(name) else {
            return;
        };
        let mut gave_up = Vec::new();
        lock.waiting.retain(|w| {
            let waits = w.gives_up_at > now;
            if !waits {
                gave_up.push((w.conn, w.gives_up_at));
            }
            waits
        });
        let lease_over = lock
            .holder
            .as_ref()
            .and_then(|h| h.expires_at)
            .is_some_and(|at| at <= now);
        for (conn, at) in gave_up {
            self.deadlines.remove(at, name);
            self.untrack_if_unused(conn, name);
        }
        if lease_over {
            self.free(name, now, out);
        } else {
            self.drop_if_idle(name);
        }
    }
}

/// Due times per lock, counted (two waiters of one lock may share a time), so that an
/// entry can be dropped as soon as what it times ends another way: the set stays as large
/// as the leases and waits in progress, whatever the TTLs asked for.
#[derive(Debug, Default)]
struct Deadlines(BTreeMap<(u64, String), u32>);

impl Deadlines {
    fn add(&mut self, at: u64, name: &str) {
        *self.0.entry((at, name.to_owned())).or_default() += 1;
    }

    fn remove(&mut self, at: u64, name: &str) {
        let key = (at, name.to_owned());
        if let Some(count) = self.0.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.0.remove(&key);
            }
        }
    }

    /// A lock with something due by `now`, forgetting its due entries.
    fn pop_due(&mut self, now: u64) -> Option<String> {
        let (at, _) = self.0.first_key_value()?.0;
        if *at > now {
            return None;
        }
        self.0.pop_first().map(|((_, name), _)| name)
    }

    fn next(&self) -> Option<u64> {
        self.0.first_key_value().map(|((at, _), _)| *at)
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(conn: ConnId, request_id: &str, name: &str, token: u64) -> Effect {
        Effect::Grant {
            conn,
            request_id: request_id.into(),
            name: name.into(),
            token,
        }
    }

    fn released(conn: ConnId, request_id: &str, name: &str, success: bool) -> Effect {
        Effect::Released {
            conn,
            request_id: request_id.into(),
            name: name.into(),
            success,
        }
    }

    /// A table whose first reservation is already durable.
    fn ready() -> LockTable {
        let mut t = LockTable::new(0);
        assert_eq!(
            t.request(9, "r0", "warm", None, 0),
            vec![Effect::Reserve {
                through: 1 + RESERVE_BLOCK
            }]
        );
        assert_eq!(
            t.reserved(1 + RESERVE_BLOCK, 0),
            vec![grant(9, "r0", "warm", 1)]
        );
        t
    }

    #[test]
    fn a_token_is_announced_only_once_reserved() {
        let mut t = LockTable::new(40);
        assert_eq!(
            t.request(1, "a", "x", Some(100), 0),
            vec![Effect::Reserve {
                through: 41 + RESERVE_BLOCK
            }]
        );
        assert_eq!(
            t.holder("x"),
            Some((1, 41)),
            "held while the token is made durable"
        );
        assert_eq!(
            t.request(2, "b", "y", None, 0),
            vec![],
            "one reservation at a time"
        );
        assert_eq!(
            t.reserved(41 + RESERVE_BLOCK, 5),
            vec![grant(1, "a", "x", 41), grant(2, "b", "y", 42)]
        );
        assert_eq!(
            t.request(3, "c", "z", None, 6),
            vec![grant(3, "c", "z", 43)]
        );
        // The lease starts at the announcement (5), not at the request (0).
        assert_eq!(t.tick(104), vec![]);
        assert_eq!(t.holder("x"), Some((1, 41)));
        t.tick(105);
        assert_eq!(t.holder("x"), None);
    }

    #[test]
    fn a_busy_lock_queues_in_order_and_release_needs_the_token() {
        let mut t = ready();
        assert_eq!(t.request(1, "a", "x", None, 0), vec![grant(1, "a", "x", 2)]);
        assert_eq!(
            t.request(2, "b", "x", Some(1000), 0),
            vec![],
            "queued, not answered"
        );
        assert_eq!(t.request(3, "c", "x", Some(1000), 0), vec![]);
        assert_eq!(
            t.release(2, "r", "x", 99, 1),
            vec![released(2, "r", "x", false)]
        );
        assert_eq!(
            t.release(1, "r", "x", 2, 1),
            vec![released(1, "r", "x", true), grant(2, "b", "x", 3)]
        );
        assert_eq!(
            t.release(2, "", "x", 3, 2),
            vec![released(2, "", "x", true), grant(3, "c", "x", 4)]
        );
    }

    #[test]
    fn the_holder_asking_again_gets_the_same_token_and_a_new_lease() {
        let mut t = ready();
        assert_eq!(
            t.request(1, "a", "x", Some(10), 0),
            vec![grant(1, "a", "x", 2)]
        );
        assert_eq!(
            t.request(1, "b", "x", Some(10), 8),
            vec![grant(1, "b", "x", 2)]
        );
        assert_eq!(t.tick(12), vec![]);
        assert_eq!(t.holder("x"), Some((1, 2)), "renewed at 8 until 18");
        t.tick(18);
        assert_eq!(t.holder("x"), None);
    }

    #[test]
    fn leases_expire_and_waiters_give_up_before_their_client_does() {
        let mut t = ready();
        t.request(1, "a", "x", Some(10_000), 0);
        // Waits for max(ttl + 5 s, 5 s) less the margin: 4.5 s without a ttl.
        assert_eq!(t.request(2, "b", "x", None, 0), vec![]);
        assert_eq!(t.request(3, "c", "x", Some(6_000), 0), vec![]);
        assert_eq!(t.tick(4_500), vec![]);
        assert_eq!(t.tick(10_000), vec![grant(3, "c", "x", 3)], "2 gave up");
        assert_eq!(
            t.next_deadline(),
            Some(16_000),
            "3 no longer waits; its lease ends"
        );
        t.tick(16_000);
        assert_eq!(t.holder("x"), None);
        assert_eq!(
            t.len(),
            1,
            "nothing is kept for free locks; \"warm\" is still held"
        );
    }

    #[test]
    fn a_disconnect_releases_locks_and_drops_waiting_requests() {
        let mut t = ready();
        t.request(1, "a", "x", None, 0);
        t.request(1, "b", "y", None, 0);
        t.request(2, "c", "y", None, 0);
        t.request(2, "d", "x", None, 0);
        t.request(3, "e", "x", None, 0);
        assert_eq!(t.disconnect(2, 1), vec![]);
        assert_eq!(t.disconnect(1, 2), vec![grant(3, "e", "x", 4)]);
        assert_eq!(t.holder("y"), None);
        assert_eq!(t.disconnect(3, 3), vec![]);
        assert_eq!(t.len(), 1, "only \"warm\" is left");
    }

    #[test]
    fn bad_requests_and_a_failed_reservation_are_refused() {
        let mut t = LockTable::new(0);
        for (name, ttl) in [("no spaces", None), ("x", Some(0))] {
            let out = t.request(1, "a", name, ttl, 0);
            assert!(
                matches!(
                    &out[..],
                    [Effect::Refuse {
                        code: BAD_REQUEST,
                        ..
                    }]
                ),
                "{out:?}"
            );
        }
        assert_eq!(t.request(1, "a", "x", None, 0).len(), 1);
        t.request(2, "b", "x", None, 0);
        let out = t.reserve_failed("disk full");
        assert!(
            out.iter().all(|e| matches!(
                e,
                Effect::Refuse {
                    code: UNAVAILABLE,
                    ..
                }
            )),
            "{out:?}"
        );
        assert_eq!(out.len(), 2);
        assert!(t.is_empty());
        // The next request asks again for the same durable block.
        assert_eq!(
            t.request(1, "c", "x", None, 1),
            vec![Effect::Reserve {
                through: 2 + RESERVE_BLOCK
            }]
        );
    }

    #[test]
    fn deadlines_go_when_what_they_time_ends_another_way() {
        let mut t = ready();
        // 400 rounds of two tokens each stay within the reserved block.
        for i in 0..400 {
            let Effect::Grant { token, .. } = t.request(1, "a", "x", Some(u64::MAX / 2), i)[0]
            else {
                panic!("granted at once")
            };
            t.request(2, "b", "x", Some(u64::MAX / 4), i);
            t.release(1, "r", "x", token, i);
            t.disconnect(2, i);
        }
        assert_eq!(
            t.deadline_count(),
            0,
            "released leases and dropped waits leave nothing"
        );
        assert!(t.is_empty() || t.len() == 1);
    }

    #[test]
    fn a_connection_holds_a_bounded_number_of_locks_and_a_revoked_grant_moves_on() {
        let mut t = ready();
        for i in 0..PER_CONNECTION_MAX {
            t.request(1, "r", &format!("l{i}"), None, 0);
        }
        let out = t.request(1, "r", "one-more", None, 0);
        assert!(
            matches!(&out[..], [Effect::Refuse { code: TOO_MANY, .. }]),
            "{out:?}"
        );
        assert_eq!(
            t.request(1, "again", "l0", None, 0),
            vec![grant(1, "again", "l0", 2)],
            "asking again for a held one is fine"
        );
        t.request(2, "w", "l0", None, 0);
        // The block reserved first is used up: the next token waits for a reservation.
        let token = 2 + PER_CONNECTION_MAX as u64;
        assert_eq!(
            t.revoke(1, "l0", 1),
            vec![Effect::Reserve {
                through: token + RESERVE_BLOCK
            }]
        );
        assert_eq!(
            t.reserved(token + RESERVE_BLOCK, 1),
            vec![grant(2, "w", "l0", token)]
        );
        assert_eq!(t.revoke(1, "l0", 1), vec![], "not its lock any more");
    }

    #[test]
    fn a_full_queue_refuses() {
        let mut t = ready();
        t.request(0, "h", "x", None, 0);
        for conn in 1..=WAITERS_MAX as u64 {
            assert_eq!(t.request(conn, "w", "x", None, 0), vec![]);
        }
        let out = t.request(9_999, "w", "x", None, 0);
        assert!(matches!(&out[..], [Effect::Refuse { code: TOO_MANY, .. }]));
    }
}
