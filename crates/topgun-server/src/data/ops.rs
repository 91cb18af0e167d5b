//! From a client's `ClientOp` to a validated write, or a rejection that says why
//! (PROTOCOL.md §4.3 with the fixes of §9.3-§9.4).
//!
//! * Client timestamps and OR tags are kept verbatim: re-stamping would break the client's
//!   later removes (which name its own tags) and make arrival order beat the HLC.
//! * A remove keeps a tombstone record, so that it reaches other replicas through events
//!   and Merkle sync like any other write.
//! * The server clock advances past every accepted timestamp; a timestamp further ahead of
//!   the server's wall clock than the allowed drift is refused, since it would win every
//!   conflict on its key until real time caught up with it.

use topgun_core::protocol::messages::ClientOp;
use topgun_core::protocol::wire::Field;
use topgun_core::{Hlc, HlcError, LwwRecord, OrRecord, Timestamp};

use crate::error::code;

/// Map names with these prefixes belong to the server (PROTOCOL.md §4.19).
pub const RESERVED_PREFIXES: [&str; 2] = ["_topgun_", "__topgun_"];
/// Longest map name accepted, in bytes.
pub const MAP_NAME_MAX_BYTES: usize = 256;

/// One validated change to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// An LWW put; a record without a value is a remove (tombstone).
    Lww {
        key: String,
        record: LwwRecord,
    },
    OrAdd {
        key: String,
        record: OrRecord,
    },
    OrRemove {
        key: String,
        tag: String,
    },
}

impl Write {
    pub fn key(&self) -> &str {
        match self {
            Self::Lww { key, .. } | Self::OrAdd { key, .. } | Self::OrRemove { key, .. } => key,
        }
    }

    pub fn map_kind(&self) -> crate::storage::store::MapKind {
        match self {
            Self::Lww { .. } => crate::storage::store::MapKind::Lww,
            Self::OrAdd { .. } | Self::OrRemove { .. } => crate::storage::store::MapKind::Or,
        }
    }

    /// The name this op is counted under in metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Lww { record, .. } if record.is_tombstone() => "REMOVE",
            Self::Lww { .. } => "PUT",
            Self::OrAdd { .. } => "OR_ADD",
            Self::OrRemove { .. } => "OR_REMOVE",
        }
    }
}

/// An op that changes nothing, with the reason sent back in `OP_REJECTED`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: u32,
    pub reason: String,
    /// The op may succeed later unchanged (a timestamp ahead of the server clock will not
    /// be once time catches up): it is not acknowledged, so the client keeps and resends it.
    pub retry: bool,
}

fn bad(reason: impl Into<String>) -> Rejection {
    Rejection {
        code: code::BAD_REQUEST,
        reason: reason.into(),
        retry: false,
    }
}

/// What an op does, as access decisions see it before validation: whether it removes, and
/// the value it writes (`None` for removes, and for ops that will not validate).
pub fn intent(op: &ClientOp) -> (bool, Option<&topgun_core::Value>) {
    if let Field::Value(record) = &op.or_record {
        return (false, Some(&record.value));
    }
    if matches!(op.or_tag, Field::Value(_)) {
        return (true, None);
    }
    match &op.record {
        Field::Value(record)
            if !record.is_tombstone() && op.op_type.as_deref() != Some("REMOVE") =>
        {
            (false, Some(&record.value))
        }
        _ => (true, None),
    }
}

/// [`check_map_name`] as the `ERROR` a request naming the map is answered with.
pub fn check_map(map: &str) -> Result<(), Box<topgun_core::protocol::Message>> {
    check_map_name(map).map_err(|refused| crate::error::refusal(refused.code, refused.reason))
}

/// Refuses empty, overlong and reserved map names.
pub fn check_map_name(name: &str) -> Result<(), Rejection> {
    if name.is_empty() {
        return Err(bad("mapName must not be empty"));
    }
    if name.len() > MAP_NAME_MAX_BYTES {
        return Err(bad(format!(
            "mapName is {} bytes; at most {MAP_NAME_MAX_BYTES} are allowed",
            name.len()
        )));
    }
    if RESERVED_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Err(Rejection {
            code: code::FORBIDDEN,
            reason: format!("map {name:?} is reserved for the server"),
            retry: false,
        });
    }
    Ok(())
}

/// Validates `op` and advances `hlc` past its timestamp. `wall_ms` is the server's clock.
pub fn validate(op: ClientOp, hlc: &mut Hlc, wall_ms: u64) -> Result<Write, Rejection> {
    check_map_name(&op.map_name)?;
    let key = op.key.to_string();
    let write = match classify(op, key, hlc, wall_ms)? {
        Classified::Ready(write) => write,
        Classified::Stamped(write) => return Ok(write),
    };
    let ts = match &write {
        Write::Lww { record, .. } => Some(&record.timestamp),
        Write::OrAdd { record, .. } => Some(&record.timestamp),
        Write::OrRemove { .. } => None,
    };
    if let Some(ts) = ts {
        observe(hlc, ts, wall_ms)?;
    }
    Ok(write)
}

enum Classified {
    /// Carries a client timestamp still to be checked against the server clock.
    Ready(Write),
    /// Stamped by the server clock itself.
    Stamped(Write),
}

fn classify(
    op: ClientOp,
    key: String,
    hlc: &mut Hlc,
    wall_ms: u64,
) -> Result<Classified, Rejection> {
    let op_type = op.op_type.as_deref();
    if let Some(other) = op_type.filter(|t| !["PUT", "REMOVE", "OR_ADD", "OR_REMOVE"].contains(t)) {
        return Err(bad(format!(
            "opType {other:?} is not one of PUT, REMOVE, OR_ADD, OR_REMOVE"
        )));
    }
    let expect = |wanted: &[&str], what: &str| match op_type {
        Some(t) if !wanted.contains(&t) => Err(bad(format!("opType {t} cannot carry {what}"))),
        _ => Ok(()),
    };
    if let Field::Value(record) = op.or_record {
        expect(&["OR_ADD"], "an orRecord")?;
        if record.tag.is_empty() {
            return Err(bad("orRecord.tag must not be empty"));
        }
        check_ttl(record.ttl_ms)?;
        return Ok(Classified::Ready(Write::OrAdd { key, record }));
    }
    if let Field::Value(tag) = op.or_tag {
        expect(&["OR_REMOVE"], "an orTag without an orRecord")?;
        if tag.is_empty() {
            return Err(bad("orTag must not be empty"));
        }
        let tag = tag.to_string();
        return Ok(Classified::Ready(Write::OrRemove { key, tag }));
    }
    match op.record {
        Field::Value(record) => {
            expect(&["PUT", "REMOVE"], "a record")?;
            if op_type == Some("REMOVE") && !record.is_tombstone() {
                return Err(bad("a REMOVE record must have a nil value"));
            }
            check_ttl(record.ttl_ms)?;
            Ok(Classified::Ready(Write::Lww { key, record }))
        }
        // A remove that names no time of its own happens now, by the server's clock.
        Field::Null | Field::Absent if op.record.is_null() || op_type == Some("REMOVE") => {
            let record = LwwRecord::tombstone(hlc.now(wall_ms));
            Ok(Classified::Stamped(Write::Lww { key, record }))
        }
        _ => Err(bad("the op carries no record, orRecord or orTag")),
    }
}

fn check_ttl(ttl_ms: Option<u64>) -> Result<(), Rejection> {
    if ttl_ms == Some(0) {
        return Err(bad("ttlMs must be positive"));
    }
    Ok(())
}

/// Advances the server clock past a client timestamp, or refuses it.
fn observe(hlc: &mut Hlc, ts: &Timestamp, wall_ms: u64) -> Result<(), Rejection> {
    hlc.update(ts, wall_ms).map(drop).map_err(|e| match e {
        HlcError::DriftExceeded {
            drift_ms,
            max_drift_ms,
        } => Rejection {
            retry: true,
            ..bad(format!(
                "timestamp {ts} is {drift_ms} ms ahead of the server clock (at most \
                 {max_drift_ms} ms allowed); check the client's clock. The op is not \
                 acknowledged: it is accepted once the server clock reaches it"
            ))
        },
        other => bad(format!("timestamp {ts}: {other}")),
    })
}

/// The tombstones of a pushed OR entry worth keeping: those naming a tag added under this
/// key. The TS client attaches its whole map's tombstones to every entry it pushes; the
/// rest belong to other keys, which receive them in their own entries.
pub fn own_tombstones(
    tombstones: Vec<String>,
    known: impl Fn(&str) -> bool,
    pushed: &[OrRecord],
) -> Vec<String> {
    tombstones
        .into_iter()
        .filter(|t| known(t) || pushed.iter().any(|r| &r.tag == t))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use topgun_core::{NodeId, Value};

    const NOW: u64 = 1_700_000_000_000;

    fn hlc() -> Hlc {
        Hlc::new(NodeId::new("server").unwrap()).strict(true)
    }

    fn ts(millis: u64) -> Timestamp {
        Timestamp::new(millis, 0, NodeId::new("client").unwrap())
    }

    fn op(op_type: Option<&str>) -> ClientOp {
        ClientOp {
            id: Some("1".into()),
            map_name: "todos".into(),
            key: "k".into(),
            op_type: op_type.map(Into::into),
            record: Field::Absent,
            or_record: Field::Absent,
            or_tag: Field::Absent,
            write_concern: None,
            timeout: None,
        }
    }

    fn put(value: Value, millis: u64) -> ClientOp {
        ClientOp {
            record: Field::Value(LwwRecord::new(value, ts(millis), None)),
            ..op(Some("PUT"))
        }
    }

    #[test]
    fn puts_keep_the_client_timestamp_and_advance_the_clock() {
        let mut clock = hlc();
        let write = validate(put(Value::Int(1), NOW + 5), &mut clock, NOW).unwrap();
        let Write::Lww { record, .. } = &write else {
            panic!("{write:?}")
        };
        assert_eq!(record.timestamp, ts(NOW + 5));
        assert_eq!(write.kind(), "PUT");
        assert!(clock.now(NOW).millis >= NOW + 5);
    }

    #[test]
    fn removes_are_tombstones() {
        let mut clock = hlc();
        let remove = ClientOp {
            record: Field::Value(LwwRecord::tombstone(ts(NOW))),
            ..op(Some("REMOVE"))
        };
        assert_eq!(validate(remove, &mut clock, NOW).unwrap().kind(), "REMOVE");
        let null_record = ClientOp {
            record: Field::Null,
            ..op(None)
        };
        let Write::Lww { record, .. } = validate(null_record, &mut clock, NOW).unwrap() else {
            panic!()
        };
        assert!(record.is_tombstone());
        assert_eq!(record.timestamp.node_id.as_str(), "server");
    }

    #[test]
    fn or_ops_keep_their_tags() {
        let mut clock = hlc();
        let record = OrRecord {
            value: Value::Str("a".into()),
            timestamp: ts(NOW),
            tag: format!("{NOW}:0:client"),
            ttl_ms: None,
        };
        let add = ClientOp {
            or_record: Field::Value(record.clone()),
            ..op(Some("OR_ADD"))
        };
        assert_eq!(
            validate(add, &mut clock, NOW).unwrap(),
            Write::OrAdd {
                key: "k".into(),
                record
            }
        );
        let remove = ClientOp {
            or_tag: Field::Value("t".into()),
            or_record: Field::Null,
            ..op(Some("OR_REMOVE"))
        };
        assert_eq!(
            validate(remove, &mut clock, NOW).unwrap().kind(),
            "OR_REMOVE"
        );
    }

    #[test]
    fn refusals_say_why() {
        let mut clock = hlc();
        let cases: Vec<(ClientOp, &str)> = vec![
            (op(Some("PUT")), "carries no record"),
            (op(Some("MERGE")), "opType \"MERGE\""),
            (
                ClientOp {
                    map_name: "".into(),
                    ..put(Value::Nil, NOW)
                },
                "must not be empty",
            ),
            (
                ClientOp {
                    map_name: "_topgun_devices".into(),
                    ..put(Value::Nil, NOW)
                },
                "reserved",
            ),
            (
                ClientOp {
                    op_type: Some("REMOVE".into()),
                    ..put(Value::Int(1), NOW)
                },
                "nil value",
            ),
            (
                ClientOp {
                    op_type: Some("OR_ADD".into()),
                    ..put(Value::Int(1), NOW)
                },
                "cannot carry a record",
            ),
            (
                put(Value::Int(1), NOW + 61_000),
                "ahead of the server clock",
            ),
        ];
        for (op, why) in cases {
            let err = validate(op.clone(), &mut clock, NOW).unwrap_err();
            assert!(err.reason.contains(why), "{op:?}: {err:?}");
        }
        assert_eq!(clock.last(), (0, 0), "refused ops leave the clock alone");
    }

    #[test]
    fn pushed_tombstones_are_kept_only_under_their_own_key() {
        let pushed = [OrRecord {
            value: Value::Int(1),
            timestamp: ts(NOW),
            tag: "b".into(),
            ttl_ms: None,
        }];
        let kept = own_tombstones(
            vec!["a".into(), "b".into(), "elsewhere".into()],
            |t| t == "a",
            &pushed,
        );
        assert_eq!(kept, vec!["a".to_owned(), "b".to_owned()]);
    }
}
