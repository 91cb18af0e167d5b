//! A latency histogram with fixed buckets: recording is two relaxed atomic adds, so the hot
//! paths that time themselves (the log's syncs, the shards' batches) never lock or allocate.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the frame-handling latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 10] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.025, 0.1,
];

/// A latency histogram with fixed buckets, shared by whoever records into it and the
/// `/metrics` rendering.
#[derive(Debug)]
pub struct Histogram {
    /// Indexed like `LATENCY_BUCKETS`, then the `+Inf` bucket (non-cumulative here).
    buckets: Vec<AtomicU64>,
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..=LATENCY_BUCKETS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn record(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(nanos, Ordering::Relaxed);
    }

    pub(super) fn render(&self, out: &mut String, name: &str, help: &str) {
        self.render_as(out, &[(name, help)]);
    }

    /// Renders one reading of the histogram under each of `names` (name, help): the same
    /// counts under every name, even while it is being recorded into.
    pub(super) fn render_as(&self, out: &mut String, names: &[(&str, &str)]) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let buckets: Vec<u64> = self.buckets.iter().map(load).collect();
        #[allow(clippy::cast_precision_loss)]
        let sum = load(&self.sum_ns) as f64 / 1e9;
        for (name, help) in names {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            let mut cumulative = 0;
            for (le, count) in LATENCY_BUCKETS.iter().zip(&buckets) {
                cumulative += count;
                let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
            }
            cumulative += buckets.last().copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"+Inf\"}} {cumulative}\n{name}_sum {sum}\n{name}_count {cumulative}"
            );
        }
    }
}
