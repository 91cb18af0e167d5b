//! Latency histograms (HDR, microsecond resolution) and their summaries.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies from 1 µs to one hour, three significant digits.
///
/// Recorded values wait in a short buffer and enter the histogram together. Its counts take
/// about 190 KB; the fanout scenario keeps one per subscriber (a thousand of them) and
/// records one event at a time into each in turn, so every direct record missed the cache:
/// `record_n_inner` was 14 % of the load generator's CPU. A burst of records lands on the
/// few counts a latency range uses, which stay cached.
#[derive(Debug, Clone)]
pub struct Latency {
    histogram: Histogram<u64>,
    /// Microseconds not yet in `histogram`; at most [`PENDING_MAX`].
    pending: Vec<u64>,
}

const PENDING_MAX: usize = 1024;

impl Default for Latency {
    fn default() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("static bounds are valid"),
            pending: Vec::new(),
        }
    }
}

impl Latency {
    /// Records one latency; anything beyond an hour counts as an hour.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.pending.push(micros.max(1));
        if self.pending.len() >= PENDING_MAX {
            self.flush();
        }
    }

    fn flush(&mut self) {
        for &micros in &self.pending {
            self.histogram.saturating_record(micros);
        }
        self.pending.clear();
    }

    pub fn add(&mut self, other: &Self) {
        // Both have the same bounds, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
        for &micros in &other.pending {
            self.histogram.saturating_record(micros);
        }
    }

    pub fn count(&self) -> u64 {
        self.histogram.len() + self.pending.len() as u64
    }

    pub fn summary(&self) -> Summary {
        let mut all = self.clone();
        all.flush();
        let h = &all.histogram;
        let ms = |micros: u64| micros as f64 / 1000.0;
        let at = |q: f64| ms(h.value_at_quantile(q));
        Summary {
            count: h.len(),
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: ms(h.max()),
        }
    }
}

/// Percentiles of a latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_what_was_recorded() {
        let mut a = Latency::default();
        for ms in 1..=100 {
            a.record(Duration::from_millis(ms));
        }
        let mut b = Latency::default();
        b.record(Duration::from_secs(2));
        a.add(&b);
        let s = a.summary();
        assert_eq!(s.count, 101);
        assert!((s.p50_ms - 51.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 100.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 2000.0).abs() < 2.0, "{s:?}");
    }

    #[test]
    fn buffered_and_flushed_values_both_count() {
        let mut a = Latency::default();
        // More than one buffer's worth, so some values are in the histogram and some wait.
        let n = PENDING_MAX as u64 * 2 + 10;
        for ms in 1..=n {
            a.record(Duration::from_millis(ms));
        }
        assert_eq!(a.count(), n);
        let mut total = Latency::default();
        total.add(&a);
        total.add(&a);
        let s = total.summary();
        assert_eq!(s.count, 2 * n);
        assert!((s.max_ms - n as f64).abs() < 2.0, "{s:?}");
        assert!((s.p50_ms - (n / 2) as f64).abs() < 2.0, "{s:?}");
    }
}
