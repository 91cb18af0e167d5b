//! Checks our JavaScript renderings (`String(number)`, the TS client's OR-Map `valueStr`)
//! against real V8: thousands of generated values are rendered by `node` and by us.
//!
//! Needs Node.js on the PATH (the test command installs the JS toolchain anyway); fails with
//! a clear message when it is missing rather than passing without checking anything.

// Test code: a panic is a test failure, and casts apply to small generated numbers.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss
)]

mod common;

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

use common::Rng;
use topgun_core::js::{hash_value_string, number_to_string};
use topgun_core::value::ExtTime;
use topgun_core::{Value, ValueMap};

/// Renders each tagged-JSON value in V8 with the TS client's formula, one line each.
const SCRIPT: &str = r"
const lines = require('fs').readFileSync(0, 'utf8').split('\n').filter(Boolean);
const revive = (v) => {
  if (Array.isArray(v)) return v.map(revive);
  if (v && typeof v === 'object') {
    if ('$f' in v) return Number(v.$f);
    if ('$bin' in v) return new Uint8Array(v.$bin);
    if ('$date' in v) return new Date(v.$date);
    const o = {};
    for (const [k, x] of v.$map) o[k] = revive(x);
    return o;
  }
  return v;
};
const valueStr = (v) => v === null ? 'null' : v === undefined ? 'undefined'
  : typeof v === 'object' ? JSON.stringify(v, Object.keys(v).sort()) : String(v);
for (const line of lines) process.stdout.write(JSON.stringify(valueStr(revive(JSON.parse(line)))) + '\n');
";

fn random_string(rng: &mut Rng) -> String {
    const POOL: [&str; 16] = [
        "a",
        "b",
        "0",
        "10",
        "2",
        "\"",
        "\\",
        "\n",
        "\u{1}",
        "é",
        "😀",
        "～",
        "length",
        "byteLength",
        "byteOffset",
        "buffer",
    ];
    (0..rng.below(4))
        .map(|_| POOL[rng.below(POOL.len())])
        .collect()
}

fn random_float(rng: &mut Rng) -> f64 {
    match rng.below(4) {
        0 => f64::from_bits(rng.next_u64()),
        1 => (rng.next_u64() % 2_000_000) as f64 / 1000.0 - 1000.0,
        2 => 10f64.powi(rng.below(60) as i32 - 30) * (rng.below(9) + 1) as f64,
        _ => [0.0, -0.0, f64::NAN, f64::INFINITY, 1e21, 1e-7, 5e-324][rng.below(7)],
    }
}

fn random_value(rng: &mut Rng, depth: usize) -> Value {
    let top = if depth == 0 { 9 } else { 6 };
    match rng.below(top) {
        0 => Value::Nil,
        1 => Value::Bool(rng.chance(50)),
        2 => Value::Int(rng.next_u64() as i64 >> rng.below(64)),
        3 => Value::Float(random_float(rng)),
        4 => Value::from(random_string(rng)),
        5 if rng.chance(50) => Value::UInt(u64::MAX - rng.below(1000) as u64),
        // Dates across the whole JavaScript range, including before 1970 and after 9999.
        5 => Value::Time(ExtTime::from_millis(
            (rng.next_u64() % 17_280_000_000_000_000) as i64 - 8_640_000_000_000_000,
        )),
        6 => Value::Bin((0..rng.below(12)).map(|_| rng.next_u64() as u8).collect()),
        7 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => Value::Map(
            (0..rng.below(5))
                .map(|_| (random_string(rng), random_value(rng, depth + 1)))
                .collect::<ValueMap>(),
        ),
    }
}

/// Tagged JSON that the script revives into the JS value the TS client would hold.
fn tagged(v: &Value, out: &mut String) {
    match v {
        Value::Nil => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => {
            // Ship the exact f64 as a string JS parses back to the same number.
            let f = v.as_f64().unwrap();
            let text = if f.is_nan() {
                "NaN".to_owned()
            } else {
                format!("{f:e}")
            };
            let text = text.replace("inf", "Infinity");
            write!(out, r#"{{"$f":"{text}"}}"#).unwrap();
        }
        Value::Str(s) => out.push_str(&json_string(s)),
        Value::Bin(b) => write!(out, r#"{{"$bin":{b:?}}}"#).unwrap(),
        Value::Time(t) => write!(out, r#"{{"$date":{}}}"#, t.js_millis().unwrap()).unwrap(),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                tagged(item, out);
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push_str(r#"{"$map":["#);
            for (i, (k, item)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write!(out, "[{},", json_string(k)).unwrap();
                tagged(item, out);
                out.push(']');
            }
            out.push_str("]}");
        }
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32).unwrap(),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Decodes the JSON string literal the script prints for each rendering.
fn parse_json_string(line: &str) -> String {
    let inner = &line[1..line.len() - 1];
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next().unwrap() {
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'u' => {
                let hex: String = (&mut chars).take(4).collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
            }
            other => out.push(other),
        }
    }
    out
}

fn render_in_v8(values: &[Value]) -> Vec<String> {
    let mut input = String::new();
    for v in values {
        tagged(v, &mut input);
        input.push('\n');
    }
    let mut child = Command::new("node")
        .arg("-e")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("this test needs Node.js (`node`) on the PATH: install Node 20 or newer");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "node failed");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(parse_json_string)
        .collect()
}

#[test]
fn value_strings_match_v8() {
    let mut rng = Rng::new(0x5EED);
    let values: Vec<Value> = (0..3_000).map(|_| random_value(&mut rng, 0)).collect();
    let from_v8 = render_in_v8(&values);
    assert_eq!(from_v8.len(), values.len());
    for (v, expected) in values.iter().zip(&from_v8) {
        assert_eq!(&hash_value_string(v), expected, "value {v:?}");
    }
}

#[test]
fn number_strings_match_v8() {
    let mut rng = Rng::new(0xF10A7);
    let floats: Vec<Value> = (0..5_000)
        .map(|_| Value::Float(random_float(&mut rng)))
        .collect();
    let from_v8 = render_in_v8(&floats);
    assert_eq!(from_v8.len(), floats.len());
    for (v, expected) in floats.iter().zip(&from_v8) {
        assert_eq!(&number_to_string(v.as_f64().unwrap()), expected, "{v:?}");
    }
}
