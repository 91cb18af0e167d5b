//! Runs the shared live-query filter vectors (`tests/vectors/predicates.json`): every case's
//! query, compiled from its MsgPack form as a server receives it, must select exactly the
//! records the file says, and every refused query must fail to compile.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value as Json;
use topgun_core::predicate::Filter;
use topgun_core::protocol::query::Query;
use topgun_core::protocol::{Limits, Path, Reader, Wire, Writer};
use topgun_core::value::{Value, ValueMap};

fn value(json: &Json) -> Value {
    match json {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) if !n.is_f64() => Value::Int(i),
            (_, Some(f)) => Value::Float(f),
            _ => unreachable!("JSON numbers are i64, u64 or f64"),
        },
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(items) => Value::Array(items.iter().map(value).collect()),
        Json::Object(fields) => Value::Map(
            fields
                .iter()
                .map(|(k, v)| (k.as_str(), value(v)))
                .collect::<ValueMap>(),
        ),
    }
}

/// The query as a server decodes it from a client's frame.
fn query(json: &Json) -> Query {
    let mut w = Writer::new();
    value(json).encode(&mut w);
    let bytes = w.into_bytes();
    let mut r = Reader::new(&bytes, &Limits::default()).unwrap();
    Query::decode(&mut r, Path::Root).unwrap()
}

fn vectors() -> Json {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/predicates.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn every_shared_case_selects_what_the_file_says() {
    let vectors = vectors();
    let mut failures = Vec::new();
    let cases = vectors["cases"].as_array().unwrap();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let record = value(&vectors["records"][case["record"].as_str().unwrap()]);
        let filter =
            Filter::new(&query(&case["query"])).unwrap_or_else(|e| panic!("{name}: refused: {e}"));
        let expected = case["expected"].as_bool().unwrap();
        if filter.matches(&record, None) != expected {
            failures.push(name);
        }
    }
    assert!(failures.is_empty(), "cases that disagree: {failures:?}");
    assert!(cases.len() >= 50);
}

#[test]
fn every_refused_query_is_refused_with_a_reason() {
    let vectors = vectors();
    for case in vectors["refused"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        match Filter::new(&query(&case["query"])) {
            Ok(_) => panic!("{name}: compiled"),
            Err(e) => assert!(!e.to_string().is_empty(), "{name}"),
        }
    }
}

#[test]
fn auth_references_read_the_callers_context() {
    let q = query(&serde_json::json!({
        "predicate": { "op": "eq", "attribute": "owner", "valueRef": "auth.userId" }
    }));
    let filter = Filter::new(&q).unwrap();
    let record = value(&serde_json::json!({ "owner": "u1" }));
    let me = value(&serde_json::json!({ "userId": "u1" }));
    let other = value(&serde_json::json!({ "userId": "u2" }));
    assert!(filter.matches(&record, Some(&me)));
    assert!(!filter.matches(&record, Some(&other)));
    assert!(!filter.matches(&record, None));
}
