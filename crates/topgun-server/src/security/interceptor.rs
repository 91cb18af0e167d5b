//! Interceptors: hooks every connection and every client op passes through, in a configured
//! order (DESIGN §4.3). An interceptor may refuse a connection, transform or drop an op
//! before it is validated and applied, and observe ops once they are applied. Built-ins:
//! [`RateLimiter`] (token buckets per connection and per user) and [`ServerTimestamps`]
//! (the server's clock instead of the client's; off by default).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use topgun_core::Hlc;
use topgun_core::protocol::messages::ClientOp;
use topgun_core::protocol::wire::Field;

use crate::by_name;
use crate::connection::ConnId;
use crate::data::ops::Rejection;
use crate::error::code;

/// A connection as interceptors see it.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub id: ConnId,
    pub ip: Option<IpAddr>,
}

/// What an op is checked with.
#[derive(Debug)]
pub struct OpContext<'a> {
    pub conn: ConnId,
    /// The authenticated user, if any.
    pub user: Option<&'a str>,
    pub now_ms: u64,
    /// The server clock (held for the whole batch, so an interceptor may stamp with it).
    pub hlc: &'a mut Hlc,
}

/// An applied op, as reported after its batch is acknowledged.
#[derive(Debug, Clone)]
pub struct AppliedOp {
    pub conn: ConnId,
    pub map: String,
    pub key: String,
    pub kind: &'static str,
}

/// What `on_before_op` decides.
#[derive(Debug)]
pub enum Verdict {
    /// Go on with this op (possibly changed).
    Pass(Box<ClientOp>),
    /// Refuse it with `OP_REJECTED`; `retry` rejections are not acknowledged, so the client
    /// sends the op again later.
    Drop(Rejection),
}

/// A hook on connections and ops. Every method has a default that does nothing.
pub trait Interceptor: Send + Sync + std::fmt::Debug {
    /// May refuse a new connection (it is closed with the reason).
    fn on_connection(&self, _conn: &ConnInfo) -> Result<(), String> {
        Ok(())
    }

    fn on_disconnect(&self, _conn: &ConnInfo) {}

    fn on_before_op(&self, _ctx: &mut OpContext<'_>, op: Box<ClientOp>) -> Verdict {
        Verdict::Pass(op)
    }

    fn on_after_op(&self, _op: &AppliedOp) {}

    /// May refuse an `ORMAP_PUSH_DIFF` (OR-Map sync pushing `items` records and tombstones
    /// to `map`); the whole push is then refused with an `ERROR`. Pushed records are a
    /// replica's state, not ops: they can be refused, not changed.
    fn on_before_push(
        &self,
        _ctx: &mut OpContext<'_>,
        _map: &str,
        _items: usize,
    ) -> Result<(), Rejection> {
        Ok(())
    }

    /// May refuse an inbound `BATCH` frame of `items` messages before any is decoded
    /// (COMPAT §4.3); the frame is then answered with one `ERROR` and nothing in it is served.
    fn on_before_batch(&self, _who: &Caller<'_>, _items: usize) -> Result<(), Rejection> {
        Ok(())
    }
}

/// Who sends a frame, and when: what a frame-level hook knows before anything is decoded.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub conn: ConnId,
    pub user: Option<&'a str>,
    pub now_ms: u64,
}

/// The configured interceptors, run in order: the first to refuse or drop decides.
#[derive(Debug, Default, Clone)]
pub struct Pipeline {
    stages: Vec<Arc<dyn Interceptor>>,
}

impl Pipeline {
    pub fn new(stages: Vec<Arc<dyn Interceptor>>) -> Self {
        Self { stages }
    }

    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    pub fn on_connection(&self, conn: &ConnInfo) -> Result<(), String> {
        self.stages.iter().try_for_each(|s| s.on_connection(conn))
    }

    pub fn on_disconnect(&self, conn: &ConnInfo) {
        for stage in &self.stages {
            stage.on_disconnect(conn);
        }
    }

    pub fn on_before_op(&self, ctx: &mut OpContext<'_>, mut op: Box<ClientOp>) -> Verdict {
        for stage in &self.stages {
            match stage.on_before_op(ctx, op) {
                Verdict::Pass(next) => op = next,
                drop @ Verdict::Drop(_) => return drop,
            }
        }
        Verdict::Pass(op)
    }

    pub fn on_after_op(&self, op: &AppliedOp) {
        for stage in &self.stages {
            stage.on_after_op(op);
        }
    }

    pub fn on_before_push(
        &self,
        ctx: &mut OpContext<'_>,
        map: &str,
        items: usize,
    ) -> Result<(), Rejection> {
        self.stages
            .iter()
            .try_for_each(|s| s.on_before_push(ctx, map, items))
    }

    pub fn on_before_batch(&self, who: &Caller<'_>, items: usize) -> Result<(), Rejection> {
        self.stages
            .iter()
            .try_for_each(|s| s.on_before_batch(who, items))
    }
}

/// A token bucket: `rate` tokens a second, holding at most `burst`; sans I/O (time is an
/// argument).
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at_ms: u64,
}

impl Bucket {
    pub fn full(burst: f64, now_ms: u64) -> Self {
        Self {
            tokens: burst,
            at_ms: now_ms,
        }
    }

    fn refill(&mut self, rate: f64, burst: f64, now_ms: u64) {
        #[allow(clippy::cast_precision_loss)]
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// Takes `cost` tokens, or says how long until they are there (ms).
    pub fn take(&mut self, cost: f64, rate: f64, burst: f64, now_ms: u64) -> Result<(), u64> {
        self.refill(rate, burst, now_ms);
        if self.tokens >= cost {
            self.tokens -= cost;
            return Ok(());
        }
        let missing = cost - self.tokens;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let wait_ms = (missing / rate.max(f64::MIN_POSITIVE) * 1000.0).ceil() as u64;
        Err(wait_ms.max(1))
    }

    /// Whether the bucket is full by now (its owner has been idle long enough to forget).
    pub fn is_full(&mut self, rate: f64, burst: f64, now_ms: u64) -> bool {
        self.refill(rate, burst, now_ms);
        self.tokens >= burst
    }
}

/// Most per-user buckets kept; idle (full) ones are dropped when there are more.
const USER_BUCKETS_MAX: usize = 100_000;

/// Limits ops per second per connection and per user (each 0 = no limit), bursts of twice
/// the rate. An op over the limit is refused with code 429 and a retry hint, as a retryable
/// rejection: it is not acknowledged, so the client sends it (and what follows) again.
#[derive(Debug)]
pub struct RateLimiter {
    conn_rate: u32,
    user_rate: u32,
    conns: Mutex<HashMap<ConnId, Bucket>>,
    users: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(conn_rate: u32, user_rate: u32) -> Self {
        Self {
            conn_rate,
            user_rate,
            conns: Mutex::default(),
            users: Mutex::default(),
        }
    }

    fn limited(who: &str, wait_ms: u64) -> Rejection {
        Rejection {
            code: code::TOO_MANY,
            reason: format!("rate limit of {who} exceeded; retry in {wait_ms} ms"),
            retry: true,
        }
    }
}

impl Interceptor for RateLimiter {
    fn on_disconnect(&self, conn: &ConnInfo) {
        self.conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&conn.id);
    }

    fn on_before_op(&self, ctx: &mut OpContext<'_>, op: Box<ClientOp>) -> Verdict {
        match self.charge(&caller(ctx), Cost::Exact(1.0)) {
            Ok(()) => Verdict::Pass(op),
            Err(rejection) => Verdict::Drop(rejection),
        }
    }

    /// A push costs one token per record and tombstone.
    fn on_before_push(
        &self,
        ctx: &mut OpContext<'_>,
        _map: &str,
        items: usize,
    ) -> Result<(), Rejection> {
        #[allow(clippy::cast_precision_loss)]
        self.charge(&caller(ctx), Cost::Exact(items as f64))
    }

    /// A `BATCH` costs one token per item, at most a whole bucket: a frame larger than the
    /// burst waits for a full bucket instead of being refused for ever.
    fn on_before_batch(&self, who: &Caller<'_>, items: usize) -> Result<(), Rejection> {
        #[allow(clippy::cast_precision_loss)]
        self.charge(who, Cost::UpToBurst(items as f64))
    }
}

/// What a charge takes from a bucket.
#[derive(Debug, Clone, Copy)]
enum Cost {
    Exact(f64),
    /// This many tokens, or the bucket's burst if that is less.
    UpToBurst(f64),
}

impl Cost {
    fn tokens(self, burst: f64) -> f64 {
        match self {
            Self::Exact(cost) => cost,
            Self::UpToBurst(cost) => cost.min(burst),
        }
    }
}

fn caller<'a>(ctx: &'a OpContext<'_>) -> Caller<'a> {
    Caller {
        conn: ctx.conn,
        user: ctx.user,
        now_ms: ctx.now_ms,
    }
}

impl RateLimiter {
    /// Takes `cost` tokens from the connection's and the user's buckets.
    fn charge(&self, who: &Caller<'_>, cost: Cost) -> Result<(), Rejection> {
        let now = who.now_ms;
        if self.conn_rate > 0 {
            let (rate, burst) = (f64::from(self.conn_rate), 2.0 * f64::from(self.conn_rate));
            let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
            let bucket = conns
                .entry(who.conn)
                .or_insert_with(|| Bucket::full(burst, now));
            bucket
                .take(cost.tokens(burst), rate, burst, now)
                .map_err(|wait| Self::limited("this connection", wait))?;
        }
        if let (true, Some(user)) = (self.user_rate > 0, who.user) {
            let (rate, burst) = (f64::from(self.user_rate), 2.0 * f64::from(self.user_rate));
            let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
            if users.len() >= USER_BUCKETS_MAX {
                // Buckets that have refilled belong to idle users: a new bucket is the same.
                users.retain(|_, b| !b.is_full(rate, burst, now));
            }
            by_name::get_or_insert_with(&mut users, user, || Bucket::full(burst, now))
                .take(cost.tokens(burst), rate, burst, now)
                .map_err(|wait| Self::limited(&format!("user {user:?}"), wait))?;
        }
        Ok(())
    }
}

/// Stamps every LWW write and OR add with the server's clock instead of the client's.
///
/// The trade-off: conflicts are decided by arrival at the server, so clock-skewed clients
/// cannot win by running ahead — but an edit made offline loses to any edit that reaches
/// the server before it, however much later it was made, and the client's replica holds its
/// own timestamp until the next sync brings the server's (Merkle roots differ until then).
/// OR adds keep their tags, so removes still find them.
#[derive(Debug, Default)]
pub struct ServerTimestamps;

impl Interceptor for ServerTimestamps {
    fn on_before_op(&self, ctx: &mut OpContext<'_>, mut op: Box<ClientOp>) -> Verdict {
        if let Field::Value(record) = &mut op.record {
            record.timestamp = ctx.hlc.now(ctx.now_ms);
        }
        if let Field::Value(record) = &mut op.or_record {
            record.timestamp = ctx.hlc.now(ctx.now_ms);
        }
        Verdict::Pass(op)
    }
}

#[cfg(test)]
mod tests {
    use topgun_core::{LwwRecord, NodeId, Timestamp, Value};

    use super::*;

    fn op(map: &str) -> Box<ClientOp> {
        Box::new(ClientOp {
            id: Some("1".into()),
            map_name: map.into(),
            key: "k".into(),
            op_type: Some("PUT".into()),
            record: Field::Value(LwwRecord::new(
                Value::Int(1),
                Timestamp::new(5, 0, NodeId::new("client").unwrap()),
                None,
            )),
            or_record: Field::Absent,
            or_tag: Field::Absent,
            write_concern: None,
            timeout: None,
        })
    }

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_burst() {
        let mut b = Bucket::full(4.0, 0);
        for _ in 0..4 {
            b.take(1.0, 2.0, 4.0, 0).unwrap();
        }
        assert_eq!(
            b.take(1.0, 2.0, 4.0, 0),
            Err(500),
            "2 a second: one in 500 ms"
        );
        assert_eq!(b.take(1.0, 2.0, 4.0, 500), Ok(()));
        assert!(b.is_full(2.0, 4.0, 60_000));
        for _ in 0..4 {
            b.take(1.0, 2.0, 4.0, 60_000).unwrap();
        }
        assert!(
            b.take(1.0, 2.0, 4.0, 60_000).is_err(),
            "never more than the burst"
        );
    }

    #[test]
    fn the_rate_limiter_holds_back_connections_and_users_with_a_retry_hint() {
        let limiter = RateLimiter::new(2, 3);
        let mut hlc = Hlc::new(NodeId::new("server").unwrap());
        let mut verdicts = |conn: ConnId, user: &str, now_ms: u64| {
            let mut ctx = OpContext {
                conn,
                user: Some(user),
                now_ms,
                hlc: &mut hlc,
            };
            match limiter.on_before_op(&mut ctx, op("m")) {
                Verdict::Pass(_) => None,
                Verdict::Drop(r) => Some((r.code, r.retry, r.reason)),
            }
        };
        // Connection 1: a burst of 4, then refused.
        for _ in 0..4 {
            assert_eq!(verdicts(1, "alice", 0), None);
        }
        let (code, retry, why) = verdicts(1, "alice", 0).unwrap();
        assert_eq!((code, retry), (code::TOO_MANY, true));
        assert!(
            why.contains("this connection") && why.contains("retry in 500 ms"),
            "{why}"
        );
        // Alice's second connection has its own bucket but shares her user bucket (6).
        assert_eq!(verdicts(2, "alice", 0), None);
        assert_eq!(verdicts(2, "alice", 0), None);
        let (_, _, why) = verdicts(2, "alice", 0).unwrap();
        assert!(why.contains("user \"alice\""), "{why}");
        assert_eq!(verdicts(3, "bob", 0), None, "others are not held back");
    }

    #[test]
    fn server_timestamps_replace_the_clients() {
        let mut hlc = Hlc::new(NodeId::new("server").unwrap());
        let mut ctx = OpContext {
            conn: 1,
            user: None,
            now_ms: 1_000,
            hlc: &mut hlc,
        };
        let Verdict::Pass(op) = ServerTimestamps.on_before_op(&mut ctx, op("m")) else {
            panic!("passes")
        };
        let Field::Value(record) = &op.record else {
            panic!()
        };
        assert_eq!(record.timestamp.millis, 1_000);
        assert_eq!(record.timestamp.node_id.as_str(), "server");
    }

    #[test]
    fn the_pipeline_runs_in_order_and_stops_at_the_first_drop() {
        #[derive(Debug)]
        struct Rename(&'static str);
        impl Interceptor for Rename {
            fn on_before_op(&self, _: &mut OpContext<'_>, mut op: Box<ClientOp>) -> Verdict {
                op.map_name = format!("{}{}", op.map_name, self.0).into();
                Verdict::Pass(op)
            }
        }
        #[derive(Debug)]
        struct Refuse;
        impl Interceptor for Refuse {
            fn on_connection(&self, _: &ConnInfo) -> Result<(), String> {
                Err("no".into())
            }
            fn on_before_op(&self, _: &mut OpContext<'_>, _: Box<ClientOp>) -> Verdict {
                Verdict::Drop(Rejection {
                    code: code::FORBIDDEN,
                    reason: "no".into(),
                    retry: false,
                })
            }
        }
        let mut hlc = Hlc::new(NodeId::new("server").unwrap());
        let mut ctx = OpContext {
            conn: 1,
            user: None,
            now_ms: 0,
            hlc: &mut hlc,
        };
        let renames = Pipeline::new(vec![Arc::new(Rename("-a")), Arc::new(Rename("-b"))]);
        let Verdict::Pass(op) = renames.on_before_op(&mut ctx, op("m")) else {
            panic!()
        };
        assert_eq!(op.map_name, "m-a-b");
        let refuses = Pipeline::new(vec![Arc::new(Refuse), Arc::new(Rename("-a"))]);
        assert!(matches!(
            refuses.on_before_op(&mut ctx, op),
            Verdict::Drop(_)
        ));
        assert!(
            refuses
                .on_connection(&ConnInfo { id: 1, ip: None })
                .is_err()
        );
    }
}
