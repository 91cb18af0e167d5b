//! A scenario's figures: printed one per line for people, and as one JSON object on the
//! last line with `--json` so that scripts can read every figure.

use std::io::Write;

use serde_json::{Map, Value};

use crate::stats::Summary;

/// Figures in the order they were added.
#[derive(Debug, Clone)]
pub struct Report {
    scenario: &'static str,
    figures: Vec<(String, Value)>,
    /// Rows of a stepped scenario (`conns`), each an object.
    steps: Vec<Value>,
}

impl Report {
    pub fn new(scenario: &'static str) -> Self {
        Self {
            scenario,
            figures: Vec::new(),
            steps: Vec::new(),
        }
    }

    pub fn scenario(&self) -> &'static str {
        self.scenario
    }

    /// Adds (or replaces) one figure.
    pub fn set(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        let value = value.into();
        match self.figures.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.figures.push((name.to_owned(), value)),
        }
        self
    }

    /// Adds a latency summary as `<prefix>_p50_ms`, … `<prefix>_max_ms`.
    pub fn latency(&mut self, prefix: &str, summary: &Summary) -> &mut Self {
        self.set(&format!("{prefix}_count"), summary.count);
        for (suffix, value) in [
            ("p50_ms", summary.p50_ms),
            ("p90_ms", summary.p90_ms),
            ("p99_ms", summary.p99_ms),
            ("p999_ms", summary.p999_ms),
            ("max_ms", summary.max_ms),
        ] {
            self.set(&format!("{prefix}_{suffix}"), round3(value));
        }
        self
    }

    pub fn step(&mut self, row: Value) {
        self.steps.push(row);
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.figures.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn steps(&self) -> &[Value] {
        &self.steps
    }

    /// Every figure as one JSON object.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("scenario".into(), self.scenario.into());
        for (name, value) in &self.figures {
            map.insert(name.clone(), value.clone());
        }
        if !self.steps.is_empty() {
            map.insert("steps".into(), Value::Array(self.steps.clone()));
        }
        Value::Object(map)
    }

    /// Writes the figures one per line, then (with `json`) the JSON object as the last line.
    pub fn print(&self, out: &mut impl Write, json: bool) -> std::io::Result<()> {
        writeln!(out, "scenario: {}", self.scenario)?;
        for step in &self.steps {
            writeln!(out, "  step: {step}")?;
        }
        for (name, value) in &self.figures {
            writeln!(out, "  {name}: {value}")?;
        }
        if json {
            writeln!(out, "{}", self.to_json())?;
        }
        Ok(())
    }
}

/// Three decimals are plenty for milliseconds and rates, and keep the JSON readable.
pub fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_the_last_line_and_holds_every_figure() {
        let mut report = Report::new("write");
        report.set("acked_ops_per_sec", 1234.5).set("errors", 0);
        report.set("errors", 2);
        let mut out = Vec::new();
        report.print(&mut out, true).unwrap();
        let text = String::from_utf8(out).unwrap();
        let last = text.lines().last().unwrap();
        let json: Value = serde_json::from_str(last).unwrap();
        assert_eq!(json["scenario"], "write");
        assert_eq!(json["acked_ops_per_sec"], 1234.5);
        assert_eq!(json["errors"], 2);
        assert!(text.contains("  errors: 2\n"));
    }
}
