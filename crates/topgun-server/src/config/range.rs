//! A numeric key's valid values, and how they read in messages, `--help` and the README.

use super::error::ConfigError;

/// What a numeric key counts; values are shown in the largest unit that divides them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
    Millis,
    Micros,
}

/// The valid values of one numeric key: `min..=max`, and 0 as well where `zero` says what
/// 0 means. Every numeric key of the file has one, in [`NUMERIC_KEYS`](super::NUMERIC_KEYS);
/// `--help` and the README's table show them, and a test keeps the README true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRange {
    pub key: &'static str,
    pub min: u64,
    pub max: u64,
    pub unit: Unit,
    /// What 0 does, where 0 is allowed below `min` ("off", "no limit").
    pub zero: Option<&'static str>,
}

impl KeyRange {
    pub(super) const fn new(key: &'static str, min: u64, max: u64, unit: Unit) -> Self {
        Self {
            key,
            min,
            max,
            unit,
            zero: None,
        }
    }

    pub(super) const fn or_zero(mut self, meaning: &'static str) -> Self {
        self.zero = Some(meaning);
        self
    }

    /// `value` if it is in range, else an error naming the key and the range.
    pub fn check(&self, value: u64) -> Result<u64, ConfigError> {
        let zero_ok = value == 0 && self.zero.is_some();
        if zero_ok || (self.min..=self.max).contains(&value) {
            return Ok(value);
        }
        Err(ConfigError::OutOfRange {
            field: self.key,
            rule: self.describe(),
            value: value.to_string(),
        })
    }

    /// `"1 KiB..=64 MiB"`, or `"0 (off), or 1..=100000"`.
    pub fn describe(&self) -> String {
        let range = format!(
            "{}..={}",
            human(self.min, self.unit),
            human(self.max, self.unit)
        );
        match self.zero {
            Some(meaning) => format!("0 ({meaning}), or {range}"),
            None => range,
        }
    }
}

/// `value` in the largest unit that divides it exactly: `65536` bytes is `64 KiB`.
fn human(value: u64, unit: Unit) -> String {
    const KIB: u64 = 1024;
    let steps: &[(u64, &str)] = match unit {
        Unit::Count => &[],
        Unit::Bytes => &[
            (KIB.pow(4), "TiB"),
            (KIB.pow(3), "GiB"),
            (KIB.pow(2), "MiB"),
            (KIB, "KiB"),
        ],
        Unit::Millis => &[
            (86_400_000, "days"),
            (3_600_000, "h"),
            (60_000, "min"),
            (1_000, "s"),
        ],
        Unit::Micros => &[(1_000_000, "s"), (1_000, "ms")],
    };
    let base = match unit {
        Unit::Count => "",
        Unit::Bytes => " B",
        Unit::Millis => " ms",
        Unit::Micros => " µs",
    };
    match steps
        .iter()
        .find(|(size, _)| value >= *size && value.is_multiple_of(*size))
    {
        Some((size, "days")) if value == *size => "1 day".to_owned(),
        Some((size, name)) => format!("{} {name}", value / size),
        None => format!("{value}{base}"),
    }
}
