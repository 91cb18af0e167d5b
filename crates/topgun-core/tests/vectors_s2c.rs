//! Server→client frames as we encode them must read, in msgpackr (the TS client's decoder),
//! as exactly the JavaScript objects the TS client expects: field names, numbers (never a
//! leftover `BigInt`), binaries, and absent keys rather than nulls.
//!
//! Each sample below pairs a message with its expected JavaScript shape, written by hand from
//! PROTOCOL.md. The test writes `NAME.msgpack` + `NAME.expect.json` into a temporary folder
//! and runs `tools/protocol-vectors/check-s2c.mjs` on it (needs `node` and
//! `npm ci --prefix tools/protocol-vectors`). It also checks that we decode our own bytes
//! back to the same message.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value as Json, json};
use topgun_core::protocol::enums::{
    ChangeType, CursorStatus, DeltaEventType, JournalEventType, NodeStatus, ServerEventType,
    WriteConcern,
};
use topgun_core::protocol::http::{
    HttpAck, HttpDelta, HttpDeltaRecord, HttpError, HttpQueryResult, HttpSearchResult,
    HttpSyncResponse,
};
use topgun_core::protocol::messages::*;
use topgun_core::protocol::{
    Bin, Limits, Message, StrictU64, decode_standalone, encode_standalone,
};
use topgun_core::{LwwRecord, NodeId, OrMapEntry, OrRecord, PnCounter, Timestamp, Value, ValueMap};

fn ts(millis: u64, counter: u32, node: &str) -> Timestamp {
    Timestamp::new(millis, counter, NodeId::new(node).unwrap())
}

fn ts_json(millis: u64, counter: u32, node: &str) -> Json {
    json!({"millis": millis, "counter": counter, "nodeId": node})
}

/// A value exercising every kind, and its JavaScript form.
fn rich_value() -> (Value, Json) {
    let inner: ValueMap = [
        ("city", Value::from("Zürich")),
        ("zip", Value::from("8001")),
    ]
    .into_iter()
    .collect();
    let map: ValueMap = [
        ("name", Value::from("Zoë 🚀 東京")),
        ("age", Value::Int(42)),
        ("neg", Value::Int(-70_000)),
        ("big", Value::Int(1_099_511_627_776)),
        ("ratio", Value::Float(0.1)),
        ("whole", Value::Float(3.0)),
        ("ok", Value::Bool(true)),
        ("none", Value::Nil),
        ("tags", Value::from(vec![Value::from("a"), Value::Int(1)])),
        ("address", Value::Map(inner)),
        ("blob", Value::Bin(vec![0xde, 0xad, 0xbe, 0xef])),
    ]
    .into_iter()
    .collect();
    let js = json!({
        "name": "Zoë 🚀 東京", "age": 42, "neg": -70_000, "big": 1_099_511_627_776_u64,
        "ratio": 0.1, "whole": 3, "ok": true, "none": null, "tags": ["a", 1],
        "address": {"city": "Zürich", "zip": "8001"}, "blob": {"$bin": "deadbeef"}
    });
    (Value::Map(map), js)
}

fn lww(value: Value, t: Timestamp) -> LwwRecord {
    LwwRecord::new(value, t, None)
}

fn or_record(value: Value, t: Timestamp, ttl_ms: Option<u64>) -> OrRecord {
    OrRecord {
        value,
        tag: t.to_string(),
        timestamp: t,
        ttl_ms,
    }
}

fn counter() -> (PnCounter, Json) {
    let mut c = PnCounter::new();
    c.add("node-1", 5.0).unwrap();
    c.add("node-2", -2.0).unwrap();
    let p = json!({"node-1": 5});
    let n = json!({"node-2": 2});
    (c, json!({"p": p, "n": n, "positive": p, "negative": n}))
}

/// Every server→client message with the JavaScript object the TS client must see.
fn samples() -> Vec<(&'static str, Message, Json)> {
    let (value, value_js) = rich_value();
    let t1 = ts(1_700_000_000_000, 1, "node-1");
    let t1_js = ts_json(1_700_000_000_000, 1, "node-1");
    let (state, state_js) = counter();
    let journal = JournalEventData {
        sequence: "18446744073709551615".into(),
        event_type: JournalEventType::Put,
        map_name: "users".into(),
        key: "u1".into(),
        value: Some(Value::Int(7)),
        previous_value: None,
        timestamp: t1.clone(),
        node_id: "server-1".into(),
        metadata: None,
    };
    let journal_js = json!({"sequence": "18446744073709551615", "type": "PUT", "mapName": "users",
        "key": "u1", "value": 7, "timestamp": t1_js, "nodeId": "server-1"});
    vec![
        (
            "AUTH_REQUIRED",
            Message::AuthRequired(AuthRequired {}),
            json!({"type": "AUTH_REQUIRED"}),
        ),
        (
            "AUTH_ACK",
            Message::AuthAck(AuthAck {
                protocol_version: None,
                user_id: Some("alice".into()),
                device_id: None,
                device_token: None,
            }),
            json!({"type": "AUTH_ACK", "userId": "alice"}),
        ),
        (
            "AUTH_FAIL",
            Message::AuthFail(AuthFail {
                error: Some("token expired".into()),
                code: Some(401),
            }),
            json!({"type": "AUTH_FAIL", "error": "token expired", "code": 401}),
        ),
        (
            "DEVICE_ACK",
            Message::DeviceAck(DeviceAck {
                device_id: Some("d1".into()),
                device_token: Some("d1.abcd".into()),
            }),
            json!({"type": "DEVICE_ACK", "deviceId": "d1", "deviceToken": "d1.abcd"}),
        ),
        (
            "ERROR",
            Message::Error(ErrorPayload {
                code: 413,
                message: "frame too large".into(),
                details: None,
            }),
            json!({"type": "ERROR", "payload": {"code": 413, "message": "frame too large"}}),
        ),
        (
            "OP_ACK",
            Message::OpAck(OpAck {
                last_id: "7".into(),
                achieved_level: Some(WriteConcern::Persisted),
                results: Some(vec![OpResult {
                    op_id: "7".into(),
                    success: true,
                    achieved_level: WriteConcern::Persisted,
                    error: None,
                }]),
            }),
            json!({"type": "OP_ACK", "payload": {"lastId": "7", "achievedLevel": "PERSISTED",
                "results": [{"opId": "7", "success": true, "achievedLevel": "PERSISTED"}]}}),
        ),
        (
            "OP_REJECTED",
            Message::OpRejected(OpRejected {
                op_id: "8".into(),
                reason: "write access denied".into(),
                code: Some(403),
            }),
            json!({"type": "OP_REJECTED", "payload": {"opId": "8", "reason": "write access denied", "code": 403}}),
        ),
        (
            "SYNC_RESP_ROOT",
            Message::SyncRespRoot(SyncRespRoot {
                map_name: "users".into(),
                root_hash: 2_476_720_979,
                timestamp: t1.clone(),
            }),
            json!({"type": "SYNC_RESP_ROOT", "payload": {"mapName": "users", "rootHash": 2_476_720_979_u32, "timestamp": t1_js}}),
        ),
        (
            "SYNC_RESP_BUCKETS",
            Message::SyncRespBuckets(SyncRespBuckets {
                map_name: "users".into(),
                path: "".into(),
                buckets: BTreeMap::from([("6".into(), 3_202_217_666), ("8".into(), 1_458_996_198)]),
            }),
            json!({"type": "SYNC_RESP_BUCKETS", "payload": {"mapName": "users", "path": "",
                "buckets": {"6": 3_202_217_666_u32, "8": 1_458_996_198}}}),
        ),
        (
            "SYNC_RESP_LEAF",
            Message::SyncRespLeaf(SyncRespLeaf {
                map_name: "users".into(),
                path: "872".into(),
                records: vec![
                    LeafRecord {
                        key: "alice".into(),
                        record: lww(value.clone(), t1.clone()),
                    },
                    LeafRecord {
                        key: "gone".into(),
                        record: LwwRecord::tombstone(t1.clone()),
                    },
                    LeafRecord {
                        key: "temp".into(),
                        record: LwwRecord::new(Value::Int(1), t1.clone(), Some(5_000)),
                    },
                ],
            }),
            json!({"type": "SYNC_RESP_LEAF", "payload": {"mapName": "users", "path": "872", "records": [
                {"key": "alice", "record": {"value": value_js, "timestamp": t1_js}},
                {"key": "gone", "record": {"value": null, "timestamp": t1_js}},
                {"key": "temp", "record": {"value": 1, "timestamp": t1_js, "ttlMs": 5000}},
            ]}}),
        ),
        (
            "SYNC_RESET_REQUIRED",
            Message::SyncResetRequired(SyncResetRequired {
                map_name: "users".into(),
                reason: "history pruned".into(),
            }),
            json!({"type": "SYNC_RESET_REQUIRED", "payload": {"mapName": "users", "reason": "history pruned"}}),
        ),
        (
            "ORMAP_SYNC_RESP_ROOT",
            Message::OrMapSyncRespRoot(OrMapSyncRespRoot {
                map_name: "todos".into(),
                root_hash: 0,
                timestamp: t1.clone(),
                covering_epoch: None,
                full_resync: None,
            }),
            json!({"type": "ORMAP_SYNC_RESP_ROOT", "payload": {"mapName": "todos", "rootHash": 0, "timestamp": t1_js}}),
        ),
        (
            "ORMAP_SYNC_RESP_ROOT__full_resync",
            Message::OrMapSyncRespRoot(OrMapSyncRespRoot {
                map_name: "todos".into(),
                root_hash: 9,
                timestamp: t1.clone(),
                covering_epoch: Some(12),
                full_resync: Some(true),
            }),
            json!({"type": "ORMAP_SYNC_RESP_ROOT", "payload": {"mapName": "todos", "rootHash": 9, "timestamp": t1_js,
                "coveringEpoch": 12, "fullResync": true}}),
        ),
        (
            "ORMAP_SYNC_RESP_BUCKETS",
            Message::OrMapSyncRespBuckets(SyncRespBuckets {
                map_name: "todos".into(),
                path: "a".into(),
                buckets: BTreeMap::from([("f".into(), 0)]),
            }),
            json!({"type": "ORMAP_SYNC_RESP_BUCKETS", "payload": {"mapName": "todos", "path": "a", "buckets": {"f": 0}}}),
        ),
        (
            "ORMAP_SYNC_RESP_LEAF",
            Message::OrMapSyncRespLeaf(OrMapSyncRespLeaf {
                map_name: "todos".into(),
                path: "abc".into(),
                entries: vec![
                    OrMapEntry {
                        key: "list-1".into(),
                        records: vec![or_record(Value::from("milk"), t1.clone(), Some(30_000))],
                        tombstones: vec!["1:0:node-9".into()],
                    },
                    OrMapEntry {
                        key: "list-2".into(),
                        records: vec![],
                        tombstones: vec!["2:0:node-9".into()],
                    },
                ],
                covering_epoch: Some(3),
            }),
            json!({"type": "ORMAP_SYNC_RESP_LEAF", "payload": {"mapName": "todos", "path": "abc", "entries": [
                {"key": "list-1", "records": [{"value": "milk", "timestamp": t1_js, "tag": "1700000000000:1:node-1", "ttlMs": 30000}],
                 "tombstones": ["1:0:node-9"]},
                {"key": "list-2", "records": [], "tombstones": ["2:0:node-9"]},
            ], "coveringEpoch": 3}}),
        ),
        (
            "ORMAP_DIFF_RESPONSE",
            Message::OrMapDiffResponse(OrMapDiffResponse {
                map_name: "todos".into(),
                entries: vec![OrMapEntry {
                    key: "k".into(),
                    records: vec![or_record(Value::Int(1), t1.clone(), None)],
                    tombstones: vec![],
                }],
                covering_epoch: None,
            }),
            json!({"type": "ORMAP_DIFF_RESPONSE", "payload": {"mapName": "todos", "entries": [
                {"key": "k", "records": [{"value": 1, "timestamp": t1_js, "tag": "1700000000000:1:node-1"}], "tombstones": []}]}}),
        ),
        (
            "SERVER_EVENT__put",
            Message::ServerEvent(ServerEvent {
                map_name: "users".into(),
                event_type: ServerEventType::Put,
                key: "alice".into(),
                record: Some(lww(value.clone(), t1.clone())),
                or_record: None,
                or_tag: None,
                epoch: None,
            }),
            json!({"type": "SERVER_EVENT", "payload": {"mapName": "users", "eventType": "PUT", "key": "alice",
                "record": {"value": value_js, "timestamp": t1_js}}}),
        ),
        (
            "SERVER_EVENT__or_add",
            Message::ServerEvent(ServerEvent {
                map_name: "todos".into(),
                event_type: ServerEventType::OrAdd,
                key: "l".into(),
                record: None,
                or_record: Some(or_record(Value::from("x"), t1.clone(), None)),
                or_tag: Some("1700000000000:1:node-1".into()),
                epoch: Some(4),
            }),
            json!({"type": "SERVER_EVENT", "payload": {"mapName": "todos", "eventType": "OR_ADD", "key": "l",
                "orRecord": {"value": "x", "timestamp": t1_js, "tag": "1700000000000:1:node-1"},
                "orTag": "1700000000000:1:node-1", "epoch": 4}}),
        ),
        (
            "SERVER_BATCH_EVENT",
            Message::ServerBatchEvent(ServerBatchEvent {
                events: vec![ServerEvent {
                    map_name: "todos".into(),
                    event_type: ServerEventType::OrRemove,
                    key: "l".into(),
                    record: None,
                    or_record: None,
                    or_tag: Some("t".into()),
                    epoch: None,
                }],
            }),
            json!({"type": "SERVER_BATCH_EVENT", "payload": {"events": [
                {"mapName": "todos", "eventType": "OR_REMOVE", "key": "l", "orTag": "t"}]}}),
        ),
        (
            "QUERY_RESP",
            Message::QueryResp(QueryResp {
                query_id: "q1".into(),
                results: vec![QueryResultRow {
                    key: "alice".into(),
                    value: value.clone(),
                }],
                next_cursor: Some("eyJsYXN0S2V5IjoiYWxpY2UifQ".into()),
                has_more: Some(true),
                cursor_status: Some(CursorStatus::None),
                merkle_root_hash: None,
                error: None,
                code: None,
            }),
            json!({"type": "QUERY_RESP", "payload": {"queryId": "q1", "results": [{"key": "alice", "value": value_js}],
                "nextCursor": "eyJsYXN0S2V5IjoiYWxpY2UifQ", "hasMore": true, "cursorStatus": "none"}}),
        ),
        (
            "QUERY_UPDATE__leave",
            Message::QueryUpdate(QueryUpdate {
                query_id: "q1".into(),
                key: "bob".into(),
                value: Value::Nil,
                change_type: ChangeType::Leave,
            }),
            json!({"type": "QUERY_UPDATE", "payload": {"queryId": "q1", "key": "bob", "value": null, "changeType": "LEAVE"}}),
        ),
        (
            "TOPIC_MESSAGE",
            Message::TopicMessage(TopicMessage {
                topic: "chat/room-1".into(),
                data: value.clone(),
                publisher_id: None,
                timestamp: 1_700_000_000_123,
            }),
            json!({"type": "TOPIC_MESSAGE", "payload": {"topic": "chat/room-1", "data": value_js, "timestamp": 1_700_000_000_123_u64}}),
        ),
        (
            "LOCK_GRANTED",
            Message::LockGranted(LockGranted {
                request_id: "r1".into(),
                name: "jobs/nightly".into(),
                fencing_token: 1 << 40,
            }),
            json!({"type": "LOCK_GRANTED", "payload": {"requestId": "r1", "name": "jobs/nightly", "fencingToken": 1_099_511_627_776_u64}}),
        ),
        (
            "LOCK_RELEASED",
            Message::LockReleased(LockReleased {
                request_id: "".into(),
                name: "jobs/nightly".into(),
                success: true,
            }),
            json!({"type": "LOCK_RELEASED", "payload": {"requestId": "", "name": "jobs/nightly", "success": true}}),
        ),
        (
            "COUNTER_RESPONSE",
            Message::CounterResponse(CounterState {
                name: "views".into(),
                state: state.clone(),
            }),
            json!({"type": "COUNTER_RESPONSE", "payload": {"name": "views", "state": state_js}}),
        ),
        (
            "COUNTER_UPDATE",
            Message::CounterUpdate(CounterState {
                name: "views".into(),
                state: PnCounter::new(),
            }),
            json!({"type": "COUNTER_UPDATE", "payload": {"name": "views", "state": {"p": {}, "n": {}, "positive": {}, "negative": {}}}}),
        ),
        (
            "PONG",
            Message::Pong(Pong {
                timestamp: 1_700_000_000_000,
                server_time: 1_700_000_000_005,
            }),
            json!({"type": "PONG", "timestamp": 1_700_000_000_000_u64, "serverTime": 1_700_000_000_005_u64}),
        ),
        (
            "ENTRY_PROCESS_RESPONSE",
            Message::EntryProcessResponse(EntryProcessResponse {
                request_id: "e1".into(),
                success: false,
                result: None,
                new_value: None,
                error: Some("entry processors are not supported".into()),
            }),
            json!({"type": "ENTRY_PROCESS_RESPONSE", "requestId": "e1", "success": false, "error": "entry processors are not supported"}),
        ),
        (
            "ENTRY_PROCESS_BATCH_RESPONSE",
            Message::EntryProcessBatchResponse(EntryProcessBatchResponse {
                request_id: "e2".into(),
                results: BTreeMap::from([(
                    "k1".into(),
                    EntryProcessKeyResult {
                        success: true,
                        result: Some(Value::Int(1)),
                        new_value: Some(Value::Int(2)),
                        error: None,
                    },
                )]),
            }),
            json!({"type": "ENTRY_PROCESS_BATCH_RESPONSE", "requestId": "e2", "results": {"k1": {"success": true, "result": 1, "newValue": 2}}}),
        ),
        (
            "JOURNAL_EVENT",
            Message::JournalEvent(journal.clone()),
            json!({"type": "JOURNAL_EVENT", "event": journal_js}),
        ),
        (
            "JOURNAL_READ_RESPONSE",
            Message::JournalReadResponse(JournalReadResponse {
                request_id: "j1".into(),
                events: vec![journal],
                has_more: false,
            }),
            json!({"type": "JOURNAL_READ_RESPONSE", "requestId": "j1", "events": [journal_js], "hasMore": false}),
        ),
        (
            "REGISTER_RESOLVER_RESPONSE",
            Message::RegisterResolverResponse(ResolverResponse {
                request_id: "r".into(),
                success: false,
                error: Some("not supported".into()),
            }),
            json!({"type": "REGISTER_RESOLVER_RESPONSE", "requestId": "r", "success": false, "error": "not supported"}),
        ),
        (
            "UNREGISTER_RESOLVER_RESPONSE",
            Message::UnregisterResolverResponse(ResolverResponse {
                request_id: "r".into(),
                success: true,
                error: None,
            }),
            json!({"type": "UNREGISTER_RESOLVER_RESPONSE", "requestId": "r", "success": true}),
        ),
        (
            "LIST_RESOLVERS_RESPONSE",
            Message::ListResolversResponse(ListResolversResponse {
                request_id: "r".into(),
                resolvers: vec![ResolverInfo {
                    map_name: "m".into(),
                    name: "max-wins".into(),
                    priority: Some(10),
                    key_pattern: None,
                }],
            }),
            json!({"type": "LIST_RESOLVERS_RESPONSE", "requestId": "r", "resolvers": [{"mapName": "m", "name": "max-wins", "priority": 10}]}),
        ),
        (
            "MERGE_REJECTED",
            Message::MergeRejected(MergeRejected {
                map_name: "m".into(),
                key: "k".into(),
                attempted_value: Value::Int(-1),
                reason: "negative stock".into(),
                timestamp: t1.clone(),
            }),
            json!({"type": "MERGE_REJECTED", "mapName": "m", "key": "k", "attemptedValue": -1, "reason": "negative stock", "timestamp": t1_js}),
        ),
        (
            "GC_PRUNE",
            Message::GcPrune(GcPrune {
                older_than: t1.clone(),
            }),
            json!({"type": "GC_PRUNE", "payload": {"olderThan": t1_js}}),
        ),
        (
            "PARTITION_MAP",
            Message::PartitionMap(PartitionMap {
                version: 3,
                partition_count: 271,
                nodes: vec![NodeInfo {
                    node_id: "n1".into(),
                    endpoints: NodeEndpoints {
                        websocket: "ws://10.0.0.1:8080".into(),
                        http: None,
                    },
                    status: NodeStatus::Active,
                }],
                partitions: vec![PartitionInfo {
                    partition_id: 270,
                    owner_node_id: "n1".into(),
                    backup_node_ids: vec![],
                }],
                generated_at: 1_700_000_000_000,
            }),
            json!({"type": "PARTITION_MAP", "payload": {"version": 3, "partitionCount": 271, "nodes": [{"nodeId": "n1",
                "endpoints": {"websocket": "ws://10.0.0.1:8080"}, "status": "ACTIVE"}], "partitions": [{"partitionId": 270,
                "ownerNodeId": "n1", "backupNodeIds": []}], "generatedAt": 1_700_000_000_000_u64}}),
        ),
        (
            "SEARCH_RESP",
            Message::SearchResp(SearchResp {
                request_id: "s1".into(),
                results: vec![SearchResult {
                    key: "a".into(),
                    value: Value::from("doc"),
                    score: 1.5,
                    matched_terms: vec!["offline".into()],
                }],
                total_count: 1,
                error: None,
            }),
            json!({"type": "SEARCH_RESP", "payload": {"requestId": "s1", "results": [{"key": "a", "value": "doc", "score": 1.5,
                "matchedTerms": ["offline"]}], "totalCount": 1}}),
        ),
        (
            "SEARCH_UPDATE",
            Message::SearchUpdate(SearchUpdate {
                subscription_id: "s2".into(),
                key: "a".into(),
                value: Value::Nil,
                score: 0.0,
                matched_terms: vec![],
                change_type: ChangeType::Leave,
            }),
            json!({"type": "SEARCH_UPDATE", "payload": {"subscriptionId": "s2", "key": "a", "value": null, "score": 0,
                "matchedTerms": [], "changeType": "LEAVE"}}),
        ),
        (
            "HYBRID_SEARCH_RESP",
            Message::HybridSearchResp(HybridSearchResp {
                request_id: "h1".into(),
                results: vec![HybridResult {
                    key: "a".into(),
                    score: 0.25,
                    method_scores: BTreeMap::from([("exact".into(), 1.0)]),
                    value: None,
                }],
                search_time_ms: StrictU64(3),
                error: None,
            }),
            json!({"type": "HYBRID_SEARCH_RESP", "payload": {"requestId": "h1", "results": [{"key": "a", "score": 0.25,
                "methodScores": {"exact": 1}}], "searchTimeMs": 3}}),
        ),
        (
            "HYBRID_SEARCH_UPDATE",
            Message::HybridSearchUpdate(HybridSearchUpdate {
                subscription_id: "h2".into(),
                key: "a".into(),
                score: 2.5,
                method_scores: BTreeMap::new(),
                value: Some(Value::Bool(true)),
                change_type: ChangeType::Enter,
            }),
            json!({"type": "HYBRID_SEARCH_UPDATE", "payload": {"subscriptionId": "h2", "key": "a", "score": 2.5,
                "methodScores": {}, "value": true, "changeType": "ENTER"}}),
        ),
        (
            "VECTOR_SEARCH_RESP",
            Message::VectorSearchResp(VectorSearchResp {
                id: "v1".into(),
                results: vec![VectorResult {
                    key: "a".into(),
                    score: 0.5,
                    value: None,
                    vector: Some(Bin(vec![0, 0, 0x80, 0x3f])),
                }],
                total_candidates: 64,
                search_time_ms: StrictU64(1),
                error: None,
            }),
            json!({"type": "VECTOR_SEARCH_RESP", "payload": {"id": "v1", "results": [{"key": "a", "score": 0.5,
                "vector": {"$bin": "0000803f"}}], "totalCandidates": 64, "searchTimeMs": 1}}),
        ),
        (
            "SQL_QUERY_RESP",
            Message::SqlQueryResp(SqlQueryResp {
                query_id: "sq".into(),
                columns: vec![],
                rows: vec![],
                error: Some("SQL is not enabled on this server".into()),
                code: Some("FEATURE_DISABLED".into()),
            }),
            json!({"type": "SQL_QUERY_RESP", "payload": {"queryId": "sq", "columns": [], "rows": [],
                "error": "SQL is not enabled on this server", "code": "FEATURE_DISABLED"}}),
        ),
    ]
}

fn http_response() -> (HttpSyncResponse, Json) {
    let t = ts(1_700_000_000_000, 0, "server");
    let t_js = ts_json(1_700_000_000_000, 0, "server");
    let body = HttpSyncResponse {
        server_hlc: t.clone(),
        ack: Some(HttpAck {
            last_id: "19".into(),
            results: None,
        }),
        deltas: Some(vec![HttpDelta {
            map_name: "users".into(),
            records: vec![HttpDeltaRecord {
                key: "bob".into(),
                record: LwwRecord::tombstone(t.clone()),
                event_type: DeltaEventType::Remove,
            }],
            server_sync_timestamp: t,
        }]),
        query_results: Some(vec![HttpQueryResult {
            query_id: "q".into(),
            results: vec![Value::Int(1)],
            has_more: None,
            next_cursor: None,
        }]),
        search_results: Some(vec![HttpSearchResult {
            search_id: "s".into(),
            results: vec![],
            total_count: Some(0),
        }]),
        errors: Some(vec![HttpError {
            code: 403,
            message: "read access denied".into(),
            context: None,
        }]),
    };
    let js = json!({"serverHlc": t_js, "ack": {"lastId": "19"}, "deltas": [{"mapName": "users", "records": [
        {"key": "bob", "record": {"value": null, "timestamp": t_js}, "eventType": "REMOVE"}], "serverSyncTimestamp": t_js}],
        "queryResults": [{"queryId": "q", "results": [1]}], "searchResults": [{"searchId": "s", "results": [], "totalCount": 0}],
        "errors": [{"code": 403, "message": "read access denied"}]});
    (body, js)
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn we_decode_our_own_encoding() {
    for (name, msg, _) in samples() {
        let again = Message::decode(&msg.encode(), &Limits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(again, msg, "{name}");
    }
    let (body, _) = http_response();
    let bytes = encode_standalone(&body);
    assert_eq!(
        decode_standalone::<HttpSyncResponse>(&bytes, &Limits::default()),
        Ok(body)
    );
}

#[test]
fn msgpackr_reads_every_server_message_as_the_ts_client_expects() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("s2c-vectors");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = samples()
        .into_iter()
        .map(|(name, msg, js)| (name.to_owned(), msg.encode(), js))
        .collect::<Vec<_>>();
    let (body, js) = http_response();
    files.push(("HTTP_SYNC_RESPONSE".into(), encode_standalone(&body), js));
    for (name, bytes, js) in &files {
        std::fs::write(dir.join(format!("{name}.msgpack")), bytes).unwrap();
        std::fs::write(
            dir.join(format!("{name}.expect.json")),
            serde_json::to_string_pretty(js).unwrap(),
        )
        .unwrap();
    }

    let tools = repo_root().join("tools/protocol-vectors");
    assert!(
        tools.join("node_modules/msgpackr").is_dir(),
        "msgpackr is not installed: run `npm ci --prefix tools/protocol-vectors` (./scripts/test does)"
    );
    let output = Command::new("node")
        .arg(tools.join("check-s2c.mjs"))
        .env("S2C_DIR", &dir)
        .env("REQUIRE_S2C", "1")
        .output()
        .expect("this test needs Node.js (`node`) on the PATH");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "msgpackr disagreed:\n{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        report.contains(&format!("{} passed, 0 failed", files.len())),
        "{report}"
    );
}

#[test]
fn every_server_to_client_type_has_a_sample() {
    let covered: std::collections::BTreeSet<&str> =
        samples().iter().map(|(_, m, _)| m.type_name()).collect();
    let server_types = [
        "AUTH_REQUIRED",
        "AUTH_ACK",
        "AUTH_FAIL",
        "DEVICE_ACK",
        "ERROR",
        "OP_ACK",
        "OP_REJECTED",
        "SYNC_RESP_ROOT",
        "SYNC_RESP_BUCKETS",
        "SYNC_RESP_LEAF",
        "SYNC_RESET_REQUIRED",
        "ORMAP_SYNC_RESP_ROOT",
        "ORMAP_SYNC_RESP_BUCKETS",
        "ORMAP_SYNC_RESP_LEAF",
        "ORMAP_DIFF_RESPONSE",
        "SERVER_EVENT",
        "SERVER_BATCH_EVENT",
        "QUERY_RESP",
        "QUERY_UPDATE",
        "TOPIC_MESSAGE",
        "LOCK_GRANTED",
        "LOCK_RELEASED",
        "COUNTER_RESPONSE",
        "COUNTER_UPDATE",
        "PONG",
        "ENTRY_PROCESS_RESPONSE",
        "ENTRY_PROCESS_BATCH_RESPONSE",
        "JOURNAL_EVENT",
        "JOURNAL_READ_RESPONSE",
        "REGISTER_RESOLVER_RESPONSE",
        "UNREGISTER_RESOLVER_RESPONSE",
        "LIST_RESOLVERS_RESPONSE",
        "MERGE_REJECTED",
        "GC_PRUNE",
        "PARTITION_MAP",
        "SEARCH_RESP",
        "SEARCH_UPDATE",
        "HYBRID_SEARCH_RESP",
        "HYBRID_SEARCH_UPDATE",
        "VECTOR_SEARCH_RESP",
        "SQL_QUERY_RESP",
    ];
    assert_eq!(covered, server_types.into_iter().collect());
}
