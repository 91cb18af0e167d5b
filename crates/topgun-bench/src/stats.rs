//! Latency histograms (HDR, microsecond resolution) and their summaries.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies from 1 µs to one hour, three significant digits.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid"))
    }
}

impl Latency {
    /// Records one latency; anything beyond an hour counts as an hour.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    pub fn add(&mut self, other: &Self) {
        // Both have the same bounds, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn summary(&self) -> Summary {
        let ms = |micros: u64| micros as f64 / 1000.0;
        let at = |q: f64| ms(self.0.value_at_quantile(q));
        Summary {
            count: self.0.len(),
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: ms(self.0.max()),
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
}
