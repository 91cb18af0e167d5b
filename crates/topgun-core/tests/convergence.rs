//! Seeded multi-replica simulation: replicas with drifting wall clocks write to an LWW-Map,
//! an OR-Map and a PN-Counter and gossip every change over a network that reorders,
//! duplicates and drops messages while replicas go offline and come back.
//!
//! * `converges_when_every_message_is_eventually_delivered`: dropped messages are resent
//!   later; at the end all replicas hold identical state and identical Merkle roots.
//! * `merkle_anti_entropy_repairs_permanent_loss`: dropped messages are lost for good; the
//!   replicas then sync pairwise by walking their Merkle trees (`diff` + leaf exchange), and
//!   end with identical LWW state and identical visible OR state and roots.
//!
//! A failure names its seed; `TOPGUN_SEED=<n> cargo test -p topgun-core --test convergence`
//! replays it. After every step each replica's incremental Merkle roots are checked against
//! a rebuild from scratch.

// Test code: a panic is a test failure, and casts apply to small generated numbers.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss
)]

mod common;

use common::{Rng, seeds};
use topgun_core::{Hlc, LwwMap, LwwRecord, NodeId, OrMap, OrRecord, PnCounter, Timestamp, Value};

const REPLICAS: usize = 4;
const STEPS: usize = 400;
const KEYS: [&str; 8] = ["a", "b", "c", "d", "e", "alice", "bob", "carol"];

#[derive(Debug, Clone)]
enum Msg {
    Lww(String, LwwRecord),
    OrAdd(String, OrRecord),
    OrRemove(String, Vec<String>),
    Pn(PnCounter),
}

impl Msg {
    fn timestamp(&self) -> Option<&Timestamp> {
        match self {
            Self::Lww(_, r) => Some(&r.timestamp),
            Self::OrAdd(_, r) => Some(&r.timestamp),
            Self::OrRemove(..) | Self::Pn(_) => None,
        }
    }
}

#[derive(Debug)]
struct Replica {
    name: String,
    hlc: Hlc,
    wall_ms: u64,
    online: bool,
    lww: LwwMap,
    or: OrMap,
    pn: PnCounter,
}

impl Replica {
    fn new(i: usize) -> Self {
        let name = format!("r{i}");
        Self {
            hlc: Hlc::new(NodeId::new(&name).unwrap()),
            name,
            // Clocks start skewed by up to a few seconds.
            wall_ms: 1_700_000_000_000 + 1_000 * i as u64,
            online: true,
            lww: LwwMap::new(),
            or: OrMap::new(),
            pn: PnCounter::new(),
        }
    }

    /// Moves the wall clock by a random jump, sometimes backwards (NTP corrections).
    fn tick(&mut self, rng: &mut Rng) {
        let jump = rng.below(300) as u64;
        if rng.chance(15) {
            self.wall_ms = self.wall_ms.saturating_sub(jump);
        } else {
            self.wall_ms += jump;
        }
    }

    /// Performs a random local operation and returns the message announcing it.
    fn local_op(&mut self, rng: &mut Rng) -> Msg {
        self.tick(rng);
        let key = KEYS[rng.below(KEYS.len())];
        match rng.below(6) {
            0 | 1 => {
                let t = self.hlc.now(self.wall_ms);
                let value = Value::from(format!("{}-{}", self.name, rng.below(1000)));
                let record = self.lww.set(key, value, t, None).unwrap().clone();
                Msg::Lww(key.to_owned(), record)
            }
            2 => {
                let t = self.hlc.now(self.wall_ms);
                let record = self.lww.remove(key, t).unwrap().clone();
                Msg::Lww(key.to_owned(), record)
            }
            3 => {
                let t = self.hlc.now(self.wall_ms);
                let value = Value::from(format!("x{}", rng.below(3)));
                Msg::OrAdd(key.to_owned(), self.or.add(key, value, t, None).unwrap())
            }
            4 => {
                let victim = self.or.records(key).first().map(|r| r.value.clone());
                match victim.map(|v| self.or.remove(key, &v)) {
                    Some(tags) if !tags.is_empty() => Msg::OrRemove(key.to_owned(), tags),
                    _ => Msg::Pn(self.pn.clone()),
                }
            }
            _ => {
                let delta = rng.below(7) as f64 - 3.0;
                self.pn.add(&self.name, delta).unwrap();
                Msg::Pn(self.pn.clone())
            }
        }
    }

    fn receive(&mut self, msg: Msg) {
        if let Some(t) = msg.timestamp() {
            self.hlc.update(t, self.wall_ms).unwrap();
        }
        match msg {
            Msg::Lww(k, r) => {
                self.lww.merge(&k, r);
            }
            Msg::OrAdd(k, r) => {
                self.or.apply_record(&k, r);
            }
            Msg::OrRemove(k, tags) => {
                for tag in &tags {
                    self.or.apply_tombstone(&k, tag);
                }
            }
            Msg::Pn(c) => {
                self.pn.merge(&c).unwrap();
            }
        }
    }

    fn check_merkle(&self, seed: u64) {
        assert_eq!(
            self.lww.merkle().root(),
            self.lww.merkle().recomputed_root(),
            "seed {seed}: {} LWW root drifted from a rebuild",
            self.name
        );
        assert_eq!(
            self.or.merkle().root(),
            self.or.merkle().recomputed_root(),
            "seed {seed}: {} OR root drifted from a rebuild",
            self.name
        );
    }
}

/// The network: messages in flight (delivered in random order) and messages it dropped.
#[derive(Debug, Default)]
struct Net {
    in_flight: Vec<(usize, Msg)>,
    dropped: Vec<(usize, Msg)>,
}

impl Net {
    fn broadcast(&mut self, from: usize, msg: &Msg) {
        for to in (0..REPLICAS).filter(|&to| to != from) {
            self.in_flight.push((to, msg.clone()));
        }
    }

    /// Delivers (or duplicates, or drops) one random in-flight message; returns the replica
    /// it reached.
    fn step(&mut self, rng: &mut Rng, replicas: &mut [Replica]) -> Option<usize> {
        if self.in_flight.is_empty() {
            return None;
        }
        let (to, msg) = self.in_flight.swap_remove(rng.below(self.in_flight.len()));
        if !replicas[to].online || rng.chance(10) {
            self.dropped.push((to, msg));
            return None;
        }
        if rng.chance(10) {
            self.in_flight.push((to, msg.clone()));
        }
        replicas[to].receive(msg);
        Some(to)
    }

    fn drain(&mut self, rng: &mut Rng, replicas: &mut [Replica]) {
        while !self.in_flight.is_empty() {
            let (to, msg) = self.in_flight.swap_remove(rng.below(self.in_flight.len()));
            replicas[to].receive(msg);
        }
    }
}

/// Runs the random phase and returns the replicas and the network.
fn simulate(seed: u64) -> (Vec<Replica>, Net, Rng) {
    let mut rng = Rng::new(seed);
    let mut replicas: Vec<Replica> = (0..REPLICAS).map(Replica::new).collect();
    let mut net = Net::default();
    for _ in 0..STEPS {
        let changed = match rng.below(100) {
            0..40 => {
                let at = rng.below(REPLICAS);
                let msg = replicas[at].local_op(&mut rng);
                net.broadcast(at, &msg);
                Some(at)
            }
            40..88 => net.step(&mut rng, &mut replicas),
            88..94 => {
                let at = rng.below(REPLICAS);
                replicas[at].online = !replicas[at].online;
                None
            }
            _ => {
                if !net.dropped.is_empty() {
                    let resend = net.dropped.swap_remove(rng.below(net.dropped.len()));
                    net.in_flight.push(resend);
                }
                None
            }
        };
        if let Some(at) = changed {
            replicas[at].check_merkle(seed);
        }
    }
    for r in &mut replicas {
        r.online = true;
    }
    (replicas, net, rng)
}

fn sorted_lww(m: &LwwMap) -> Vec<(String, LwwRecord)> {
    let mut s: Vec<_> = m
        .records()
        .map(|(k, r)| (k.to_owned(), r.clone()))
        .collect();
    s.sort_by(|a, b| a.0.cmp(&b.0));
    s
}

/// Both replicas hold the same LWW records and the same LWW root.
fn assert_same_lww(a: &Replica, b: &Replica, who: &str) {
    assert_eq!(sorted_lww(&a.lww), sorted_lww(&b.lww), "{who}: LWW state");
    assert_eq!(
        a.lww.merkle().root(),
        b.lww.merkle().root(),
        "{who}: LWW root"
    );
}

fn sorted_or_records(m: &OrMap) -> Vec<(String, Vec<OrRecord>)> {
    let mut s: Vec<_> = m
        .keys()
        .map(|k| (k.to_owned(), m.records(k).to_vec()))
        .filter(|(_, rs)| !rs.is_empty())
        .collect();
    s.sort_by(|a, b| a.0.cmp(&b.0));
    s
}

#[test]
fn converges_when_every_message_is_eventually_delivered() {
    for seed in seeds(150) {
        let (mut replicas, mut net, mut rng) = simulate(seed);
        net.in_flight.append(&mut net.dropped);
        net.drain(&mut rng, &mut replicas);
        let first = &replicas[0];
        for other in &replicas[1..] {
            let who = format!("seed {seed}: {} vs {}", first.name, other.name);
            assert_same_lww(first, other, &who);
            let (a, b) = (&first.or, &other.or);
            let mut keys: Vec<&str> = a.keys().chain(b.keys()).collect();
            keys.sort_unstable();
            keys.dedup();
            for k in keys {
                assert_eq!(a.entry(k), b.entry(k), "{who}: OR entry {k}");
            }
            assert_eq!(a.merkle().root(), b.merkle().root(), "{who}: OR root");
            assert_eq!(first.pn, other.pn, "{who}: counter");
            assert_eq!(
                first.pn.value().to_bits(),
                other.pn.value().to_bits(),
                "{who}"
            );
        }
    }
}

/// One pull round: `to` fetches every leaf whose hash differs from `from`'s.
fn pull_lww(to: &mut LwwMap, from: &LwwMap) {
    for path in to.merkle().diff(from.merkle()) {
        let items: Vec<(String, LwwRecord)> = from
            .merkle()
            .items_in_bucket(&path)
            .unwrap()
            .map(|(k, r)| (k.to_owned(), r.clone()))
            .collect();
        for (k, r) in items {
            to.merge(&k, r);
        }
    }
}

fn pull_or(to: &mut OrMap, from: &OrMap) {
    for path in to.merkle().diff(from.merkle()) {
        let keys: Vec<String> = from
            .merkle()
            .keys_in_bucket(&path)
            .unwrap()
            .into_iter()
            .map(str::to_owned)
            .collect();
        for k in keys {
            if let Some(entry) = from.entry(&k) {
                to.merge_key(entry);
            }
        }
    }
}

#[test]
fn merkle_anti_entropy_repairs_permanent_loss() {
    for seed in seeds(150) {
        let (mut replicas, mut net, mut rng) = simulate(seed);
        net.dropped.clear();
        net.drain(&mut rng, &mut replicas);
        // Pairwise pull rounds until no tree differs; each round can only grow knowledge,
        // so REPLICAS rounds suffice.
        for _ in 0..REPLICAS {
            for i in 0..REPLICAS {
                for j in 0..REPLICAS {
                    if i != j {
                        let from_lww = replicas[j].lww.clone();
                        let from_or = replicas[j].or.clone();
                        pull_lww(&mut replicas[i].lww, &from_lww);
                        pull_or(&mut replicas[i].or, &from_or);
                    }
                }
            }
        }
        let first = &replicas[0];
        for other in &replicas[1..] {
            let who = format!("seed {seed}: {} vs {}", first.name, other.name);
            assert_same_lww(first, other, &who);
            // Tombstones are not hashed, so a replica that never held a removed record need
            // not learn its tombstone; the records each replica holds must agree.
            assert_eq!(
                sorted_or_records(&first.or),
                sorted_or_records(&other.or),
                "{who}: OR"
            );
            assert_eq!(
                first.or.merkle().root(),
                other.or.merkle().root(),
                "{who}: OR root"
            );
            other.check_merkle(seed);
        }
    }
}
