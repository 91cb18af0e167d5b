//! Bodies of `POST /sync` (PROTOCOL.md §4.17): plain maps without a `type` field.

use super::enums::DeltaEventType;
use super::messages::{ClientOp, OpResult, SearchOptions};
use crate::hlc::Timestamp;
use crate::lww_map::LwwRecord;
use crate::value::{CompactString, Value};

wire_struct! {
    /// A `syncMaps` entry's `lastSyncTimestamp`: the `serverSyncTimestamp` of the map's last
    /// delta, a place in the server's arrival order. The TS provider's first request sends
    /// `{millis: 0, counter: 0, nodeId: ""}` ("from the beginning"), so the node id may be
    /// empty here, unlike in every other timestamp.
    pub struct SyncSince {
        pub millis: u64 = "millis",
        pub counter: u32 = "counter",
        pub node_id: CompactString = "nodeId",
    }
}

wire_struct! {
    pub struct SyncMapRequest {
        pub map_name: CompactString = "mapName",
        pub last_sync_timestamp: SyncSince = "lastSyncTimestamp",
    }
}

wire_struct! {
    pub struct HttpQuery {
        pub query_id: CompactString = "queryId",
        pub map_name: CompactString = "mapName",
        /// A map is a field-equality where-clause.
        pub filter: Option<Value> = "filter",
        pub limit: Option<u32> = "limit",
        pub offset: Option<u32> = "offset",
        pub cursor: Option<CompactString> = "cursor",
    }
}

wire_struct! {
    pub struct HttpSearch {
        pub search_id: CompactString = "searchId",
        pub map_name: CompactString = "mapName",
        pub query: CompactString = "query",
        pub options: Option<SearchOptions> = "options",
    }
}

wire_struct! {
    pub struct HttpSyncRequest {
        pub client_id: CompactString = "clientId",
        pub client_hlc: Timestamp = "clientHlc",
        pub operations: Option<Vec<ClientOp>> = "operations",
        pub sync_maps: Option<Vec<SyncMapRequest>> = "syncMaps",
        pub queries: Option<Vec<HttpQuery>> = "queries",
        pub searches: Option<Vec<HttpSearch>> = "searches",
    }
}

wire_struct! {
    pub struct HttpAck {
        pub last_id: CompactString = "lastId",
        pub results: Option<Vec<OpResult>> = "results",
    }
}

wire_struct! {
    pub struct HttpDeltaRecord {
        pub key: CompactString = "key",
        pub record: LwwRecord = "record",
        pub event_type: DeltaEventType = "eventType",
    }
}

wire_struct! {
    pub struct HttpDelta {
        pub map_name: CompactString = "mapName",
        pub records: Vec<HttpDeltaRecord> = "records",
        pub server_sync_timestamp: Timestamp = "serverSyncTimestamp",
    }
}

wire_struct! {
    pub struct HttpQueryResult {
        pub query_id: CompactString = "queryId",
        pub results: Vec<Value> = "results",
        pub has_more: Option<bool> = "hasMore",
        pub next_cursor: Option<CompactString> = "nextCursor",
    }
}

wire_struct! {
    pub struct HttpSearchResult {
        pub search_id: CompactString = "searchId",
        pub results: Vec<Value> = "results",
        pub total_count: Option<u32> = "totalCount",
    }
}

wire_struct! {
    pub struct HttpError {
        pub code: u32 = "code",
        pub message: CompactString = "message",
        pub context: Option<Value> = "context",
    }
}

wire_struct! {
    pub struct HttpSyncResponse {
        pub server_hlc: Timestamp = "serverHlc",
        pub ack: Option<HttpAck> = "ack",
        pub deltas: Option<Vec<HttpDelta>> = "deltas",
        pub query_results: Option<Vec<HttpQueryResult>> = "queryResults",
        pub search_results: Option<Vec<HttpSearchResult>> = "searchResults",
        pub errors: Option<Vec<HttpError>> = "errors",
    }
}
