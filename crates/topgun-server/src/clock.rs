//! The clocks: the wall clock, read in one place so that every module (and test) agrees on
//! its unit, and the server's hybrid logical clock that stamps writes.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use topgun_core::{Hlc, Timestamp};

/// Milliseconds since the Unix epoch; 0 if the clock reads before it.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The server's hybrid logical clock, shared by everything that stamps: validating client
/// ops, the server's own writes (fencing marks, counters) and sync replies.
#[derive(Debug, Clone)]
pub struct ServerClock(Arc<Mutex<Hlc>>);

impl ServerClock {
    pub fn new(hlc: Hlc) -> Self {
        Self(Arc::new(Mutex::new(hlc)))
    }

    /// The clock, held for one batch's validation at most: never across an `.await`.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Hlc> {
        // The clock is valid after a panic elsewhere: every update is a few field writes.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The node id the clock stamps with.
    pub fn node_id(&self) -> topgun_core::NodeId {
        self.lock().node_id().clone()
    }

    /// A fresh timestamp, at `now_ms` or past the latest one issued.
    pub fn now(&self, now_ms: u64) -> Timestamp {
        self.lock().now(now_ms)
    }
}
