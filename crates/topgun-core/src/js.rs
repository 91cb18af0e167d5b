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

/// Compares strings as JavaScript's default `Array.prototype.sort` does: by UTF-16 code units.
pub fn cmp_utf16(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        // ASCII bytes are their own code units.
        return a.cmp(b);
    }
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
            number_to_string(value.as_f64().unwrap_or(f64::NAN))
        }
        Value::Bin(_) | Value::Array(_) | Value::Map(_) | Value::Time(_) => {
            let allow = sorted_own_keys(value);
            let mut out = String::new();
            write_json(&mut out, value, &allow);
            out
        }
    }
}

/// `JSON.stringify(value, allow)` where `allow` is sorted (UTF-16 order) and acts as a
/// property allow-list at every level. Borrows throughout: the cost is linear in the size of
/// the value plus a logarithmic allow-list lookup per object property.
fn write_json(out: &mut String, value: &Value, allow: &[String]) {
    match value {
        Value::Nil => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => {
            write_json_number(out, value.as_f64().unwrap_or(f64::NAN));
        }
        Value::Str(s) => write_json_string(out, s),
        // `Date.prototype.toJSON`: an ISO string, or null for an invalid date.
        Value::Time(t) => match t.js_millis() {
            Some(ms) => {
                out.push('"');
                write_iso_date(out, ms);
                out.push('"');
            }
            None => out.push_str("null"),
        },
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
            let mut props: Vec<(&str, Prop<'_>)> = map
                .iter()
                .filter(|(k, _)| is_allowed(allow, k))
                .map(|(k, v)| (k, Prop::Value(v)))
                .collect();
            write_json_object(out, &mut props, allow);
        }
        Value::Bin(bytes) => write_uint8array(out, bytes, allow),
    }
}

/// A property value of an object being written.
enum Prop<'v> {
    Value(&'v Value),
    Number(f64),
    /// A `Uint8Array`'s `buffer`: an `ArrayBuffer` of this many bytes.
    Buffer(usize),
}

fn is_allowed(allow: &[String], key: &str) -> bool {
    allow.binary_search_by(|a| cmp_utf16(a, key)).is_ok()
}

/// Writes `{"k":v,…}` in allow-list order (UTF-16 order of the keys).
fn write_json_object(out: &mut String, props: &mut [(&str, Prop<'_>)], allow: &[String]) {
    props.sort_by(|a, b| cmp_utf16(a.0, b.0));
    out.push('{');
    for (i, (key, prop)) in props.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(out, key);
        out.push(':');
        match prop {
            Prop::Value(v) => write_json(out, v, allow),
            Prop::Number(n) => write_json_number(out, *n),
            Prop::Buffer(len) => {
                let mut buffer = Vec::new();
                if is_allowed(allow, "byteLength") {
                    #[allow(clippy::cast_precision_loss)]
                    buffer.push(("byteLength", Prop::Number(*len as f64)));
                }
                write_json_object(out, &mut buffer, allow);
            }
        }
    }
    out.push('}');
}

/// A `Uint8Array` as an object: its indices and the prototype getters `length`,
/// `byteLength`, `byteOffset` and `buffer`, as far as the allow-list names them.
#[allow(clippy::cast_precision_loss)]
fn write_uint8array(out: &mut String, bytes: &[u8], allow: &[String]) {
    let len = bytes.len() as f64;
    let names: Vec<String> = (0..bytes.len()).map(|i| i.to_string()).collect();
    let mut props: Vec<(&str, Prop<'_>)> = names
        .iter()
        .zip(bytes)
        .filter(|(k, _)| is_allowed(allow, k))
        .map(|(k, b)| (k.as_str(), Prop::Number(f64::from(*b))))
        .collect();
    for (getter, prop) in [
        ("length", Prop::Number(len)),
        ("byteLength", Prop::Number(len)),
        ("byteOffset", Prop::Number(0.0)),
        ("buffer", Prop::Buffer(bytes.len())),
    ] {
        if is_allowed(allow, getter) {
            props.push((getter, prop));
        }
    }
    write_json_object(out, &mut props, allow);
}

fn write_json_number(out: &mut String, n: f64) {
    if n.is_finite() {
        out.push_str(&number_to_string(n));
    } else {
        out.push_str("null");
    }
}

/// `Date.prototype.toISOString` for a valid time value in milliseconds.
#[allow(clippy::cast_possible_truncation)]
fn write_iso_date(out: &mut String, ms: f64) {
    // |ms| <= 8.64e15, so the conversion is exact.
    let ms = ms as i64;
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    if (0..=9999).contains(&year) {
        let _ = write!(out, "{year:04}");
    } else {
        let _ = write!(out, "{}{:06}", if year < 0 { '-' } else { '+' }, year.abs());
    }
    let _ = write!(
        out,
        "-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    );
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
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
    fn uint8array_getters_pass_the_allow_list() {
        // V8: {"b":{"length":2},"length":1}
        let v = map(vec![
            ("length", Value::Int(1)),
            ("b", Value::Bin(vec![1, 2])),
        ]);
        assert_eq!(hash_value_string(&v), r#"{"b":{"length":2},"length":1}"#);
        let v = map(vec![
            ("byteLength", Value::Int(1)),
            ("byteOffset", Value::Int(2)),
            ("b", Value::Bin(vec![1, 2, 3])),
        ]);
        assert_eq!(
            hash_value_string(&v),
            r#"{"b":{"byteLength":3,"byteOffset":0},"byteLength":1,"byteOffset":2}"#
        );
        let v = map(vec![("buffer", Value::Int(1)), ("b", Value::Bin(vec![1]))]);
        assert_eq!(hash_value_string(&v), r#"{"b":{"buffer":{}},"buffer":1}"#);
    }

    #[test]
    fn dates_render_like_to_json() {
        use crate::value::ExtTime;
        let at = |ms| Value::Time(ExtTime::from_millis(ms));
        assert_eq!(
            hash_value_string(&at(1_700_000_000_123)),
            r#""2023-11-14T22:13:20.123Z""#
        );
        let v = map(vec![("a", at(-1))]);
        assert_eq!(hash_value_string(&v), r#"{"a":"1969-12-31T23:59:59.999Z"}"#);
        let v = map(vec![("a", at(253_402_300_800_000))]);
        assert_eq!(
            hash_value_string(&v),
            r#"{"a":"+010000-01-01T00:00:00.000Z"}"#
        );
        let invalid = Value::Time(crate::value::ExtTime {
            seconds: i64::MAX,
            nanos: 0,
        });
        assert_eq!(
            hash_value_string(&map(vec![("a", invalid)])),
            r#"{"a":null}"#
        );
    }

    /// Rendering cost is linear in the value, whatever its width or depth (a crafted value
    /// used to be cloned at every level and scanned against the whole key list).
    #[test]
    fn wide_and_deep_values_render_in_linear_time() {
        let wide: ValueMap = (0..20_000)
            .map(|i| {
                (
                    format!("k{i}"),
                    Value::from(vec![map(vec![("k1", Value::Int(i))]); 4]),
                )
            })
            .collect();
        let rendered = hash_value_string(&Value::Map(wide));
        assert!(rendered.len() > 20_000 * 4 * 8);
        let mut deep = Value::from("x".repeat(100_000));
        for _ in 0..200 {
            deep = map(vec![("a", deep)]);
        }
        assert!(hash_value_string(&deep).len() > 100_000);
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
