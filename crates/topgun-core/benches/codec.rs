//! Wire codec throughput: decode and encode of the two hottest frames.
//!
//! `cargo bench -p topgun-core --bench codec` — results in `docs/benchmarks.md`.

// Bench code: a panic is a failure; casts apply to small loop indices.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    missing_docs
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use topgun_core::protocol::enums::ServerEventType;
use topgun_core::protocol::messages::{ClientOp, OpBatch, ServerEvent};
use topgun_core::protocol::{Field, Limits, Message, Path, Reader};
use topgun_core::{LwwRecord, NodeId, Timestamp, Value, ValueMap};

/// The server binary's allocator: decoding allocates per value, so the figure depends on it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const OPS_PER_BATCH: usize = 10;

/// A record value shaped like a typical document: a handful of scalar fields.
fn document(i: usize) -> Value {
    let fields: ValueMap = [
        ("title", Value::from(format!("Buy milk #{i}"))),
        ("done", Value::Bool(i.is_multiple_of(2))),
        ("priority", Value::Int(i as i64 % 5)),
        ("score", Value::Float(0.5 + i as f64)),
        ("owner", Value::from("5f0c7a2e-9a1b-4c3d-8e2f-0123456789ab")),
    ]
    .into_iter()
    .collect();
    Value::Map(fields)
}

fn timestamp(i: usize) -> Timestamp {
    Timestamp::new(
        1_700_000_000_000 + i as u64,
        0,
        NodeId::new("5f0c7a2e-9a1b-4c3d-8e2f-0123456789ab").unwrap(),
    )
}

/// `OP_BATCH` of 10 LWW puts of `value(i)`.
fn op_batch(value: fn(usize) -> Value) -> Message {
    let ops = (0..OPS_PER_BATCH)
        .map(|i| ClientOp {
            id: Some(i.to_string().into()),
            map_name: "todos".into(),
            key: format!("todo:{i:06}").into(),
            op_type: Some("PUT".into()),
            record: Field::Value(LwwRecord::new(value(i), timestamp(i), None)),
            or_record: Field::Absent,
            or_tag: Field::Absent,
            write_concern: None,
            timeout: None,
        })
        .collect();
    Message::OpBatch(OpBatch {
        ops,
        write_concern: None,
        timeout: None,
    })
}

fn server_event() -> Message {
    Message::ServerEvent(ServerEvent {
        map_name: "todos".into(),
        event_type: ServerEventType::Put,
        key: "todo:000001".into(),
        record: Some(LwwRecord::new(document(1), timestamp(1), None)),
        or_record: None,
        or_tag: None,
        epoch: None,
    })
}

fn codec(c: &mut Criterion) {
    let limits = Limits::default();
    let batch = op_batch(document);
    let batch_bytes = batch.encode();
    let small_bytes = op_batch(|i| Value::from(format!("v{i}"))).encode();
    let event = server_event();
    let event_bytes = event.encode();

    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(OPS_PER_BATCH as u64));
    // Dropping the result is left out (`iter_with_large_drop`): a server moves decoded
    // values into its store rather than freeing them.
    g.bench_function("decode_op_batch_10_puts", |b| {
        b.iter_with_large_drop(|| Message::decode(black_box(&batch_bytes), &limits).unwrap());
    });
    // The same batch with a short string per record: the protocol's own per-op cost.
    g.bench_function("decode_op_batch_10_small_puts", |b| {
        b.iter_with_large_drop(|| Message::decode(black_box(&small_bytes), &limits).unwrap());
    });
    // The floor: walking and validating the same frame without building anything.
    g.bench_function("skip_op_batch_10_puts", |b| {
        b.iter(|| {
            let mut r = Reader::new(black_box(&batch_bytes), &limits).unwrap();
            r.skip(Path::Root).unwrap();
        });
    });
    g.bench_function("encode_op_batch_10_puts", |b| {
        b.iter(|| black_box(black_box(&batch).encode()));
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_server_event", |b| {
        b.iter_with_large_drop(|| Message::decode(black_box(&event_bytes), &limits).unwrap());
    });
    g.bench_function("encode_server_event", |b| {
        b.iter(|| black_box(black_box(&event).encode()));
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
