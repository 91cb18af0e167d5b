//! Decodes one `OP_BATCH` frame many times: a fixed workload for instruction-count profiling
//! (`valgrind --tool=callgrind target/release/examples/decode_loop [--skip] [--small] [--event]`);
//! `--small` puts a short string in each record instead of a 5-field document, `--event`
//! decodes a `SERVER_EVENT` carrying one of the documents instead of the batch..

// Example code: a panic is a failure; casts apply to small loop indices.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    clippy::print_stdout,
    missing_docs
)]

use topgun_core::protocol::enums::ServerEventType;
use topgun_core::protocol::messages::{ClientOp, OpBatch, ServerEvent};
use topgun_core::protocol::{Field, Limits, Message, Path, Reader};
use topgun_core::{LwwRecord, NodeId, Timestamp, Value, ValueMap};

/// The server binary's allocator: decoding allocates per value, so the figure depends on it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn op(i: usize, small: bool) -> ClientOp {
    let document: ValueMap = [
        ("title", Value::from(format!("Buy milk #{i}"))),
        ("done", Value::Bool(i.is_multiple_of(2))),
        ("priority", Value::Int(i as i64 % 5)),
        ("score", Value::Float(0.5 + i as f64)),
        ("owner", Value::from("5f0c7a2e-9a1b-4c3d-8e2f-0123456789ab")),
    ]
    .into_iter()
    .collect();
    let node = NodeId::new("5f0c7a2e-9a1b-4c3d-8e2f-0123456789ab").unwrap();
    ClientOp {
        id: Some(i.to_string().into()),
        map_name: "todos".into(),
        key: format!("todo:{i:06}").into(),
        op_type: Some("PUT".into()),
        record: Field::Value(LwwRecord::new(
            if small {
                Value::from(format!("v{i}"))
            } else {
                Value::Map(document)
            },
            Timestamp::new(1_700_000_000_000 + i as u64, 0, node),
            None,
        )),
        or_record: Field::Absent,
        or_tag: Field::Absent,
        write_concern: None,
        timeout: None,
    }
}

fn main() {
    let small = std::env::args().any(|a| a == "--small");
    let mut batch = OpBatch {
        ops: (0..10).map(|i| op(i, small)).collect(),
        write_concern: None,
        timeout: None,
    };
    let frame = if std::env::args().any(|a| a == "--event") {
        let op = batch.ops.swap_remove(1);
        let Field::Value(record) = op.record else {
            unreachable!("every op above carries a record")
        };
        Message::ServerEvent(ServerEvent {
            map_name: op.map_name,
            event_type: ServerEventType::Put,
            key: op.key,
            record: Some(record),
            or_record: None,
            or_tag: None,
            epoch: None,
        })
        .encode()
    } else {
        Message::OpBatch(batch).encode()
    };
    let limits = Limits::default();
    if std::env::args().any(|a| a == "--skip") {
        for _ in 0..2_000 {
            let mut r = Reader::new(std::hint::black_box(&frame), &limits).unwrap();
            r.skip(Path::Root).unwrap();
        }
        return;
    }
    let decoded = (0..2_000)
        .filter(|_| Message::decode(std::hint::black_box(&frame), &limits).is_ok())
        .count();
    println!("decoded {decoded} frames of {} bytes", frame.len());
}
