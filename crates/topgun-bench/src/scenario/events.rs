//! Picks the writes out of event frames without building messages: a subscriber of `fanout`
//! needs only each event's map, key and integer value, and a thousand of them share this
//! process with the server under test, so the load generator must stay cheap. Frames are
//! still walked whole within the decode limits, so a malformed one is an error.

use topgun_core::protocol::{DecodeError, Limits, Number, Path, Reader};

/// One write an event reported: its key and, when it is an integer (or a map with an
/// integer `sentAt`, as the `query` scenario writes), its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen<'a> {
    pub map: &'a str,
    /// The live query that reported it (`QUERY_UPDATE`), else empty.
    pub query: &'a str,
    pub key: &'a str,
    pub value: Option<i64>,
}

/// Calls `each` for every write a `SERVER_EVENT`, `SERVER_BATCH_EVENT` or `QUERY_UPDATE`
/// frame carries (removals and other messages report nothing).
pub fn scan<'a>(
    frame: &'a [u8],
    limits: &Limits,
    mut each: impl FnMut(Seen<'a>),
) -> Result<(), DecodeError> {
    let mut r = Reader::new(frame, limits)?;
    let (mut kind, mut later) = (None, None);
    r.read_fields(Path::Root, |r, key| {
        match key {
            b"type" => kind = Some(r.read_str(Path::Root.key("type"))?),
            // With `type` already read (servers write it first) the payload is read in
            // place; otherwise it is skipped now and read once the type is known.
            b"payload" => {
                if let Some(kind) = kind {
                    payload(r, kind, &mut each)?;
                } else {
                    later = Some(r.position());
                    r.skip(Path::Root.key("payload"))?;
                }
            }
            _ => r.skip(Path::Root)?,
        }
        Ok(())
    })?;
    if let (Some(kind), Some(at)) = (kind, later) {
        r.seek(at);
        payload(&mut r, kind, &mut each)?;
    }
    Ok(())
}

/// The payload of a frame of type `kind`, at the reader's position.
fn payload<'a>(
    r: &mut Reader<'a>,
    kind: &str,
    each: &mut impl FnMut(Seen<'a>),
) -> Result<(), DecodeError> {
    let at = Path::Root.key("payload");
    match kind {
        "SERVER_EVENT" => event(r, at, each),
        "SERVER_BATCH_EVENT" => r.read_fields(at, |r, key| match key {
            b"events" => r.read_array(at, |r, _| event(r, at, each)),
            _ => r.skip(at),
        }),
        "QUERY_UPDATE" => {
            let (mut query, mut key, mut value, mut left) = ("", "", None, false);
            r.read_fields(at, |r, field| {
                match field {
                    b"queryId" => query = r.read_str(at)?,
                    b"key" => key = r.read_str(at)?,
                    b"value" => value = stamp(r, at)?,
                    b"changeType" => left = r.read_str(at)? == "LEAVE",
                    _ => r.skip(at)?,
                }
                Ok(())
            })?;
            // A row leaving the query's window reports no write.
            if !left {
                each(Seen {
                    map: "",
                    query,
                    key,
                    value,
                });
            }
            Ok(())
        }
        _ => r.skip(at),
    }
}

/// One `ServerEvent` map: reports it if it carries a record.
fn event<'a>(
    r: &mut Reader<'a>,
    at: Path<'_>,
    each: &mut impl FnMut(Seen<'a>),
) -> Result<(), DecodeError> {
    let (mut map, mut key, mut value, mut record) = ("", "", None, false);
    r.read_fields(at, |r, field| {
        match field {
            b"mapName" => map = r.read_str(at)?,
            b"key" => key = r.read_str(at)?,
            b"record" if !r.take_nil() => {
                record = true;
                r.read_fields(at, |r, field| match field {
                    b"value" => {
                        value = stamp(r, at)?;
                        Ok(())
                    }
                    _ => r.skip(at),
                })?;
            }
            _ => r.skip(at)?,
        }
        Ok(())
    })?;
    if record {
        each(Seen {
            map,
            query: "",
            key,
            value,
        });
    }
    Ok(())
}

/// An integer value, or a map's integer `sentAt`; `None` (skipped) for anything else.
fn stamp(r: &mut Reader<'_>, at: Path<'_>) -> Result<Option<i64>, DecodeError> {
    if r.next() != topgun_core::protocol::Next::Map {
        return integer(r, at);
    }
    let mut found = None;
    r.read_fields(at, |r, field| {
        if field == b"sentAt" {
            found = integer(r, at)?;
            Ok(())
        } else {
            r.skip(at)
        }
    })?;
    Ok(found)
}

/// An integer value, or `None` (skipped) for any other value.
fn integer(r: &mut Reader<'_>, at: Path<'_>) -> Result<Option<i64>, DecodeError> {
    if matches!(r.peek_tag(), Some(0x00..=0x7f | 0xcc..=0xd3)) {
        return Ok(match r.read_number(at, "integer")? {
            Number::Int(i) => Some(i),
            Number::UInt(_) | Number::Float(_) => None,
        });
    }
    r.skip(at)?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use topgun_core::protocol::Message;
    use topgun_core::protocol::enums::ServerEventType;
    use topgun_core::protocol::messages::{ServerBatchEvent, ServerEvent};
    use topgun_core::{LwwRecord, NodeId, Timestamp, Value};

    fn put(key: &str, value: Value) -> ServerEvent {
        let at = Timestamp::new(1, 0, NodeId::new("n").unwrap());
        ServerEvent {
            map_name: "m".into(),
            event_type: ServerEventType::Put,
            key: key.into(),
            record: Some(LwwRecord::new(value, at, None)),
            or_record: None,
            or_tag: None,
            epoch: None,
        }
    }

    fn seen(message: &Message) -> Vec<(String, String, Option<i64>)> {
        let frame = message.encode();
        let mut out = Vec::new();
        scan(&frame, &Limits::default(), |s| {
            out.push((s.map.to_owned(), s.key.to_owned(), s.value));
        })
        .unwrap();
        out
    }

    #[test]
    fn finds_every_write_of_single_and_batched_events() {
        let single = Message::ServerEvent(put("e1", Value::Int(7)));
        assert_eq!(seen(&single), vec![("m".into(), "e1".into(), Some(7))]);
        let batch = Message::ServerBatchEvent(ServerBatchEvent {
            events: vec![
                put("e2", Value::Int(1 << 40)),
                put("x", Value::Str("text".into())),
                ServerEvent {
                    record: None,
                    event_type: ServerEventType::Remove,
                    ..put("gone", Value::Nil)
                },
            ],
        });
        assert_eq!(
            seen(&batch),
            vec![
                ("m".into(), "e2".into(), Some(1 << 40)),
                ("m".into(), "x".into(), None),
            ]
        );
        assert!(
            seen(&Message::Ping(topgun_core::protocol::messages::Ping {
                timestamp: 1
            }))
            .is_empty()
        );
    }

    #[test]
    fn a_payload_before_its_type_is_read_too() {
        // {payload: {events: [...]}, extra: 1, type: "SERVER_BATCH_EVENT"}, built by hand:
        // our encoder always writes `type` first.
        let events = Message::ServerBatchEvent(ServerBatchEvent {
            events: vec![put("a", Value::Int(1)), put("b", Value::Int(2))],
        })
        .encode();
        let limits = Limits::default();
        let mut r = Reader::new(&events, &limits).unwrap();
        let mut range = 0..0;
        r.read_fields(Path::Root, |r, key| {
            let start = r.position();
            r.skip(Path::Root)?;
            if key == b"payload" {
                range = start..r.position();
            }
            Ok(())
        })
        .unwrap();
        let mut w = topgun_core::protocol::Writer::new();
        w.map_header(3);
        w.str("payload");
        w.raw(&events[range]);
        w.str("extra");
        w.uint(1);
        w.str("type");
        w.str("SERVER_BATCH_EVENT");
        let mut out = Vec::new();
        scan(w.as_bytes(), &limits, |s| out.push((s.key, s.value))).unwrap();
        assert_eq!(out, vec![("a", Some(1)), ("b", Some(2))]);
    }

    #[test]
    fn query_updates_report_rows_entering_or_changing_but_not_leaving() {
        use topgun_core::protocol::enums::ChangeType;
        use topgun_core::protocol::messages::QueryUpdate;
        let update = |key: &str, change_type| {
            Message::QueryUpdate(QueryUpdate {
                query_id: "q".into(),
                key: key.into(),
                value: if change_type == ChangeType::Leave {
                    Value::Nil
                } else {
                    Value::Int(5)
                },
                change_type,
            })
        };
        assert_eq!(
            seen(&update("e1", ChangeType::Enter)),
            vec![(String::new(), "e1".into(), Some(5))]
        );
        assert_eq!(seen(&update("e1", ChangeType::Update)).len(), 1);
        assert!(seen(&update("e1", ChangeType::Leave)).is_empty());
    }

    #[test]
    fn malformed_frames_are_errors() {
        let mut frame = Message::ServerEvent(put("e1", Value::Int(7))).encode();
        frame.truncate(frame.len() - 3);
        assert!(scan(&frame, &Limits::default(), |_| {}).is_err());
    }
}
