//! Hybrid Logical Clock (PROTOCOL.md §2.1).
//!
//! A [`Timestamp`] is `(millis, counter, node_id)`, totally ordered in that order with node ids
//! compared bytewise. The [`Hlc`] never reads a clock: every call takes the caller's wall-clock
//! reading in milliseconds, so tests drive it with exact values.
//!
//! Invariant: the timestamps returned by one [`Hlc`] strictly increase, whatever the wall
//! clock does, and every timestamp returned after `update(remote)` is greater than `remote`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use thiserror::Error;

use crate::hash::Fnv1a;

/// The largest accepted physical time: JavaScript's `Number.MAX_SAFE_INTEGER`, beyond which
/// TS clients cannot represent milliseconds exactly (about year 287,396). Bounding time here
/// keeps every counter-overflow step (`millis + 1`) far from `u64::MAX`.
pub const MAX_MILLIS: u64 = (1 << 53) - 1;

/// Default maximum tolerated lead of a remote clock over ours, in milliseconds.
pub const MAX_DRIFT_MS_DEFAULT: u64 = 60_000;

/// Why a node id, a timestamp string or a remote timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HlcError {
    #[error("node id is empty")]
    EmptyNodeId,
    #[error("node id {0:?} contains ':', which the timestamp string form reserves")]
    NodeIdHasColon(String),
    #[error("timestamp string {0:?} is not `millis:counter:nodeId`")]
    MalformedTimestamp(String),
    /// The remote physical time is beyond [`MAX_MILLIS`]; the clock is left unchanged.
    #[error("remote timestamp millis {0} is beyond the largest supported time")]
    BeyondMaxMillis(u64),
    /// Only in strict mode; the clock is left unchanged.
    #[error(
        "remote timestamp is {drift_ms} ms ahead of the local wall clock (max {max_drift_ms} ms)"
    )]
    DriftExceeded { drift_ms: u64, max_drift_ms: u64 },
}

/// The id of a node or client that issues timestamps. Never empty, never contains `:`.
///
/// Cheap to clone: every timestamp a node issues shares one allocation.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

impl NodeId {
    pub fn new(id: &str) -> Result<Self, HlcError> {
        if id.is_empty() {
            return Err(HlcError::EmptyNodeId);
        }
        if id.contains(':') {
            return Err(HlcError::NodeIdHasColon(id.to_owned()));
        }
        Ok(Self(Arc::from(id)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for NodeId {
    type Err = HlcError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A point in hybrid logical time. Ordered by `millis`, then `counter`, then `node_id` bytewise.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Timestamp {
    /// Physical milliseconds since the Unix epoch.
    pub millis: u64,
    /// Logical counter within the same millisecond.
    pub counter: u32,
    /// Issuer; breaks ties between nodes.
    pub node_id: NodeId,
}

impl Timestamp {
    pub fn new(millis: u64, counter: u32, node_id: NodeId) -> Self {
        Self {
            millis,
            counter,
            node_id,
        }
    }

    /// Feeds `millis:counter:nodeId` into a hasher without building the string.
    pub(crate) fn hash_into(&self, h: &mut Fnv1a) {
        h.write_decimal(self.millis);
        h.write_unit(u16::from(b':'));
        h.write_decimal(u64::from(self.counter));
        h.write_unit(u16::from(b':'));
        h.write_str(self.node_id.as_str());
    }
}

impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> Ordering {
        self.millis
            .cmp(&other.millis)
            .then(self.counter.cmp(&other.counter))
            .then_with(|| self.node_id.as_str().cmp(other.node_id.as_str()))
    }
}

impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

/// The string form `millis:counter:nodeId`, used as OR-Map tags and inside hash inputs.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.millis, self.counter, self.node_id)
    }
}

impl FromStr for Timestamp {
    type Err = HlcError;

    /// Parses exactly three `:`-separated parts with decimal numbers and a valid node id.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || HlcError::MalformedTimestamp(s.to_owned());
        let mut parts = s.split(':');
        let (Some(millis), Some(counter), Some(node), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        let is_decimal = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !is_decimal(millis) || !is_decimal(counter) {
            return Err(malformed());
        }
        Ok(Self {
            millis: millis.parse().map_err(|_| malformed())?,
            counter: counter.parse().map_err(|_| malformed())?,
            node_id: NodeId::new(node).map_err(|_| malformed())?,
        })
    }
}

/// What [`Hlc::update`] observed about the remote clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drift {
    /// The remote timestamp is within the tolerated lead.
    Within,
    /// The remote clock leads ours by more than the maximum; accepted (non-strict mode) so
    /// the caller can report it.
    Exceeded { drift_ms: u64 },
}

/// A hybrid logical clock owned by one node.
#[derive(Debug, Clone)]
pub struct Hlc {
    node_id: NodeId,
    last_millis: u64,
    last_counter: u32,
    max_drift_ms: u64,
    /// Strict mode refuses remote timestamps beyond `max_drift_ms` instead of reporting them.
    strict: bool,
}

impl Hlc {
    /// A clock with the default maximum drift (60 s), in reporting (non-strict) mode.
    pub fn new(node_id: NodeId) -> Self {
        Self {
            node_id,
            last_millis: 0,
            last_counter: 0,
            max_drift_ms: MAX_DRIFT_MS_DEFAULT,
            strict: false,
        }
    }

    #[must_use]
    pub fn with_max_drift_ms(mut self, max_drift_ms: u64) -> Self {
        self.max_drift_ms = max_drift_ms;
        self
    }

    #[must_use]
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    /// The last issued or observed `(millis, counter)`.
    pub fn last(&self) -> (u64, u32) {
        (self.last_millis, self.last_counter)
    }

    /// A new timestamp for a local event: the wall clock if it moved past the last value,
    /// else the last millisecond with the counter incremented.
    pub fn now(&mut self, wall_ms: u64) -> Timestamp {
        let wall_ms = wall_ms.min(MAX_MILLIS);
        if wall_ms > self.last_millis {
            self.last_millis = wall_ms;
            self.last_counter = 0;
        } else {
            self.bump_counter(self.last_counter);
        }
        Timestamp::new(self.last_millis, self.last_counter, self.node_id.clone())
    }

    /// Advances the clock past a remote timestamp.
    ///
    /// New millis = max(last, wall, remote). The counter follows whichever of local and
    /// remote holds that maximum (both: the larger counter), plus one; 0 if the wall clock
    /// alone is ahead. In strict mode a remote clock leading ours by more than the maximum
    /// drift is refused and the clock is unchanged.
    pub fn update(&mut self, remote: &Timestamp, wall_ms: u64) -> Result<Drift, HlcError> {
        if remote.millis > MAX_MILLIS {
            return Err(HlcError::BeyondMaxMillis(remote.millis));
        }
        let wall_ms = wall_ms.min(MAX_MILLIS);
        let drift_ms = remote.millis.saturating_sub(wall_ms);
        let drift = if drift_ms > self.max_drift_ms {
            if self.strict {
                return Err(HlcError::DriftExceeded {
                    drift_ms,
                    max_drift_ms: self.max_drift_ms,
                });
            }
            Drift::Exceeded { drift_ms }
        } else {
            Drift::Within
        };

        let max_millis = self.last_millis.max(wall_ms).max(remote.millis);
        let local_holds = self.last_millis == max_millis;
        let remote_holds = remote.millis == max_millis;
        let base_counter = match (local_holds, remote_holds) {
            (true, true) => Some(self.last_counter.max(remote.counter)),
            (true, false) => Some(self.last_counter),
            (false, true) => Some(remote.counter),
            (false, false) => None,
        };
        self.last_millis = max_millis;
        match base_counter {
            Some(counter) => self.bump_counter(counter),
            None => self.last_counter = 0,
        }
        Ok(drift)
    }

    /// Sets the counter to `counter + 1`; on u32 overflow moves to the next millisecond.
    fn bump_counter(&mut self, counter: u32) {
        if let Some(next) = counter.checked_add(1) {
            self.last_counter = next;
        } else {
            self.last_millis += 1;
            self.last_counter = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeId {
        NodeId::new(id).unwrap()
    }

    fn ts(millis: u64, counter: u32, id: &str) -> Timestamp {
        Timestamp::new(millis, counter, node(id))
    }

    #[test]
    fn node_id_validation() {
        assert_eq!(NodeId::new(""), Err(HlcError::EmptyNodeId));
        assert_eq!(
            NodeId::new("a:b"),
            Err(HlcError::NodeIdHasColon("a:b".into()))
        );
        assert_eq!(node("n1").as_str(), "n1");
    }

    #[test]
    fn string_form_round_trips() {
        let t = ts(1_700_000_000_000, 1, "node-1");
        assert_eq!(t.to_string(), "1700000000000:1:node-1");
        assert_eq!("1700000000000:1:node-1".parse::<Timestamp>(), Ok(t));
    }

    #[test]
    fn string_form_rejects_malformed() {
        for bad in [
            "",
            "1:2",
            "1:2:",
            "1:2:a:b",
            "x:2:a",
            "1:-2:a",
            "+1:2:a",
            "1::a",
            "1:4294967296:a",
            "18446744073709551616:0:a",
        ] {
            assert!(
                matches!(
                    bad.parse::<Timestamp>(),
                    Err(HlcError::MalformedTimestamp(_))
                ),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn ordering_is_millis_counter_node_bytewise() {
        assert!(ts(2, 0, "a") > ts(1, 9, "z"));
        assert!(ts(1, 2, "a") > ts(1, 1, "z"));
        assert!(ts(1, 1, "b") > ts(1, 1, "a"));
        // Bytewise: uppercase sorts before lowercase (localeCompare would disagree).
        assert!(ts(1, 1, "Z") < ts(1, 1, "a"));
        assert_eq!(ts(1, 1, "a").cmp(&ts(1, 1, "a")), Ordering::Equal);
    }

    #[test]
    fn now_follows_wall_clock_then_counts() {
        let mut hlc = Hlc::new(node("n1"));
        assert_eq!(hlc.now(100), ts(100, 0, "n1"));
        assert_eq!(hlc.now(100), ts(100, 1, "n1"));
        // The wall clock going backwards does not move time backwards.
        assert_eq!(hlc.now(50), ts(100, 2, "n1"));
        assert_eq!(hlc.now(101), ts(101, 0, "n1"));
    }

    #[test]
    fn counter_overflow_bumps_millis() {
        let mut hlc = Hlc::new(node("n1"));
        hlc.update(&ts(100, u32::MAX - 1, "r"), 0).unwrap();
        assert_eq!(hlc.last(), (100, u32::MAX));
        assert_eq!(hlc.now(0), ts(101, 0, "n1"));
        let mut hlc = Hlc::new(node("n1"));
        hlc.update(&ts(100, u32::MAX, "r"), 0).unwrap();
        assert_eq!(hlc.last(), (101, 0));
    }

    #[test]
    fn update_rules() {
        // Wall clock strictly ahead of both: counter 0.
        let mut hlc = Hlc::new(node("n1"));
        hlc.now(100);
        hlc.update(&ts(90, 7, "r"), 200).unwrap();
        assert_eq!(hlc.last(), (200, 0));

        // Remote alone holds the max: remote counter + 1.
        let mut hlc = Hlc::new(node("n1"));
        hlc.now(100);
        hlc.update(&ts(150, 7, "r"), 120).unwrap();
        assert_eq!(hlc.last(), (150, 8));

        // Local alone holds the max: local counter + 1.
        let mut hlc = Hlc::new(node("n1"));
        hlc.now(100);
        hlc.now(100);
        hlc.update(&ts(90, 7, "r"), 50).unwrap();
        assert_eq!(hlc.last(), (100, 2));

        // Both hold the max: larger counter + 1.
        let mut hlc = Hlc::new(node("n1"));
        hlc.now(100);
        hlc.update(&ts(100, 5, "r"), 100).unwrap();
        assert_eq!(hlc.last(), (100, 6));

        // Wall clock equal to local max is not "strictly ahead": local counter + 1.
        let mut hlc = Hlc::new(node("n1"));
        hlc.now(100);
        hlc.update(&ts(10, 0, "r"), 100).unwrap();
        assert_eq!(hlc.last(), (100, 1));
    }

    #[test]
    fn time_beyond_the_supported_range_is_refused_without_overflow() {
        let mut hlc = Hlc::new(node("n1"));
        assert_eq!(
            hlc.update(&ts(u64::MAX, u32::MAX, "r"), 0),
            Err(HlcError::BeyondMaxMillis(u64::MAX))
        );
        assert_eq!(hlc.last(), (0, 0), "a refused update changes nothing");
        hlc.update(&ts(MAX_MILLIS, u32::MAX, "r"), 0).unwrap();
        assert_eq!(hlc.last(), (MAX_MILLIS + 1, 0));
        let next = hlc.now(u64::MAX);
        assert!(next > ts(MAX_MILLIS, u32::MAX, "r"));
    }

    #[test]
    fn drift_is_reported_by_default_and_refused_in_strict_mode() {
        let remote = ts(200_000, 0, "r");
        let mut lenient = Hlc::new(node("n1"));
        assert_eq!(
            lenient.update(&remote, 100_000),
            Ok(Drift::Exceeded { drift_ms: 100_000 })
        );
        assert_eq!(lenient.last(), (200_000, 1));

        let mut strict = Hlc::new(node("n1")).strict(true);
        strict.now(100_000);
        assert_eq!(
            strict.update(&remote, 100_000),
            Err(HlcError::DriftExceeded {
                drift_ms: 100_000,
                max_drift_ms: 60_000
            })
        );
        assert_eq!(
            strict.last(),
            (100_000, 0),
            "refused update changes nothing"
        );

        // Exactly at the limit is within.
        let mut edge = Hlc::new(node("n1")).with_max_drift_ms(10).strict(true);
        assert_eq!(edge.update(&ts(110, 0, "r"), 100), Ok(Drift::Within));
    }
}
