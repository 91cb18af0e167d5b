//! Connection-level abuse limits the driver applies around authentication: connections not
//! yet authenticated (in total and per IP address), failed `AUTH`s per IP address, and
//! authenticated connections per user. All are bounded tables behind std mutexes held for a
//! lookup, never across an await; time is an argument.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use crate::security::interceptor::Bucket;

/// Addresses tracked at once; beyond this, those whose buckets refilled are forgotten.
const ADDRESSES_MAX: usize = 100_000;

/// Failed authentications per IP address: `per_minute` may fail within a minute (refilling
/// steadily); once they are used up, the address's new connections are refused until one
/// has refilled. 0 turns the limit off.
#[derive(Debug)]
pub struct AuthFailures {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl AuthFailures {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            buckets: Mutex::default(),
        }
    }

    fn shape(&self) -> (f64, f64) {
        let burst = f64::from(self.per_minute);
        (burst / 60.0, burst)
    }

    /// `Err(ms to wait)` while the address may not try again.
    pub fn admits(&self, ip: IpAddr, now_ms: u64) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let (rate, burst) = self.shape();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(bucket) = buckets.get_mut(&ip) else {
            return Ok(());
        };
        // Probing costs nothing; a whole token must be there for another attempt.
        let mut probe = *bucket;
        probe.take(1.0, rate, burst, now_ms).map(drop)
    }

    /// Records a failed `AUTH` from `ip`.
    pub fn failed(&self, ip: IpAddr, now_ms: u64) {
        if self.per_minute == 0 {
            return;
        }
        let (rate, burst) = self.shape();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= ADDRESSES_MAX {
            buckets.retain(|_, b| !b.is_full(rate, burst, now_ms));
        }
        let bucket = buckets
            .entry(ip)
            .or_insert_with(|| Bucket::full(burst, now_ms));
        let _ = bucket.take(1.0, rate, burst, now_ms);
    }
}

/// Why a connection was refused before it could authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreAuthRefusal {
    /// `preauth_connections_max` connections are waiting to authenticate already.
    Connections,
    /// `preauth_connections_per_ip_max` of them come from this address.
    ConnectionsPerIp,
}

impl PreAuthRefusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Connections => "connections",
            Self::ConnectionsPerIp => "connections_per_ip",
        }
    }

    /// What the client is told.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Connections => {
                "too many connections are waiting to authenticate; retry in a moment"
            }
            Self::ConnectionsPerIp => {
                "too many connections from this address are waiting to authenticate; retry in a \
                 moment"
            }
        }
    }
}

/// Connections not yet authenticated: at most `max` in all and `per_ip_max` (0: no limit)
/// from one address. Every `admit` that succeeds is matched by one `leave`.
#[derive(Debug)]
pub struct Unauthenticated {
    max: usize,
    per_ip_max: usize,
    counts: Mutex<Waiting>,
}

/// Invariant: `total` is the sum of `by_ip` when addresses are counted, and no entry of
/// `by_ip` is 0; so `by_ip` never has more than `max` entries.
#[derive(Debug, Default)]
struct Waiting {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

impl Unauthenticated {
    pub fn new(max: usize, per_ip_max: usize) -> Self {
        Self {
            max,
            per_ip_max,
            counts: Mutex::default(),
        }
    }

    /// Counts a new connection from `ip` in, unless a bound is reached.
    pub fn admit(&self, ip: IpAddr) -> Result<(), PreAuthRefusal> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= self.max {
            return Err(PreAuthRefusal::Connections);
        }
        if self.per_ip_max > 0 {
            let from_ip = counts.by_ip.entry(ip).or_default();
            if *from_ip >= self.per_ip_max {
                return Err(PreAuthRefusal::ConnectionsPerIp);
            }
            *from_ip += 1;
        }
        counts.total += 1;
        Ok(())
    }

    /// Counts out a connection [`Unauthenticated::admit`] let in: it authenticated or closed.
    pub fn leave(&self, ip: IpAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        debug_assert!(counts.total > 0, "a leave without an admit");
        counts.total = counts.total.saturating_sub(1);
        if self.per_ip_max > 0
            && let Some(from_ip) = counts.by_ip.get_mut(&ip)
        {
            *from_ip -= 1;
            if *from_ip == 0 {
                counts.by_ip.remove(&ip);
            }
        }
        debug_assert!(counts.by_ip.len() <= counts.total.max(1));
    }

    /// Connections waiting to authenticate now.
    pub fn count(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

/// Authenticated connections per user; 0 turns the limit off.
#[derive(Debug)]
pub struct UserConnections {
    max: usize,
    counts: Mutex<HashMap<String, usize>>,
}

impl UserConnections {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            counts: Mutex::default(),
        }
    }

    /// Counts a connection of `user`; false (and not counted) if it already has the most.
    pub fn join(&self, user: &str) -> bool {
        if self.max == 0 {
            return true;
        }
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(user.to_owned()).or_default();
        if *count >= self.max {
            if *count == 0 {
                counts.remove(user);
            }
            return false;
        }
        *count += 1;
        true
    }

    pub fn leave(&self, user: &str) {
        if self.max == 0 {
            return;
        }
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(user) {
            *count -= 1;
            if *count == 0 {
                counts.remove(user);
            }
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_that_keeps_failing_waits_for_its_bucket() {
        let guard = AuthFailures::new(3);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(guard.admits(ip, 0), Ok(()));
            guard.failed(ip, 0);
        }
        assert_eq!(
            guard.admits(ip, 0),
            Err(20_000),
            "3 a minute: one every 20 s"
        );
        assert_eq!(
            guard.admits(other, 0),
            Ok(()),
            "other addresses are not affected"
        );
        assert_eq!(guard.admits(ip, 20_000), Ok(()));
        assert_eq!(AuthFailures::new(0).admits(ip, 0), Ok(()), "off");
    }

    #[test]
    fn connections_waiting_to_authenticate_are_bounded_in_all_and_per_address() {
        let waiting = Unauthenticated::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert_eq!(waiting.admit(a), Ok(()));
        assert_eq!(waiting.admit(a), Ok(()));
        assert_eq!(waiting.admit(a), Err(PreAuthRefusal::ConnectionsPerIp));
        assert_eq!(waiting.admit(b), Ok(()));
        assert_eq!(waiting.admit(b), Err(PreAuthRefusal::Connections));
        assert_eq!(waiting.count(), 3, "refusals are not counted");
        waiting.leave(a);
        assert_eq!(waiting.admit(b), Ok(()), "a freed place is taken");
        assert_eq!(waiting.admit(a), Err(PreAuthRefusal::Connections));
        for ip in [a, b, b] {
            waiting.leave(ip);
        }
        assert_eq!(waiting.count(), 0);
        assert!(
            waiting.counts.lock().unwrap().by_ip.is_empty(),
            "no empty entries"
        );
        let unlimited_per_ip = Unauthenticated::new(2, 0);
        assert_eq!(unlimited_per_ip.admit(a), Ok(()));
        assert_eq!(unlimited_per_ip.admit(a), Ok(()));
        assert_eq!(unlimited_per_ip.admit(b), Err(PreAuthRefusal::Connections));
    }

    #[test]
    fn a_user_holds_at_most_so_many_connections() {
        let users = UserConnections::new(2);
        assert!(users.join("alice") && users.join("alice"));
        assert!(!users.join("alice"));
        assert!(users.join("bob"));
        users.leave("alice");
        assert!(users.join("alice"));
        assert!(UserConnections::new(0).join("x"), "off");
    }
}
