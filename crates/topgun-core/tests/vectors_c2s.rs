//! Client→server frames exactly as the TS client encodes them (written by
//! `tools/protocol-vectors/generate.mjs` with msgpackr) must decode, and decode to what their
//! JSON twin says; the negative vectors must fail and name the offending field.
//!
//! Comparison: we re-encode what we decoded, parse it back generically and require that
//! every value we produce equals the JSON at the same path (numbers by value), and that every
//! JSON key we do not produce is one of the extras PROTOCOL.md says a server ignores.

// Test code: a panic is a test failure; numbers from the wire are compared exactly on
// purpose; `.sort` is a field path, not a file extension.
#![allow(
    clippy::unwrap_used,
    clippy::float_cmp,
    clippy::case_sensitive_file_extension_comparisons
)]

use std::fmt::Write as _;

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use topgun_core::protocol::http::HttpSyncRequest;
use topgun_core::protocol::{
    ErrorKind, Limits, Message, Raw, decode_standalone, encode_standalone, msgpack,
};

fn vectors(dir: &str) -> Vec<(String, Vec<u8>, Json)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(dir);
    let mut out: Vec<_> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "msgpack"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let json: Json =
                serde_json::from_str(&fs::read_to_string(p.with_extension("json")).unwrap())
                    .unwrap_or_else(|e| panic!("{name}.json: {e}"));
            (name, fs::read(&p).unwrap(), json)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Our bytes, parsed back into JSON (binaries as `{"$bin": hex}` like the vectors).
fn to_json(raw: &Raw<'_>) -> Json {
    match raw {
        Raw::Nil => Json::Null,
        Raw::Bool(b) => Json::Bool(*b),
        Raw::Int(i) => Json::from(*i),
        Raw::UInt(u) => Json::from(*u),
        Raw::Float(f) => Json::from(*f),
        Raw::Str(s) => Json::from(*s),
        Raw::Bin(b) => {
            let hex = b.iter().fold(String::new(), |mut s, x| {
                let _ = write!(s, "{x:02x}");
                s
            });
            serde_json::json!({ "$bin": hex })
        }
        Raw::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Raw::Map(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), to_json(v)))
                .collect(),
        ),
        Raw::Ext(..) => panic!("we never encode extension values"),
    }
}

fn numbers_equal(a: &Json, b: &Json) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y && a.as_i64().zip(b.as_i64()).is_none_or(|(i, j)| i == j),
        _ => false,
    }
}

/// Keys the TS client sends that the protocol defines as ignored (PROTOCOL.md §1.6, §4.3):
/// op-log extras on every op, an `AUTH_REQUIRED` reason, hashes on `SYNC_INIT`.
fn ignored_extra(path: &str, key: &str) -> bool {
    let in_op = path.contains("ops[") || path.contains("operations[");
    (in_op && matches!(key, "timestamp" | "synced") && !path.ends_with("record"))
        || (path.is_empty() && key == "reason")
        || (path.is_empty() && matches!(key, "rootHash" | "bucketHashes"))
}

/// Checks `ours` against the TS-side `json`; returns a description of each difference.
fn compare(ours: &Json, json: &Json, path: &str, diffs: &mut Vec<String>) {
    match (ours, json) {
        (Json::Object(o), Json::Object(j)) => {
            for (k, v) in o {
                let at = format!("{path}.{k}");
                match j.get(k) {
                    Some(jv) => compare(v, jv, &at, diffs),
                    // Both spellings of a counter state are written; the client sent one.
                    None if path.ends_with("state")
                        && matches!(k.as_str(), "p" | "n" | "positive" | "negative") => {}
                    // A record's `value: nil` stands for an absent value.
                    None if v.is_null() => {}
                    None => diffs.push(format!("{at}: we produce a key the client did not send")),
                }
            }
            for (k, jv) in j {
                if !o.contains_key(k)
                    && !jv.is_null()
                    && !ignored_extra(path.trim_start_matches('.'), k)
                {
                    diffs.push(format!(
                        "{path}.{k}: sent by the client but lost in decoding"
                    ));
                }
            }
        }
        // Record-form sort decodes to the array form, in key order.
        (Json::Array(o), Json::Object(j)) if path.ends_with(".sort") => {
            let as_array: Vec<Json> = j
                .iter()
                .map(|(field, dir)| serde_json::json!({"field": field, "direction": dir}))
                .collect();
            compare(&Json::Array(o.clone()), &Json::Array(as_array), path, diffs);
        }
        (Json::Array(o), Json::Array(j)) => {
            if o.len() == j.len() {
                for (i, (a, b)) in o.iter().zip(j).enumerate() {
                    compare(a, b, &format!("{path}[{i}]"), diffs);
                }
            } else {
                diffs.push(format!(
                    "{path}: {} items, the client sent {}",
                    o.len(),
                    j.len()
                ));
            }
        }
        (a, b) if a.is_number() || b.is_number() => {
            if !numbers_equal(a, b) {
                diffs.push(format!("{path}: {a} != {b}"));
            }
        }
        (a, b) => {
            if a != b {
                diffs.push(format!("{path}: {a} != {b}"));
            }
        }
    }
}

fn reencoded_json(bytes: &[u8]) -> Json {
    to_json(&msgpack::parse(bytes, &Limits::default()).unwrap())
}

#[test]
fn every_client_frame_decodes_to_its_json() {
    let all = vectors("c2s");
    assert!(
        all.len() >= 70,
        "expected the full generated set, found {}",
        all.len()
    );
    let mut seen_types = std::collections::BTreeSet::new();
    for (name, bytes, json) in &all {
        let ours = if name.starts_with("HTTP_SYNC_REQUEST") {
            let body: HttpSyncRequest = decode_standalone(bytes, &Limits::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            reencoded_json(&encode_standalone(&body))
        } else {
            let msg = Message::decode(bytes, &Limits::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            seen_types.insert(msg.type_name());
            // Decoding our own encoding gives the same message back.
            let again = Message::decode(&msg.encode(), &Limits::default()).unwrap();
            assert_eq!(again, msg, "{name}: encode→decode is not the identity");
            reencoded_json(&msg.encode())
        };
        let mut diffs = Vec::new();
        compare(&ours, json, "", &mut diffs);
        assert!(diffs.is_empty(), "{name}:\n  {}", diffs.join("\n  "));
    }
    // Every type a client sends (PROTOCOL.md §4.18) has at least one vector.
    let client_types = [
        "AUTH",
        "DEVICE_HELLO",
        "CLIENT_OP",
        "OP_BATCH",
        "BATCH",
        "SYNC_INIT",
        "MERKLE_REQ_BUCKET",
        "ORMAP_SYNC_INIT",
        "ORMAP_MERKLE_REQ_BUCKET",
        "ORMAP_DIFF_REQUEST",
        "ORMAP_PUSH_DIFF",
        "CLIENT_APPLY_ACK",
        "QUERY_SUB",
        "QUERY_UNSUB",
        "QUERY_SYNC_INIT",
        "TOPIC_SUB",
        "TOPIC_UNSUB",
        "TOPIC_PUB",
        "LOCK_REQUEST",
        "LOCK_RELEASE",
        "COUNTER_REQUEST",
        "COUNTER_SYNC",
        "PING",
        "PARTITION_MAP_REQUEST",
        "ENTRY_PROCESS",
        "ENTRY_PROCESS_BATCH",
        "REGISTER_RESOLVER",
        "UNREGISTER_RESOLVER",
        "LIST_RESOLVERS",
        "JOURNAL_READ",
        "JOURNAL_SUBSCRIBE",
        "JOURNAL_UNSUBSCRIBE",
        "SEARCH",
        "SEARCH_SUB",
        "SEARCH_UNSUB",
        "HYBRID_SEARCH",
        "HYBRID_SEARCH_SUB",
        "HYBRID_SEARCH_UNSUB",
        "VECTOR_SEARCH",
        "SQL_QUERY",
    ];
    let expected: std::collections::BTreeSet<&str> = client_types.into_iter().collect();
    assert_eq!(seen_types, expected);
}

#[test]
fn every_invalid_client_frame_is_refused_naming_its_field() {
    let all = vectors("c2s-invalid");
    assert!(all.len() >= 15);
    for (name, bytes, json) in &all {
        let expected_field = json["expectField"].as_str().unwrap();
        let err = match Message::decode(bytes, &Limits::default()) {
            Ok(msg) => panic!("{name}: decoded as {msg:?}, expected an error"),
            Err(e) => e,
        };
        if !expected_field.is_empty() {
            assert_eq!(err.field(), expected_field, "{name}: {err}");
        }
        // Frame-level failures name no field: pin what they are instead.
        let kind = err.kind();
        match name.as_str() {
            "DEPTH_300" => assert!(matches!(kind, ErrorKind::TooDeep { max: 256 }), "{err}"),
            "TRUNCATED" => assert_eq!(kind, &ErrorKind::Truncated, "{err}"),
            "NOT_A_MAP" => assert!(matches!(kind, ErrorKind::WrongType { .. }), "{err}"),
            "UNKNOWN_TYPE" => assert!(matches!(kind, ErrorKind::UnknownType(_)), "{err}"),
            "MISSING_TYPE" => assert_eq!(kind, &ErrorKind::MissingType, "{err}"),
            _ => {}
        }
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn the_vector_folders_exist_where_the_generator_writes_them() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    assert!(root.join("c2s").is_dir() && root.join("c2s-invalid").is_dir());
}
