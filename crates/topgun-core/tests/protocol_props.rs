//! Decoder robustness and codec identity:
//! * arbitrary bytes and mutated real client frames never panic the decoder (every outcome is
//!   `Ok` or a typed error);
//! * for generated messages, `decode(encode(m)) == m`.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use std::path::PathBuf;

use proptest::prelude::*;
use topgun_core::protocol::enums::{
    ChangeType, PredicateOp, ServerEventType, SortDirection, WriteConcern,
};
use topgun_core::protocol::messages::{
    ClientOp, LeafRecord, OpBatch, OrMapPushDiff, QueryResp, QueryResultRow, QuerySub, QueryUpdate,
    ServerEvent, SyncRespLeaf,
};
use topgun_core::protocol::query::{Aggregation, PredicateNode, Query, Sort, SortField};
use topgun_core::protocol::{Field, Limits, Message};
use topgun_core::value::CompactString;
use topgun_core::{LwwRecord, NodeId, OrMapEntry, OrRecord, Timestamp, Value, ValueMap};

fn client_frames() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/c2s");
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "msgpack"))
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        (i64::MAX as u64 + 1..=u64::MAX).prop_map(Value::UInt),
        any::<f64>().prop_map(Value::Float),
        ".{0,12}".prop_map(Value::from),
        prop::collection::vec(any::<u8>(), 0..16).prop_map(Value::Bin),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("[a-z]{0,6}", inner), 0..6)
                .prop_map(|entries| Value::Map(entries.into_iter().collect::<ValueMap>())),
        ]
    })
}

/// A value that is not nil (optional `any` fields encode `None` and nil alike).
fn arb_some_value() -> impl Strategy<Value = Value> {
    arb_value().prop_filter("not nil", |v| !v.is_nil())
}

fn arb_timestamp() -> impl Strategy<Value = Timestamp> {
    (any::<u64>(), any::<u32>(), "[a-zA-Z0-9-]{1,20}")
        .prop_map(|(m, c, n)| Timestamp::new(m, c, NodeId::new(&n).unwrap()))
}

fn arb_lww() -> impl Strategy<Value = LwwRecord> {
    (arb_value(), arb_timestamp(), proptest::option::of(1u64..))
        .prop_map(|(v, t, ttl)| LwwRecord::new(v, t, ttl))
}

fn arb_or_record() -> impl Strategy<Value = OrRecord> {
    (arb_value(), arb_timestamp(), proptest::option::of(1u64..)).prop_map(
        |(value, timestamp, ttl_ms)| OrRecord {
            value,
            tag: timestamp.to_string(),
            timestamp,
            ttl_ms,
        },
    )
}

fn arb_entry() -> impl Strategy<Value = OrMapEntry> {
    (
        ".{0,8}",
        prop::collection::vec(arb_or_record(), 0..3),
        prop::collection::vec(".{0,8}", 0..3),
    )
        .prop_map(|(key, records, tombstones)| OrMapEntry {
            key,
            records,
            tombstones,
        })
}

fn arb_field<T: std::fmt::Debug + Clone + 'static>(
    inner: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Field<T>> {
    prop_oneof![
        Just(Field::Absent),
        Just(Field::Null),
        inner.prop_map(Field::Value)
    ]
    .boxed()
}

fn arb_write_concern() -> impl Strategy<Value = Option<WriteConcern>> {
    proptest::option::of(prop::sample::select(WriteConcern::ALL))
}

fn arb_op() -> impl Strategy<Value = ClientOp> {
    (
        proptest::option::of("[0-9]{1,4}"),
        ".{0,8}",
        ".{0,8}",
        proptest::option::of(prop::sample::select(vec![
            "PUT",
            "REMOVE",
            "OR_ADD",
            "OR_REMOVE",
        ])),
        arb_field(arb_lww()),
        arb_field(arb_or_record()),
        arb_field(".{0,8}".prop_map(CompactString::from)),
        arb_write_concern(),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(
            |(id, map_name, key, op_type, record, or_record, or_tag, write_concern, timeout)| {
                ClientOp {
                    id: id.map(Into::into),
                    map_name: map_name.into(),
                    key: key.into(),
                    op_type: op_type.map(Into::into),
                    record,
                    or_record,
                    or_tag,
                    write_concern,
                    timeout,
                }
            },
        )
}

fn arb_predicate() -> impl Strategy<Value = PredicateNode> {
    let leaf = (
        prop::sample::select(PredicateOp::ALL),
        "[a-z.]{1,8}",
        arb_field(arb_some_value()),
    )
        .prop_map(|(op, attribute, value)| PredicateNode {
            value,
            ..PredicateNode::leaf(op, &attribute, Value::Nil)
        });
    leaf.prop_recursive(3, 24, 4, |inner| {
        (
            prop::sample::select(vec![PredicateOp::And, PredicateOp::Or, PredicateOp::Not]),
            prop::collection::vec(inner, 1..4),
        )
            .prop_map(|(op, children)| PredicateNode::branch(op, children))
    })
}

fn arb_query() -> impl Strategy<Value = Query> {
    (
        proptest::option::of(prop::collection::vec(("[a-z]{1,6}", arb_value()), 0..3)),
        proptest::option::of(arb_predicate()),
        proptest::option::of(prop::collection::vec(("[a-z]{1,6}", any::<bool>()), 1..3)),
        proptest::option::of(any::<u32>()),
        proptest::option::of(prop::collection::vec("[a-z]{1,6}", 1..3)),
    )
        .prop_map(|(where_, predicate, sort, limit, group_by)| Query {
            where_: where_.map(|w| w.into_iter().collect()),
            predicate,
            sort: sort.map(|s| {
                Sort(
                    s.into_iter()
                        .map(|(field, asc)| SortField {
                            field: field.into(),
                            direction: if asc {
                                SortDirection::Asc
                            } else {
                                SortDirection::Desc
                            },
                        })
                        .collect(),
                )
            }),
            limit,
            cursor: None,
            group_by: group_by.clone(),
            aggregations: group_by.map(|_| {
                vec![Aggregation {
                    func: topgun_core::protocol::enums::AggFunc::Count,
                    field: None,
                }]
            }),
            fields: None,
        })
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        arb_op().prop_map(Message::ClientOp),
        (
            prop::collection::vec(arb_op(), 0..4),
            arb_write_concern(),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(ops, write_concern, timeout)| Message::OpBatch(OpBatch {
                ops,
                write_concern,
                timeout
            })),
        (
            ".{0,8}",
            ".{0,8}",
            proptest::option::of(arb_lww()),
            proptest::option::of(arb_or_record())
        )
            .prop_map(|(map_name, key, record, or_record)| Message::ServerEvent(
                ServerEvent {
                    map_name: map_name.into(),
                    event_type: ServerEventType::Put,
                    key: key.into(),
                    record,
                    or_record,
                    or_tag: None,
                    epoch: None,
                }
            )),
        (
            ".{0,8}",
            ".{0,8}",
            arb_value(),
            prop::sample::select(ChangeType::ALL)
        )
            .prop_map(|(query_id, key, value, change_type)| Message::QueryUpdate(
                QueryUpdate {
                    query_id: query_id.into(),
                    key: key.into(),
                    value,
                    change_type
                }
            )),
        (
            ".{0,8}",
            prop::collection::vec((".{0,8}", arb_value()), 0..4),
            proptest::option::of(any::<bool>())
        )
            .prop_map(|(query_id, rows, has_more)| Message::QueryResp(QueryResp {
                query_id: query_id.into(),
                results: rows
                    .into_iter()
                    .map(|(key, value)| QueryResultRow {
                        key: key.into(),
                        value
                    })
                    .collect(),
                next_cursor: None,
                has_more,
                cursor_status: None,
                merkle_root_hash: None,
                error: None,
                code: None,
            })),
        (
            ".{0,8}",
            "[0-9a-f]{0,3}",
            prop::collection::vec((".{0,8}", arb_lww()), 0..4)
        )
            .prop_map(
                |(map_name, path, records)| Message::SyncRespLeaf(SyncRespLeaf {
                    map_name: map_name.into(),
                    path: path.into(),
                    records: records
                        .into_iter()
                        .map(|(key, record)| LeafRecord {
                            key: key.into(),
                            record
                        })
                        .collect(),
                })
            ),
        (".{0,8}", prop::collection::vec(arb_entry(), 0..3)).prop_map(|(map_name, entries)| {
            Message::OrMapPushDiff(OrMapPushDiff {
                map_name: map_name.into(),
                entries,
            })
        }),
        (
            ".{0,8}",
            ".{0,8}",
            arb_query(),
            proptest::option::of(prop::collection::vec("[a-z]{1,6}", 0..3))
        )
            .prop_map(
                |(query_id, map_name, query, fields)| Message::QuerySub(QuerySub {
                    query_id: query_id.into(),
                    map_name: map_name.into(),
                    query,
                    fields
                })
            ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encode_then_decode_is_the_identity(msg in arb_message()) {
        let bytes = msg.encode();
        let decoded = Message::decode(&bytes, &Limits::default());
        prop_assert_eq!(decoded.as_ref(), Ok(&msg));
        // Equality of values is canonical (3 == 3.0, key order ignored); the bytes must also
        // survive exactly: integer vs float, key order, string forms.
        prop_assert_eq!(decoded.unwrap().encode(), bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Message::decode(&bytes, &Limits::default());
    }

    #[test]
    fn mutated_client_frames_never_panic(
        pick in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8),
    ) {
        let frames = client_frames();
        let mut frame = frames[pick.index(frames.len())].clone();
        for (at, byte, kind) in edits {
            if frame.is_empty() {
                break;
            }
            let i = at.index(frame.len());
            match kind {
                0 => frame[i] = byte,
                1 => frame.truncate(i),
                2 => frame.insert(i, byte),
                _ => {
                    let tail: Vec<u8> = frame[i..].to_vec();
                    frame.extend_from_slice(&tail);
                }
            }
        }
        if let Err(e) = Message::decode(&frame, &Limits::default()) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}
