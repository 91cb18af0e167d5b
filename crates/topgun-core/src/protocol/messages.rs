//! Every message of PROTOCOL.md §4, typed. Field order is the wire order we emit; the wire
//! keys are camelCase as the TS client expects.

use std::collections::BTreeMap;

use super::enums::{
    ChangeType, ClusterSubType, CursorStatus, JournalEventType, NodeStatus, SearchMethod,
    ServerEventType, SortDirection, WriteConcern,
};
use super::query::{PredicateNode, Query};
use super::wire::{Bin, Field, StrictU64};
use crate::hlc::Timestamp;
use crate::lww_map::LwwRecord;
use crate::or_map::{OrMapEntry, OrRecord};
use crate::pn_counter::PnCounter;
use crate::value::{CompactString, Value};

// ---- §4.1 Handshake -------------------------------------------------------------------------

wire_struct! {
    /// First frame from a server that requires authentication.
    pub struct AuthRequired {}
}

wire_struct! {
    pub struct Auth {
        pub token: CompactString = "token",
        pub protocol_version: Option<u32> = "protocolVersion",
        pub device_token: Option<CompactString> = "deviceToken",
    }
}

wire_struct! {
    pub struct AuthAck {
        pub protocol_version: Option<u32> = "protocolVersion",
        pub user_id: Option<CompactString> = "userId",
        pub device_id: Option<CompactString> = "deviceId",
        pub device_token: Option<CompactString> = "deviceToken",
    }
}

wire_struct! {
    pub struct AuthFail {
        pub error: Option<CompactString> = "error",
        pub code: Option<u32> = "code",
    }
}

wire_struct! {
    pub struct DeviceHello {
        pub device_token: Option<CompactString> = "deviceToken",
    }
}

wire_struct! {
    pub struct DeviceAck {
        pub device_id: Option<CompactString> = "deviceId",
        pub device_token: Option<CompactString> = "deviceToken",
    }
}

// ---- §4.2 Errors ----------------------------------------------------------------------------

wire_struct! {
    pub struct ErrorPayload {
        pub code: u32 = "code",
        pub message: CompactString = "message",
        pub details: Option<Value> = "details",
    }
}

// ---- §4.3 Writes ----------------------------------------------------------------------------

wire_struct! {
    /// One client operation. `record: nil` is an LWW remove; see PROTOCOL.md §4.3.
    pub struct ClientOp {
        pub id: Option<CompactString> = "id",
        pub map_name: CompactString = "mapName",
        pub key: CompactString = "key",
        pub op_type: Option<CompactString> = "opType",
        pub record: Field<LwwRecord> = "record",
        pub or_record: Field<OrRecord> = "orRecord",
        pub or_tag: Field<CompactString> = "orTag",
        pub write_concern: Option<WriteConcern> = "writeConcern",
        pub timeout: Option<u64> = "timeout",
    }
}

wire_struct! {
    pub struct OpBatch {
        pub ops: Vec<ClientOp> = "ops",
        pub write_concern: Option<WriteConcern> = "writeConcern",
        pub timeout: Option<u64> = "timeout",
    }
}

wire_struct! {
    pub struct OpResult {
        pub op_id: CompactString = "opId",
        pub success: bool = "success",
        pub achieved_level: WriteConcern = "achievedLevel",
        pub error: Option<CompactString> = "error",
    }
}

wire_struct! {
    pub struct OpAck {
        pub last_id: CompactString = "lastId",
        pub achieved_level: Option<WriteConcern> = "achievedLevel",
        pub results: Option<Vec<OpResult>> = "results",
    }
}

wire_struct! {
    pub struct OpRejected {
        pub op_id: CompactString = "opId",
        pub reason: CompactString = "reason",
        pub code: Option<u32> = "code",
    }
}

// ---- §4.4 LWW Merkle sync -------------------------------------------------------------------

wire_struct! {
    pub struct SyncInit {
        pub map_name: CompactString = "mapName",
        pub last_sync_timestamp: Option<u64> = "lastSyncTimestamp",
    }
}

wire_struct! {
    pub struct SyncRespRoot {
        pub map_name: CompactString = "mapName",
        pub root_hash: u32 = "rootHash",
        pub timestamp: Timestamp = "timestamp",
    }
}

wire_struct! {
    /// `MERKLE_REQ_BUCKET` and `ORMAP_MERKLE_REQ_BUCKET`.
    pub struct MerkleReqBucket {
        pub map_name: CompactString = "mapName",
        pub path: CompactString = "path",
    }
}

wire_struct! {
    /// `SYNC_RESP_BUCKETS` and `ORMAP_SYNC_RESP_BUCKETS`: child hex digit → hash.
    pub struct SyncRespBuckets {
        pub map_name: CompactString = "mapName",
        pub path: CompactString = "path",
        pub buckets: BTreeMap<String, u32> = "buckets",
    }
}

wire_struct! {
    pub struct LeafRecord {
        pub key: CompactString = "key",
        pub record: LwwRecord = "record",
    }
}

wire_struct! {
    pub struct SyncRespLeaf {
        pub map_name: CompactString = "mapName",
        pub path: CompactString = "path",
        pub records: Vec<LeafRecord> = "records",
    }
}

wire_struct! {
    pub struct SyncResetRequired {
        pub map_name: CompactString = "mapName",
        pub reason: CompactString = "reason",
    }
}

// ---- §4.5 OR-Map sync -----------------------------------------------------------------------

wire_struct! {
    pub struct OrMapSyncInit {
        pub map_name: CompactString = "mapName",
        pub root_hash: u32 = "rootHash",
        pub bucket_hashes: BTreeMap<String, u32> = "bucketHashes",
        pub last_sync_timestamp: Option<u64> = "lastSyncTimestamp",
        pub claimed_epoch: Option<u64> = "claimedEpoch",
    }
}

wire_struct! {
    pub struct OrMapSyncRespRoot {
        pub map_name: CompactString = "mapName",
        pub root_hash: u32 = "rootHash",
        pub timestamp: Timestamp = "timestamp",
        pub covering_epoch: Option<u64> = "coveringEpoch",
        /// Omitted rather than false.
        pub full_resync: Option<bool> = "fullResync",
    }
}

wire_struct! {
    pub struct OrMapSyncRespLeaf {
        pub map_name: CompactString = "mapName",
        pub path: CompactString = "path",
        pub entries: Vec<OrMapEntry> = "entries",
        pub covering_epoch: Option<u64> = "coveringEpoch",
    }
}

wire_struct! {
    pub struct OrMapDiffRequest {
        pub map_name: CompactString = "mapName",
        pub keys: Vec<String> = "keys",
    }
}

wire_struct! {
    pub struct OrMapDiffResponse {
        pub map_name: CompactString = "mapName",
        pub entries: Vec<OrMapEntry> = "entries",
        pub covering_epoch: Option<u64> = "coveringEpoch",
    }
}

wire_struct! {
    pub struct OrMapPushDiff {
        pub map_name: CompactString = "mapName",
        pub entries: Vec<OrMapEntry> = "entries",
    }
}

wire_struct! {
    pub struct ClientApplyAck {
        pub cursor: u64 = "cursor",
    }
}

// ---- §4.6 Server events ---------------------------------------------------------------------

wire_struct! {
    pub struct ServerEvent {
        pub map_name: CompactString = "mapName",
        pub event_type: ServerEventType = "eventType",
        pub key: CompactString = "key",
        pub record: Option<LwwRecord> = "record",
        pub or_record: Option<OrRecord> = "orRecord",
        pub or_tag: Option<CompactString> = "orTag",
        /// Confirmed-apply epoch; the TS client reads it when present.
        pub epoch: Option<u64> = "epoch",
    }
}

wire_struct! {
    pub struct ServerBatchEvent {
        pub events: Vec<ServerEvent> = "events",
    }
}

// ---- §4.7 Live queries ----------------------------------------------------------------------

wire_struct! {
    pub struct QuerySub {
        pub query_id: CompactString = "queryId",
        pub map_name: CompactString = "mapName",
        pub query: Query = "query",
        pub fields: Option<Vec<String>> = "fields",
    }
}

wire_struct! {
    /// `QUERY_UNSUB`.
    pub struct QueryRef {
        pub query_id: CompactString = "queryId",
    }
}

wire_struct! {
    pub struct QueryResultRow {
        pub key: CompactString = "key",
        pub value: Value = "value",
    }
}

wire_struct! {
    pub struct QueryResp {
        pub query_id: CompactString = "queryId",
        pub results: Vec<QueryResultRow> = "results",
        pub next_cursor: Option<CompactString> = "nextCursor",
        /// Omitted rather than false.
        pub has_more: Option<bool> = "hasMore",
        pub cursor_status: Option<CursorStatus> = "cursorStatus",
        pub merkle_root_hash: Option<u32> = "merkleRootHash",
        pub error: Option<CompactString> = "error",
        pub code: Option<CompactString> = "code",
    }
}

wire_struct! {
    pub struct QueryUpdate {
        pub query_id: CompactString = "queryId",
        pub key: CompactString = "key",
        /// Nil for `LEAVE`.
        pub value: Value = "value",
        pub change_type: ChangeType = "changeType",
    }
}

wire_struct! {
    pub struct QuerySyncInit {
        pub query_id: CompactString = "queryId",
        pub root_hash: u32 = "rootHash",
    }
}

// ---- §4.8 Topics ----------------------------------------------------------------------------

wire_struct! {
    /// `TOPIC_SUB` and `TOPIC_UNSUB`.
    pub struct TopicRef {
        pub topic: CompactString = "topic",
    }
}

wire_struct! {
    pub struct TopicPub {
        pub topic: CompactString = "topic",
        pub data: Value = "data",
    }
}

wire_struct! {
    pub struct TopicMessage {
        pub topic: CompactString = "topic",
        pub data: Value = "data",
        pub publisher_id: Option<CompactString> = "publisherId",
        pub timestamp: u64 = "timestamp",
    }
}

// ---- §4.9 Locks -----------------------------------------------------------------------------

wire_struct! {
    pub struct LockRequest {
        pub request_id: CompactString = "requestId",
        pub name: CompactString = "name",
        pub ttl: Option<u64> = "ttl",
    }
}

wire_struct! {
    pub struct LockGranted {
        pub request_id: CompactString = "requestId",
        pub name: CompactString = "name",
        pub fencing_token: u64 = "fencingToken",
    }
}

wire_struct! {
    pub struct LockRelease {
        pub request_id: Option<CompactString> = "requestId",
        pub name: CompactString = "name",
        pub fencing_token: u64 = "fencingToken",
    }
}

wire_struct! {
    pub struct LockReleased {
        pub request_id: CompactString = "requestId",
        pub name: CompactString = "name",
        pub success: bool = "success",
    }
}

// ---- §4.10 Counters -------------------------------------------------------------------------

wire_struct! {
    pub struct CounterRequest {
        pub name: CompactString = "name",
    }
}

wire_struct! {
    /// `COUNTER_SYNC`, `COUNTER_RESPONSE` and `COUNTER_UPDATE`.
    pub struct CounterState {
        pub name: CompactString = "name",
        pub state: PnCounter = "state",
    }
}

// ---- §4.11 Heartbeat ------------------------------------------------------------------------

wire_struct! {
    pub struct Ping {
        pub timestamp: u64 = "timestamp",
    }
}

wire_struct! {
    pub struct Pong {
        pub timestamp: u64 = "timestamp",
        pub server_time: u64 = "serverTime",
    }
}

// ---- §4.12 Entry processors, journal, resolvers -------------------------------------------

wire_struct! {
    pub struct EntryProcessor {
        pub name: CompactString = "name",
        pub code: CompactString = "code",
        pub args: Option<Value> = "args",
    }
}

wire_struct! {
    pub struct EntryProcess {
        pub request_id: CompactString = "requestId",
        pub map_name: CompactString = "mapName",
        pub key: CompactString = "key",
        pub processor: EntryProcessor = "processor",
    }
}

wire_struct! {
    pub struct EntryProcessBatch {
        pub request_id: CompactString = "requestId",
        pub map_name: CompactString = "mapName",
        pub keys: Vec<String> = "keys",
        pub processor: EntryProcessor = "processor",
    }
}

wire_struct! {
    pub struct EntryProcessResponse {
        pub request_id: CompactString = "requestId",
        pub success: bool = "success",
        pub result: Option<Value> = "result",
        pub new_value: Option<Value> = "newValue",
        pub error: Option<CompactString> = "error",
    }
}

wire_struct! {
    pub struct EntryProcessKeyResult {
        pub success: bool = "success",
        pub result: Option<Value> = "result",
        pub new_value: Option<Value> = "newValue",
        pub error: Option<CompactString> = "error",
    }
}

wire_struct! {
    pub struct EntryProcessBatchResponse {
        pub request_id: CompactString = "requestId",
        pub results: BTreeMap<String, EntryProcessKeyResult> = "results",
    }
}

wire_struct! {
    pub struct JournalSubscribe {
        pub request_id: CompactString = "requestId",
        pub from_sequence: Option<CompactString> = "fromSequence",
        pub map_name: Option<CompactString> = "mapName",
        pub types: Option<Vec<JournalEventType>> = "types",
    }
}

wire_struct! {
    pub struct JournalUnsubscribe {
        pub subscription_id: CompactString = "subscriptionId",
    }
}

wire_struct! {
    pub struct JournalEventData {
        /// Decimal `u64`.
        pub sequence: CompactString = "sequence",
        pub event_type: JournalEventType = "type",
        pub map_name: CompactString = "mapName",
        pub key: CompactString = "key",
        pub value: Option<Value> = "value",
        pub previous_value: Option<Value> = "previousValue",
        pub timestamp: Timestamp = "timestamp",
        pub node_id: CompactString = "nodeId",
        pub metadata: Option<BTreeMap<String, Value>> = "metadata",
    }
}

wire_struct! {
    pub struct JournalRead {
        pub request_id: CompactString = "requestId",
        pub from_sequence: CompactString = "fromSequence",
        pub limit: Option<u32> = "limit",
        pub map_name: Option<CompactString> = "mapName",
    }
}

wire_struct! {
    pub struct JournalReadResponse {
        pub request_id: CompactString = "requestId",
        pub events: Vec<JournalEventData> = "events",
        pub has_more: bool = "hasMore",
    }
}

wire_struct! {
    pub struct ResolverDef {
        pub name: CompactString = "name",
        pub code: CompactString = "code",
        pub priority: Option<u32> = "priority",
        pub key_pattern: Option<CompactString> = "keyPattern",
    }
}

wire_struct! {
    pub struct RegisterResolver {
        pub request_id: CompactString = "requestId",
        pub map_name: CompactString = "mapName",
        pub resolver: ResolverDef = "resolver",
    }
}

wire_struct! {
    /// `REGISTER_RESOLVER_RESPONSE` and `UNREGISTER_RESOLVER_RESPONSE`.
    pub struct ResolverResponse {
        pub request_id: CompactString = "requestId",
        pub success: bool = "success",
        pub error: Option<CompactString> = "error",
    }
}

wire_struct! {
    pub struct UnregisterResolver {
        pub request_id: CompactString = "requestId",
        pub map_name: CompactString = "mapName",
        pub resolver_name: CompactString = "resolverName",
    }
}

wire_struct! {
    pub struct ListResolvers {
        pub request_id: CompactString = "requestId",
        pub map_name: Option<CompactString> = "mapName",
    }
}

wire_struct! {
    pub struct ResolverInfo {
        pub map_name: CompactString = "mapName",
        pub name: CompactString = "name",
        pub priority: Option<u32> = "priority",
        pub key_pattern: Option<CompactString> = "keyPattern",
    }
}

wire_struct! {
    pub struct ListResolversResponse {
        pub request_id: CompactString = "requestId",
        pub resolvers: Vec<ResolverInfo> = "resolvers",
    }
}

wire_struct! {
    pub struct MergeRejected {
        pub map_name: CompactString = "mapName",
        pub key: CompactString = "key",
        pub attempted_value: Value = "attemptedValue",
        pub reason: CompactString = "reason",
        pub timestamp: Timestamp = "timestamp",
    }
}

// ---- §4.13 GC, §4.14 partition map ----------------------------------------------------------

wire_struct! {
    pub struct GcPrune {
        pub older_than: Timestamp = "olderThan",
    }
}

wire_struct! {
    pub struct PartitionMapRequest {
        pub current_version: Option<u32> = "currentVersion",
    }
}

wire_struct! {
    pub struct NodeEndpoints {
        pub websocket: CompactString = "websocket",
        pub http: Option<CompactString> = "http",
    }
}

wire_struct! {
    pub struct NodeInfo {
        pub node_id: CompactString = "nodeId",
        pub endpoints: NodeEndpoints = "endpoints",
        pub status: NodeStatus = "status",
    }
}

wire_struct! {
    pub struct PartitionInfo {
        pub partition_id: u32 = "partitionId",
        pub owner_node_id: CompactString = "ownerNodeId",
        pub backup_node_ids: Vec<String> = "backupNodeIds",
    }
}

wire_struct! {
    pub struct PartitionMap {
        pub version: u32 = "version",
        pub partition_count: u32 = "partitionCount",
        pub nodes: Vec<NodeInfo> = "nodes",
        pub partitions: Vec<PartitionInfo> = "partitions",
        pub generated_at: i64 = "generatedAt",
    }
}

// ---- §4.15 Search, hybrid search, vector search, SQL ---------------------------------------

wire_struct! {
    pub struct SearchOptions {
        pub limit: Option<u32> = "limit",
        pub min_score: Option<f64> = "minScore",
        pub boost: Option<BTreeMap<String, f64>> = "boost",
    }
}

wire_struct! {
    pub struct Search {
        pub request_id: CompactString = "requestId",
        pub map_name: CompactString = "mapName",
        pub query: CompactString = "query",
        pub options: Option<SearchOptions> = "options",
    }
}

wire_struct! {
    pub struct SearchResult {
        pub key: CompactString = "key",
        pub value: Value = "value",
        pub score: f64 = "score",
        pub matched_terms: Vec<String> = "matchedTerms",
    }
}

wire_struct! {
    pub struct SearchResp {
        pub request_id: CompactString = "requestId",
        pub results: Vec<SearchResult> = "results",
        pub total_count: u32 = "totalCount",
        pub error: Option<CompactString> = "error",
    }
}

wire_struct! {
    pub struct SearchSub {
        pub subscription_id: CompactString = "subscriptionId",
        pub map_name: CompactString = "mapName",
        pub query: CompactString = "query",
        pub options: Option<SearchOptions> = "options",
    }
}

wire_struct! {
    pub struct SearchUpdate {
        pub subscription_id: CompactString = "subscriptionId",
        pub key: CompactString = "key",
        pub value: Value = "value",
        pub score: f64 = "score",
        pub matched_terms: Vec<String> = "matchedTerms",
        pub change_type: ChangeType = "changeType",
    }
}

wire_struct! {
    /// `SEARCH_UNSUB`, `HYBRID_SEARCH_UNSUB`, `CLUSTER_SUB_UNREGISTER`,
    /// `CLUSTER_SEARCH_UNSUBSCRIBE`.
    pub struct SubscriptionRef {
        pub subscription_id: CompactString = "subscriptionId",
    }
}

wire_struct! {
    pub struct HybridSearch {
        pub request_id: CompactString = "requestId",
        pub map_name: CompactString = "mapName",
        pub query_text: CompactString = "queryText",
        pub methods: Vec<SearchMethod> = "methods",
        pub k: u32 = "k",
        /// Little-endian `f32`s.
        pub query_vector: Option<Bin> = "queryVector",
        pub predicate: Option<PredicateNode> = "predicate",
        pub include_value: Option<bool> = "includeValue",
        pub min_score: Option<f64> = "minScore",
    }
}

wire_struct! {
    pub struct HybridSearchSub {
        pub subscription_id: CompactString = "subscriptionId",
        pub map_name: CompactString = "mapName",
        pub query_text: CompactString = "queryText",
        pub methods: Vec<SearchMethod> = "methods",
        pub k: u32 = "k",
        pub query_vector: Option<Bin> = "queryVector",
        pub predicate: Option<PredicateNode> = "predicate",
        pub include_value: Option<bool> = "includeValue",
        pub min_score: Option<f64> = "minScore",
    }
}

wire_struct! {
    pub struct HybridResult {
        pub key: CompactString = "key",
        pub score: f64 = "score",
        pub method_scores: BTreeMap<String, f64> = "methodScores",
        pub value: Option<Value> = "value",
    }
}

wire_struct! {
    pub struct HybridSearchResp {
        pub request_id: CompactString = "requestId",
        pub results: Vec<HybridResult> = "results",
        pub search_time_ms: StrictU64 = "searchTimeMs",
        pub error: Option<CompactString> = "error",
    }
}

wire_struct! {
    pub struct HybridSearchUpdate {
        pub subscription_id: CompactString = "subscriptionId",
        pub key: CompactString = "key",
        pub score: f64 = "score",
        pub method_scores: BTreeMap<String, f64> = "methodScores",
        pub value: Option<Value> = "value",
        pub change_type: ChangeType = "changeType",
    }
}

wire_struct! {
    pub struct VectorSearchOptions {
        pub include_value: Option<bool> = "includeValue",
        pub include_vectors: Option<bool> = "includeVectors",
        pub min_score: Option<f64> = "minScore",
        pub filter: Option<PredicateNode> = "filter",
    }
}

wire_struct! {
    pub struct VectorSearch {
        pub id: CompactString = "id",
        pub map_name: CompactString = "mapName",
        pub index_name: Option<CompactString> = "indexName",
        /// Little-endian `f32`s, 4 bytes per dimension.
        pub query_vector: Bin = "queryVector",
        pub k: u32 = "k",
        pub ef_search: Option<u32> = "efSearch",
        pub options: Option<VectorSearchOptions> = "options",
    }
}

wire_struct! {
    pub struct VectorResult {
        pub key: CompactString = "key",
        pub score: f64 = "score",
        pub value: Option<Value> = "value",
        pub vector: Option<Bin> = "vector",
    }
}

wire_struct! {
    pub struct VectorSearchResp {
        pub id: CompactString = "id",
        pub results: Vec<VectorResult> = "results",
        pub total_candidates: u32 = "totalCandidates",
        pub search_time_ms: StrictU64 = "searchTimeMs",
        pub error: Option<CompactString> = "error",
    }
}

wire_struct! {
    pub struct SqlQuery {
        pub sql: CompactString = "sql",
        pub query_id: CompactString = "queryId",
    }
}

wire_struct! {
    pub struct SqlQueryResp {
        pub query_id: CompactString = "queryId",
        pub columns: Vec<String> = "columns",
        pub rows: Vec<Vec<Value>> = "rows",
        pub error: Option<CompactString> = "error",
        pub code: Option<CompactString> = "code",
    }
}

// ---- §4.16 Cluster messages carried in the client enum ------------------------------------

wire_struct! {
    pub struct ClusterSubRegister {
        pub subscription_id: CompactString = "subscriptionId",
        pub coordinator_node_id: CompactString = "coordinatorNodeId",
        pub map_name: CompactString = "mapName",
        pub sub_type: ClusterSubType = "type",
        pub search_query: Option<CompactString> = "searchQuery",
        pub search_options: Option<SearchOptions> = "searchOptions",
        pub query_predicate: Option<Value> = "queryPredicate",
        pub query_sort: Option<BTreeMap<String, SortDirection>> = "querySort",
    }
}

wire_struct! {
    pub struct ClusterResult {
        pub key: CompactString = "key",
        pub value: Value = "value",
        pub score: Option<f64> = "score",
        pub matched_terms: Option<Vec<String>> = "matchedTerms",
    }
}

wire_struct! {
    pub struct ClusterSubAck {
        pub subscription_id: CompactString = "subscriptionId",
        pub node_id: CompactString = "nodeId",
        pub success: bool = "success",
        pub error: Option<CompactString> = "error",
        pub initial_results: Option<Vec<ClusterResult>> = "initialResults",
        pub total_hits: Option<u64> = "totalHits",
    }
}

wire_struct! {
    pub struct ClusterSubUpdate {
        pub subscription_id: CompactString = "subscriptionId",
        pub source_node_id: CompactString = "sourceNodeId",
        pub key: CompactString = "key",
        pub value: Value = "value",
        pub score: Option<f64> = "score",
        pub matched_terms: Option<Vec<String>> = "matchedTerms",
        pub change_type: ChangeType = "changeType",
        pub timestamp: u64 = "timestamp",
    }
}

wire_struct! {
    pub struct ClusterSearchOptions {
        pub limit: u32 = "limit",
        pub min_score: Option<f64> = "minScore",
        pub boost: Option<BTreeMap<String, f64>> = "boost",
        pub include_matched_terms: Option<bool> = "includeMatchedTerms",
        pub after_score: Option<f64> = "afterScore",
        pub after_key: Option<CompactString> = "afterKey",
    }
}

wire_struct! {
    pub struct ClusterSearchReq {
        pub request_id: CompactString = "requestId",
        pub map_name: CompactString = "mapName",
        pub query: CompactString = "query",
        pub options: ClusterSearchOptions = "options",
        pub timeout_ms: Option<u64> = "timeoutMs",
    }
}

wire_struct! {
    pub struct ClusterSearchResult {
        pub key: CompactString = "key",
        pub value: Value = "value",
        pub score: f64 = "score",
        pub matched_terms: Option<Vec<String>> = "matchedTerms",
    }
}

wire_struct! {
    pub struct ClusterSearchResp {
        pub request_id: CompactString = "requestId",
        pub node_id: CompactString = "nodeId",
        pub results: Vec<ClusterSearchResult> = "results",
        pub total_hits: u64 = "totalHits",
        pub execution_time_ms: u64 = "executionTimeMs",
        pub error: Option<CompactString> = "error",
    }
}

wire_struct! {
    pub struct ClusterSearchSubscribe {
        pub subscription_id: CompactString = "subscriptionId",
        pub map_name: CompactString = "mapName",
        pub query: CompactString = "query",
        pub options: Option<SearchOptions> = "options",
    }
}

wire_struct! {
    pub struct ClusterSearchUpdate {
        pub subscription_id: CompactString = "subscriptionId",
        pub node_id: CompactString = "nodeId",
        pub key: CompactString = "key",
        pub value: Value = "value",
        pub score: f64 = "score",
        pub matched_terms: Option<Vec<String>> = "matchedTerms",
        pub change_type: ChangeType = "changeType",
    }
}

// ---- §1.3 BATCH -----------------------------------------------------------------------------

wire_struct! {
    /// Several messages in one frame (inbound form: each item a 4-byte big-endian length
    /// and that many bytes; `count` is advisory). See [`Batch::frames`].
    pub struct Batch {
        pub count: u32 = "count",
        pub data: Bin = "data",
    }
}
