//! JavaScript renderings that hash formulas depend on.
//!
//! The TS client hashes OR-Map entries over `String(value)` and
//! `JSON.stringify(value, Object.keys(value).sort())` (PROTOCOL.md §3.6). To produce equal
//! Merkle roots we must render values exactly as a browser does, quirks included:
//!
//! * numbers follow ECMAScript `Number::toString` (shortest round-trip digits, exponent form
//!   below 1e-6 and from 1e21, `-0` as `0`); every integer is a JS number (an `f64`);
//! * a key list passed to `JSON.stringify` is an allow-list applied at **every** nesting level,
//!   and objects are written in the order of that list;
//! * `JSON.stringify` writes non-finite numbers as `null`;
//! * key lists are sorted by UTF-16 code units (JavaScript's default `sort`);
//! * binary values are `Uint8Array`s, i.e. objects whose keys are `"0"`, `"1"`, … (a browser
//!   has no `Buffer.prototype.toJSON`; Node's `Buffer` would render differently).

use std::cmp::Ordering;
use std::fmt::Write;

use crate::value::Value;

/// ECMAScript `Number::toString(x)` in radix 10.
pub fn number_to_string(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_owned();
    }
    if x == 0.0 {
        return "0".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    let mut out = String::new();
    if x < 0.0 {
        out.push('-');
    }
    let (digits, n) = shortest_digits(x.abs());
    write_js_decimal(&mut out, &digits, n);
    out
}

/// The shortest round-trip decimal digits `s` of a positive finite `x` and the exponent `n`
/// such that `x = 0.s × 10^n` (ECMAScript's `k` is `s.len()`).
fn shortest_digits(x: f64) -> (String, i32) {
    // Rust's `{:e}` prints the shortest digits that round-trip, e.g. `1.2345e-7`.
    let exp_form = format!("{x:e}");
    let (mantissa, exponent) = exp_form.split_once('e').unwrap_or((&exp_form, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    (digits, exponent + 1)
}

/// Lays out digits per ECMAScript `Number::toString` steps 6–10.
fn write_js_decimal(out: &mut String, digits: &str, n: i32) {
    let k = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    if k <= n && n <= 21 {
        out.push_str(digits);
        out.extend(std::iter::repeat_n(
            '0',
            usize::try_from(n - k).unwrap_or(0),
        ));
    } else if 0 < n && n <= 21 {
        let split = usize::try_from(n).unwrap_or(0);
        out.push_str(&digits[..split]);
        out.push('.');
        out.push_str(&digits[split..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', usize::try_from(-n).unwrap_or(0)));
        out.push_str(digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = n - 1;
        let _ = write!(out, "e{}{}", if e >= 0 { "+" } else { "-" }, e.abs());
    }
}

/// A number value as JavaScript sees it (every integer becomes an `f64`).
#[allow(clippy::cast_precision_loss)]
fn js_number(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// Compares strings as JavaScript's default `Array.prototype.sort` does: by UTF-16 code units.
pub fn cmp_utf16(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// `Object.keys(value).sort()` for a value the TS client treats as an object.
fn sorted_own_keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = match value {
        Value::Map(m) => m.keys().map(str::to_owned).collect(),
        Value::Array(a) => (0..a.len()).map(|i| i.to_string()).collect(),
        Value::Bin(b) => (0..b.len()).map(|i| i.to_string()).collect(),
        _ => Vec::new(),
    };
    keys.sort_by(|a, b| cmp_utf16(a, b));
    keys
}

/// The TS client's `valueStr` in the OR-Map entry hash: `null` → `"null"`, objects and arrays
/// → `JSON.stringify(value, Object.keys(value).sort())`, strings unquoted, numbers and
/// booleans via `String()`.
pub fn hash_value_string(value: &Value) -> String {
    match value {
        Value::Nil => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Str(s) => s.to_string(),
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => {
            number_to_string(js_number(value).unwrap_or(f64::NAN))
        }
        Value::Bin(_) | Value::Array(_) | Value::Map(_) => {
            let allow = sorted_own_keys(value);
            let mut out = String::new();
            write_json(&mut out, value, &allow);
            out
        }
    }
}

/// `JSON.stringify(value, allow)` where `allow` is sorted and acts as a property allow-list
/// at every level.
fn write_json(out: &mut String, value: &Value, allow: &[String]) {
    match value {
        Value::Nil => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => match js_number(value) {
            Some(f) if f.is_finite() => out.push_str(&number_to_string(f)),
            _ => out.push_str("null"),
        },
        Value::Str(s) => write_json_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item, allow);
            }
            out.push(']');
        }
        Value::Map(map) => {
            write_json_object(out, allow, |key| map.get(key).cloned(), allow);
        }
        Value::Bin(bytes) => {
            let byte_at = |key: &str| {
                index_of(key)
                    .and_then(|i| bytes.get(i))
                    .map(|b| Value::Int(i64::from(*b)))
            };
            write_json_object(out, allow, byte_at, allow);
        }
    }
}

/// Writes `{"k":v,…}` for the keys of `keys` (in order) that `lookup` finds.
fn write_json_object(
    out: &mut String,
    keys: &[String],
    lookup: impl Fn(&str) -> Option<Value>,
    allow: &[String],
) {
    out.push('{');
    let mut first = true;
    for key in keys {
        if let Some(v) = lookup(key) {
            if !first {
                out.push(',');
            }
            first = false;
            write_json_string(out, key);
            out.push(':');
            write_json(out, &v, allow);
        }
    }
    out.push('}');
}

/// The array index a property key denotes (`"0"`, `"17"`; not `"01"` or `"-1"`).
fn index_of(key: &str) -> Option<usize> {
    let canonical =
        key == "0" || (!key.starts_with('0') && key.bytes().all(|b| b.is_ascii_digit()));
    if canonical && !key.is_empty() {
        key.parse().ok()
    } else {
        None
    }
}

/// ECMAScript `QuoteJSONString` for a well-formed string.
fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::ValueMap;

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(entries.into_iter().collect::<ValueMap>())
    }

    /// Expected strings are what `String(x)` prints in V8.
    #[test]
    fn number_to_string_matches_ecmascript() {
        let cases: [(f64, &str); 20] = [
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-1.5, "-1.5"),
            (0.1, "0.1"),
            (100.0, "100"),
            (123.456, "123.456"),
            (0.000_001, "0.000001"),
            (0.000_000_5, "5e-7"),
            (1.23e-18, "1.23e-18"),
            (1e21, "1e+21"),
            (1.5e21, "1.5e+21"),
            (1e20, "100000000000000000000"),
            (123_456_789_012_345_680_000.0, "123456789012345680000"),
            (9_007_199_254_740_992.0, "9007199254740992"),
            (9_223_372_036_854_775_807.0, "9223372036854776000"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (x, expected) in cases {
            assert_eq!(number_to_string(x), expected, "String({x:e})");
        }
    }

    #[test]
    fn scalars_render_like_string() {
        assert_eq!(hash_value_string(&Value::Nil), "null");
        assert_eq!(hash_value_string(&Value::Bool(true)), "true");
        assert_eq!(hash_value_string(&Value::from("alice")), "alice");
        assert_eq!(hash_value_string(&Value::Int(-42)), "-42");
        assert_eq!(
            hash_value_string(&Value::UInt(u64::MAX)),
            "18446744073709552000"
        );
        assert_eq!(hash_value_string(&Value::Float(3.0)), "3");
    }

    /// The allow-list quirks of PROTOCOL.md §3.6.
    #[test]
    fn objects_use_top_level_keys_as_allow_list() {
        let nested = map(vec![
            ("b", Value::Int(1)),
            ("a", map(vec![("c", Value::Int(2)), ("a", Value::Int(3))])),
        ]);
        assert_eq!(hash_value_string(&nested), r#"{"a":{"a":3},"b":1}"#);
        let array = Value::from(vec![map(vec![("x", Value::Int(1))]), Value::Int(2)]);
        assert_eq!(hash_value_string(&array), "[{},2]");
        let array_keys = Value::from(vec![map(vec![("0", Value::Int(1))])]);
        assert_eq!(hash_value_string(&array_keys), r#"[{"0":1}]"#);
    }

    #[test]
    fn json_details() {
        let v = map(vec![
            ("s", Value::from("q\"\\\n\u{1}é😀")),
            ("n", Value::Float(f64::NAN)),
            ("f", Value::Float(1e21)),
            ("z", Value::Nil),
            ("t", Value::Bool(false)),
        ]);
        assert_eq!(
            hash_value_string(&v),
            r#"{"f":1e+21,"n":null,"s":"q\"\\\n\u0001é😀","t":false,"z":null}"#
        );
    }

    #[test]
    fn keys_sort_by_utf16_code_units() {
        // U+FF5E (one unit 0xFF5E) sorts after U+1F600 (surrogates 0xD83D…) in UTF-16 order,
        // but before it in code point / UTF-8 order.
        let v = map(vec![("～", Value::Int(1)), ("😀", Value::Int(2))]);
        assert_eq!(hash_value_string(&v), r#"{"😀":2,"～":1}"#);
    }

    #[test]
    fn binary_renders_as_uint8array_object() {
        let bytes: Vec<u8> = (0..11).collect();
        assert_eq!(
            hash_value_string(&Value::Bin(bytes)),
            r#"{"0":0,"1":1,"10":10,"2":2,"3":3,"4":4,"5":5,"6":6,"7":7,"8":8,"9":9}"#
        );
        assert_eq!(hash_value_string(&Value::Bin(vec![])), "{}");
        let nested = map(vec![("a", Value::Bin(vec![1, 2]))]);
        assert_eq!(hash_value_string(&nested), r#"{"a":{}}"#);
    }
}
