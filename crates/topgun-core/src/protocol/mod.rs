//! The wire protocol (PROTOCOL.md): every message typed, decoded from and encoded to
//! MsgPack.
//!
//! | module | what it holds |
//! |---|---|
//! | [`msgpack`] | bounded MsgPack reader into a borrowed tree ([`Raw`]), and a [`Writer`] |
//! | [`error`] | [`DecodeError`]: message type + field path + what was wrong |
//! | [`wire`] | the [`Wire`] trait: typed decode/encode, integer tolerance rules |
//! | [`enums`] | string enumerations (write concern, change type, predicate op, …) |
//! | [`query`] | `Query`, predicate trees, sort, aggregations (§5) |
//! | [`messages`] | one struct per message body (§4) |
//! | [`http`] | `POST /sync` request and response bodies (§4.17) |
//!
//! Decoding: [`Message::decode`] parses the frame within [`Limits`], reads `type` wherever
//! it sits, and decodes the body from the message's shape — *flat* (fields beside `type`),
//! *payload* (`{type, payload}`) or *event* (`{type, event}`). Unknown keys are ignored.
//! Encoding writes `type` first, omits absent optional fields and never wraps messages in
//! `BATCH`.

#[macro_use]
mod macros;

pub mod enums;
pub mod error;
pub mod http;
pub mod messages;
pub mod msgpack;
pub mod query;
pub mod wire;

use std::collections::BTreeMap;

pub use error::{DecodeError, ErrorKind, Path};
pub use msgpack::{Limits, Next, Number, Raw, Reader, Writer};
pub use wire::{Bin, Field, StrictU64, Wire, WireFields};

use messages::{
    Auth, AuthAck, AuthFail, AuthRequired, Batch, ClientApplyAck, ClientOp, ClusterSearchReq,
    ClusterSearchResp, ClusterSearchSubscribe, ClusterSearchUpdate, ClusterSubAck,
    ClusterSubRegister, ClusterSubUpdate, CounterRequest, CounterState, DeviceAck, DeviceHello,
    EntryProcess, EntryProcessBatch, EntryProcessBatchResponse, EntryProcessResponse, ErrorPayload,
    GcPrune, HybridSearch, HybridSearchResp, HybridSearchSub, HybridSearchUpdate, JournalEventData,
    JournalRead, JournalReadResponse, JournalSubscribe, JournalUnsubscribe, ListResolvers,
    ListResolversResponse, LockGranted, LockRelease, LockReleased, LockRequest, MergeRejected,
    MerkleReqBucket, OpAck, OpBatch, OpRejected, OrMapDiffRequest, OrMapDiffResponse,
    OrMapPushDiff, OrMapSyncInit, OrMapSyncRespLeaf, OrMapSyncRespRoot, PartitionMap,
    PartitionMapRequest, Ping, Pong, QueryRef, QueryResp, QuerySub, QuerySyncInit, QueryUpdate,
    RegisterResolver, ResolverResponse, Search, SearchResp, SearchSub, SearchUpdate,
    ServerBatchEvent, ServerEvent, SqlQuery, SqlQueryResp, SubscriptionRef, SyncInit,
    SyncResetRequired, SyncRespBuckets, SyncRespLeaf, SyncRespRoot, TopicMessage, TopicPub,
    TopicRef, UnregisterResolver, VectorSearch, VectorSearchResp,
};

use crate::pn_counter::PnCounter;
use crate::value::Value;

/// Bytes from a hex string, for test fixtures.
#[cfg(test)]
pub(crate) fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Most messages one inbound `BATCH` may carry (PROTOCOL.md §7.3).
pub const BATCH_ITEMS_MAX: usize = 8_192;

fn encode_flat<T: WireFields>(name: &str, body: &T, w: &mut Writer) {
    w.map_header(1 + body.field_count());
    w.str("type");
    w.str(name);
    body.encode_fields(w);
}

fn encode_member<T: Wire>(name: &str, key: &str, body: &T, w: &mut Writer) {
    let present = !body.is_absent();
    w.map_header(1 + usize::from(present));
    w.str("type");
    w.str(name);
    if present {
        w.str(key);
        body.encode(w);
    }
}

macro_rules! messages {
    (@shape flat) => { Shape::Flat };
    (@shape "payload") => { Shape::Payload };
    (@shape "event") => { Shape::Event };
    (@decode flat, $ty:ty, $r:ident) => {
        match $r {
            Some(r) => <$ty as Wire>::decode(r, Path::Root),
            None => <$ty as Wire>::absent(Path::Root),
        }
    };
    (@decode $key:literal, $ty:ty, $r:ident) => {
        match $r {
            Some(r) => <$ty as Wire>::decode(r, Path::Root.key($key)),
            None => <$ty as Wire>::absent(Path::Root.key($key)),
        }
    };
    (@encode flat, $name:literal, $body:ident, $w:ident) => {
        encode_flat($name, $body, $w)
    };
    (@encode $key:literal, $name:literal, $body:ident, $w:ident) => {
        encode_member($name, $key, $body, $w)
    };
    ( $( $(#[$meta:meta])* $variant:ident ( $ty:ty ) = $name:literal, $shape:tt; )* ) => {
        /// Every message of the protocol. The variant's value is the message body: the fields
        /// beside `type` for flat messages, else the `payload` (or `event`) map.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Message {
            $( $(#[$meta])* $variant($ty), )*
        }

        impl Message {
            /// Every message type name, in declaration order.
            pub const TYPE_NAMES: &'static [&'static str] = &[$( $name ),*];

            /// The `type` of this message.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $( Self::$variant(_) => $name, )*
                }
            }

            /// Where this type keeps its body, or `None` for an unknown type.
            fn shape_of(name: &str) -> Option<Shape> {
                match name {
                    $( $name => Some(messages!(@shape $shape)), )*
                    _ => None,
                }
            }

            /// Decodes the body of message type `name` at the reader's position (the
            /// top-level map for flat messages, the member's value otherwise); `None`
            /// position means the member was absent.
            fn decode_body(name: &str, r: Option<&mut Reader<'_>>) -> Result<Self, DecodeError> {
                match name {
                    $( $name => messages!(@decode $shape, $ty, r)
                        .map(Self::$variant)
                        .map_err(|e| e.in_message($name)), )*
                    other => Err(DecodeError::at(
                        Path::Root.key("type"),
                        ErrorKind::UnknownType(other.to_owned()),
                    )),
                }
            }

            /// Appends this message's MsgPack encoding to `w`.
            pub fn encode_into(&self, w: &mut Writer) {
                match self {
                    $( Self::$variant(body) => messages!(@encode $shape, $name, body, w), )*
                }
            }
        }
    };
}

messages! {
    AuthRequired(AuthRequired) = "AUTH_REQUIRED", flat;
    Auth(Auth) = "AUTH", flat;
    AuthAck(AuthAck) = "AUTH_ACK", flat;
    AuthFail(AuthFail) = "AUTH_FAIL", flat;
    DeviceHello(DeviceHello) = "DEVICE_HELLO", flat;
    DeviceAck(DeviceAck) = "DEVICE_ACK", flat;
    Error(ErrorPayload) = "ERROR", "payload";
    ClientOp(ClientOp) = "CLIENT_OP", "payload";
    OpBatch(OpBatch) = "OP_BATCH", "payload";
    OpAck(OpAck) = "OP_ACK", "payload";
    OpRejected(OpRejected) = "OP_REJECTED", "payload";
    SyncInit(SyncInit) = "SYNC_INIT", flat;
    SyncRespRoot(SyncRespRoot) = "SYNC_RESP_ROOT", "payload";
    MerkleReqBucket(MerkleReqBucket) = "MERKLE_REQ_BUCKET", "payload";
    SyncRespBuckets(SyncRespBuckets) = "SYNC_RESP_BUCKETS", "payload";
    SyncRespLeaf(SyncRespLeaf) = "SYNC_RESP_LEAF", "payload";
    SyncResetRequired(SyncResetRequired) = "SYNC_RESET_REQUIRED", "payload";
    OrMapSyncInit(OrMapSyncInit) = "ORMAP_SYNC_INIT", flat;
    OrMapSyncRespRoot(OrMapSyncRespRoot) = "ORMAP_SYNC_RESP_ROOT", "payload";
    OrMapMerkleReqBucket(MerkleReqBucket) = "ORMAP_MERKLE_REQ_BUCKET", "payload";
    OrMapSyncRespBuckets(SyncRespBuckets) = "ORMAP_SYNC_RESP_BUCKETS", "payload";
    OrMapSyncRespLeaf(OrMapSyncRespLeaf) = "ORMAP_SYNC_RESP_LEAF", "payload";
    OrMapDiffRequest(OrMapDiffRequest) = "ORMAP_DIFF_REQUEST", "payload";
    OrMapDiffResponse(OrMapDiffResponse) = "ORMAP_DIFF_RESPONSE", "payload";
    OrMapPushDiff(OrMapPushDiff) = "ORMAP_PUSH_DIFF", "payload";
    ClientApplyAck(ClientApplyAck) = "CLIENT_APPLY_ACK", flat;
    ServerEvent(ServerEvent) = "SERVER_EVENT", "payload";
    ServerBatchEvent(ServerBatchEvent) = "SERVER_BATCH_EVENT", "payload";
    QuerySub(QuerySub) = "QUERY_SUB", "payload";
    QueryUnsub(QueryRef) = "QUERY_UNSUB", "payload";
    QueryResp(QueryResp) = "QUERY_RESP", "payload";
    QueryUpdate(QueryUpdate) = "QUERY_UPDATE", "payload";
    QuerySyncInit(QuerySyncInit) = "QUERY_SYNC_INIT", "payload";
    TopicSub(TopicRef) = "TOPIC_SUB", "payload";
    TopicUnsub(TopicRef) = "TOPIC_UNSUB", "payload";
    TopicPub(TopicPub) = "TOPIC_PUB", "payload";
    TopicMessage(TopicMessage) = "TOPIC_MESSAGE", "payload";
    LockRequest(LockRequest) = "LOCK_REQUEST", "payload";
    LockGranted(LockGranted) = "LOCK_GRANTED", "payload";
    LockRelease(LockRelease) = "LOCK_RELEASE", "payload";
    LockReleased(LockReleased) = "LOCK_RELEASED", "payload";
    CounterRequest(CounterRequest) = "COUNTER_REQUEST", "payload";
    CounterSync(CounterState) = "COUNTER_SYNC", "payload";
    CounterResponse(CounterState) = "COUNTER_RESPONSE", "payload";
    CounterUpdate(CounterState) = "COUNTER_UPDATE", "payload";
    Ping(Ping) = "PING", flat;
    Pong(Pong) = "PONG", flat;
    EntryProcess(EntryProcess) = "ENTRY_PROCESS", flat;
    EntryProcessBatch(EntryProcessBatch) = "ENTRY_PROCESS_BATCH", flat;
    EntryProcessResponse(EntryProcessResponse) = "ENTRY_PROCESS_RESPONSE", flat;
    EntryProcessBatchResponse(EntryProcessBatchResponse) = "ENTRY_PROCESS_BATCH_RESPONSE", flat;
    JournalSubscribe(JournalSubscribe) = "JOURNAL_SUBSCRIBE", flat;
    JournalUnsubscribe(JournalUnsubscribe) = "JOURNAL_UNSUBSCRIBE", flat;
    JournalEvent(JournalEventData) = "JOURNAL_EVENT", "event";
    JournalRead(JournalRead) = "JOURNAL_READ", flat;
    JournalReadResponse(JournalReadResponse) = "JOURNAL_READ_RESPONSE", flat;
    RegisterResolver(RegisterResolver) = "REGISTER_RESOLVER", flat;
    RegisterResolverResponse(ResolverResponse) = "REGISTER_RESOLVER_RESPONSE", flat;
    UnregisterResolver(UnregisterResolver) = "UNREGISTER_RESOLVER", flat;
    UnregisterResolverResponse(ResolverResponse) = "UNREGISTER_RESOLVER_RESPONSE", flat;
    ListResolvers(ListResolvers) = "LIST_RESOLVERS", flat;
    ListResolversResponse(ListResolversResponse) = "LIST_RESOLVERS_RESPONSE", flat;
    MergeRejected(MergeRejected) = "MERGE_REJECTED", flat;
    GcPrune(GcPrune) = "GC_PRUNE", "payload";
    /// The payload itself is optional.
    PartitionMapRequest(Option<PartitionMapRequest>) = "PARTITION_MAP_REQUEST", "payload";
    PartitionMap(PartitionMap) = "PARTITION_MAP", "payload";
    Search(Search) = "SEARCH", "payload";
    SearchResp(SearchResp) = "SEARCH_RESP", "payload";
    SearchSub(SearchSub) = "SEARCH_SUB", "payload";
    SearchUpdate(SearchUpdate) = "SEARCH_UPDATE", "payload";
    SearchUnsub(SubscriptionRef) = "SEARCH_UNSUB", "payload";
    HybridSearch(HybridSearch) = "HYBRID_SEARCH", "payload";
    HybridSearchResp(HybridSearchResp) = "HYBRID_SEARCH_RESP", "payload";
    HybridSearchSub(HybridSearchSub) = "HYBRID_SEARCH_SUB", "payload";
    HybridSearchUpdate(HybridSearchUpdate) = "HYBRID_SEARCH_UPDATE", "payload";
    HybridSearchUnsub(SubscriptionRef) = "HYBRID_SEARCH_UNSUB", "payload";
    VectorSearch(VectorSearch) = "VECTOR_SEARCH", "payload";
    VectorSearchResp(VectorSearchResp) = "VECTOR_SEARCH_RESP", "payload";
    SqlQuery(SqlQuery) = "SQL_QUERY", "payload";
    SqlQueryResp(SqlQueryResp) = "SQL_QUERY_RESP", "payload";
    /// Sent by the TS client's query manager but in no schema; kept opaque so a server can
    /// answer it precisely instead of failing on an unknown type.
    HybridQuerySubscribe(Option<Value>) = "HYBRID_QUERY_SUBSCRIBE", "payload";
    HybridQueryUnsubscribe(Option<Value>) = "HYBRID_QUERY_UNSUBSCRIBE", "payload";
    ClusterSubRegister(ClusterSubRegister) = "CLUSTER_SUB_REGISTER", "payload";
    ClusterSubAck(ClusterSubAck) = "CLUSTER_SUB_ACK", "payload";
    ClusterSubUpdate(ClusterSubUpdate) = "CLUSTER_SUB_UPDATE", "payload";
    ClusterSubUnregister(SubscriptionRef) = "CLUSTER_SUB_UNREGISTER", "payload";
    ClusterSearchReq(ClusterSearchReq) = "CLUSTER_SEARCH_REQ", "payload";
    ClusterSearchResp(ClusterSearchResp) = "CLUSTER_SEARCH_RESP", "payload";
    ClusterSearchSubscribe(ClusterSearchSubscribe) = "CLUSTER_SEARCH_SUBSCRIBE", "payload";
    ClusterSearchUnsubscribe(SubscriptionRef) = "CLUSTER_SEARCH_UNSUBSCRIBE", "payload";
    ClusterSearchUpdate(ClusterSearchUpdate) = "CLUSTER_SEARCH_UPDATE", "payload";
    Batch(Batch) = "BATCH", flat;
}

/// Where a message type keeps its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Fields beside `type`.
    Flat,
    /// `{type, payload}`.
    Payload,
    /// `{type, event}`.
    Event,
}

impl Shape {
    fn member(self) -> Option<&'static str> {
        match self {
            Self::Flat => None,
            Self::Payload => Some("payload"),
            Self::Event => Some("event"),
        }
    }
}

/// What the top-level pass of [`Message::decode`] found.
#[derive(Default)]
struct TopLevel<'a> {
    name: Option<&'a str>,
    payload_at: Option<usize>,
    event_at: Option<usize>,
    /// A body decoded during the pass, with the type name it was decoded as.
    body: Option<(&'a str, Message)>,
}

impl Message {
    /// Decodes one frame within `limits`.
    ///
    /// One pass reads the top-level keys. When `type` comes before the body (as the TS client
    /// writes it), the body is decoded in that pass; otherwise the reader returns to it.
    pub fn decode(frame: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let mut r = Reader::new(frame, limits)?;
        let root = Path::Root;
        let scan = Self::scan_top_level(&mut r)?;
        r.finish()?;
        let name = scan
            .name
            .ok_or_else(|| DecodeError::at(root.key("type"), ErrorKind::MissingType))?;
        if let Some((decoded_as, body)) = scan.body
            && decoded_as == name
        {
            return Ok(body);
        }
        let shape = Self::shape_of(name).ok_or_else(|| {
            DecodeError::at(root.key("type"), ErrorKind::UnknownType(name.to_owned()))
        })?;
        let member_at = match shape {
            Shape::Flat => Some(0),
            Shape::Payload => scan.payload_at,
            Shape::Event => scan.event_at,
        };
        match member_at {
            Some(at) => {
                r.seek(at);
                Self::decode_body(name, Some(&mut r))
            }
            None => Self::decode_body(name, None),
        }
    }

    /// Reads the top-level keys: the (last) `type`, and where `payload` and `event` start.
    /// A body that follows `type` is decoded on the way, as the TS client orders its keys.
    fn scan_top_level<'a>(r: &mut Reader<'a>) -> Result<TopLevel<'a>, DecodeError> {
        let root = Path::Root;
        let mut scan = TopLevel::default();
        r.read_map(root, |r, key| {
            match key {
                "type" => scan.name = Some(r.read_str(root.key("type"))?),
                "payload" | "event" => {
                    let at = r.position();
                    if key == "payload" {
                        scan.payload_at = Some(at);
                    } else {
                        scan.event_at = Some(at);
                    }
                    match scan.name.and_then(|n| Some((n, Self::shape_of(n)?))) {
                        Some((name, shape)) if shape.member() == Some(key) => {
                            scan.body = Some((name, Self::decode_body(name, Some(r))?));
                        }
                        _ => r.skip(root.key(key))?,
                    }
                }
                _ => r.skip(root.key(key))?,
            }
            Ok(())
        })?;
        Ok(scan)
    }

    /// Whether clients send this type (PROTOCOL.md §4.18); server→client and cluster-internal
    /// types arriving from a client are refused by servers.
    pub fn sent_by_clients(&self) -> bool {
        matches!(
            self,
            Self::Auth(_)
                | Self::DeviceHello(_)
                | Self::ClientOp(_)
                | Self::OpBatch(_)
                | Self::Batch(_)
                | Self::SyncInit(_)
                | Self::MerkleReqBucket(_)
                | Self::OrMapSyncInit(_)
                | Self::OrMapMerkleReqBucket(_)
                | Self::OrMapDiffRequest(_)
                | Self::OrMapPushDiff(_)
                | Self::ClientApplyAck(_)
                | Self::QuerySub(_)
                | Self::QueryUnsub(_)
                | Self::QuerySyncInit(_)
                | Self::TopicSub(_)
                | Self::TopicUnsub(_)
                | Self::TopicPub(_)
                | Self::LockRequest(_)
                | Self::LockRelease(_)
                | Self::CounterRequest(_)
                | Self::CounterSync(_)
                | Self::Ping(_)
                | Self::PartitionMapRequest(_)
                | Self::EntryProcess(_)
                | Self::EntryProcessBatch(_)
                | Self::RegisterResolver(_)
                | Self::UnregisterResolver(_)
                | Self::ListResolvers(_)
                | Self::JournalRead(_)
                | Self::JournalSubscribe(_)
                | Self::JournalUnsubscribe(_)
                | Self::Search(_)
                | Self::SearchSub(_)
                | Self::SearchUnsub(_)
                | Self::HybridSearch(_)
                | Self::HybridSearchSub(_)
                | Self::HybridSearchUnsub(_)
                | Self::VectorSearch(_)
                | Self::SqlQuery(_)
                | Self::HybridQuerySubscribe(_)
                | Self::HybridQueryUnsubscribe(_)
        )
    }

    /// This message as one MsgPack frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(128);
        self.encode_into(&mut w);
        w.into_bytes()
    }
}

/// Decodes a frame holding exactly one `T` with no `type` field, such as the
/// `POST /sync` bodies of [`http`].
pub fn decode_standalone<T: Wire>(frame: &[u8], limits: &Limits) -> Result<T, DecodeError> {
    let mut r = Reader::new(frame, limits)?;
    let value = T::decode(&mut r, Path::Root)?;
    r.finish()?;
    Ok(value)
}

/// Encodes a value with no `type` field (the counterpart of [`decode_standalone`]).
pub fn encode_standalone<T: Wire>(value: &T) -> Vec<u8> {
    let mut w = Writer::with_capacity(128);
    value.encode(&mut w);
    w.into_bytes()
}

impl Batch {
    /// The inner frames of an inbound `BATCH`: each a 4-byte big-endian length followed by
    /// that many bytes. `count` is advisory and ignored; a truncated item or more than
    /// [`BATCH_ITEMS_MAX`] items is an error.
    pub fn frames(&self) -> Result<Vec<&[u8]>, DecodeError> {
        let at = Path::Root;
        let data_at = at.key("data");
        let mut rest = self.data.0.as_slice();
        let mut frames = Vec::new();
        while !rest.is_empty() {
            if frames.len() == BATCH_ITEMS_MAX {
                return Err(DecodeError::at(
                    data_at,
                    ErrorKind::TooLong {
                        len: frames.len() + 1,
                        max: BATCH_ITEMS_MAX,
                    },
                )
                .in_message("BATCH"));
            }
            let truncated = || DecodeError::at(data_at, ErrorKind::Truncated).in_message("BATCH");
            let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
            let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| truncated())?;
            if tail.len() < len {
                return Err(truncated());
            }
            let (frame, tail) = tail.split_at(len);
            frames.push(frame);
            rest = tail;
        }
        Ok(frames)
    }
}

/// `{p, n}` (schema, fixtures) or `{positive, negative}` (the TS `CounterManager`); both
/// spellings are written so that either reader finds its keys (PROTOCOL.md §9 item 1).
impl Wire for PnCounter {
    fn decode(r: &mut Reader<'_>, at: Path<'_>) -> Result<Self, DecodeError> {
        let (mut p, mut n) = (None, None);
        r.read_map(at, |r, k| {
            match k {
                "p" | "positive" => p = Some(BTreeMap::<String, f64>::decode(r, at.key(k))?),
                "n" | "negative" => n = Some(BTreeMap::<String, f64>::decode(r, at.key(k))?),
                _ => r.skip(at.key(k))?,
            }
            Ok(())
        })?;
        let missing = |key| DecodeError::at(at.key(key), ErrorKind::MissingField);
        let p = p.ok_or_else(|| missing("p"))?;
        let n = n.ok_or_else(|| missing("n"))?;
        PnCounter::from_parts(p, n)
            .map_err(|e| DecodeError::at(at, ErrorKind::Invalid(e.to_string())))
    }

    fn encode(&self, w: &mut Writer) {
        w.map_header(4);
        for (key, totals) in [
            ("p", self.positive()),
            ("n", self.negative()),
            ("positive", self.positive()),
            ("negative", self.negative()),
        ] {
            w.str(key);
            totals.encode(w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::hex;
    use super::*;
    use enums::WriteConcern;
    use messages::{OpAck, Ping};

    /// PROTOCOL.md §1.8: the byte examples, decoded and (for ours) encoded exactly.
    #[test]
    fn reference_bytes() {
        let limits = Limits::default();
        let ts_ping = hex("de0002a474797065a450494e47a974696d657374616d70cb4278bcfe56800000");
        let ping = Message::decode(&ts_ping, &limits).unwrap();
        assert_eq!(
            ping,
            Message::Ping(Ping {
                timestamp: 1_700_000_000_000
            })
        );
        assert_eq!(
            ping.encode(),
            hex("82a474797065a450494e47a974696d657374616d70cf0000018bcfe56800")
        );
        assert_eq!(
            Message::AuthRequired(AuthRequired {}).encode(),
            hex("81a474797065ad415554485f5245515549524544")
        );
        let ack = Message::OpAck(OpAck {
            last_id: "7".into(),
            achieved_level: Some(WriteConcern::Applied),
            results: None,
        });
        assert_eq!(
            ack.encode(),
            hex(
                "82a474797065a64f505f41434ba77061796c6f616482a66c6173744964a137ad61636869657665644c6576656ca74150504c494544"
            )
        );
        let apply = hex("de0002a474797065b0434c49454e545f4150504c595f41434ba6637572736f722a");
        assert_eq!(
            Message::decode(&apply, &limits).unwrap(),
            Message::ClientApplyAck(ClientApplyAck { cursor: 42 })
        );
    }

    #[test]
    fn type_may_sit_anywhere_and_unknown_keys_are_ignored() {
        let mut w = Writer::new();
        w.map_header(3);
        w.str("payload");
        w.map_header(2);
        w.str("queryId");
        w.str("q1");
        w.str("extra");
        w.bool(true);
        w.str("also-extra");
        w.nil();
        w.str("type");
        w.str("QUERY_UNSUB");
        let msg = Message::decode(w.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(
            msg,
            Message::QueryUnsub(QueryRef {
                query_id: "q1".into()
            })
        );
    }

    #[test]
    fn the_last_type_wins_and_payload_is_found_beside_an_event() {
        // {payload:{queryId:"q"}, event:{}, type:"QUERY_UNSUB"}
        let mut w = Writer::new();
        w.map_header(3);
        w.str("payload");
        w.map_header(1);
        w.str("queryId");
        w.str("q");
        w.str("event");
        w.map_header(0);
        w.str("type");
        w.str("QUERY_UNSUB");
        let msg = Message::decode(w.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(
            msg,
            Message::QueryUnsub(QueryRef {
                query_id: "q".into()
            })
        );
        // {type:"TOPIC_SUB", payload:{topic:"q", queryId:"q"}, type:"QUERY_UNSUB"}
        let mut w = Writer::new();
        w.map_header(3);
        w.str("type");
        w.str("TOPIC_SUB");
        w.str("payload");
        w.map_header(2);
        w.str("topic");
        w.str("q");
        w.str("queryId");
        w.str("q");
        w.str("type");
        w.str("QUERY_UNSUB");
        let msg = Message::decode(w.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(msg.type_name(), "QUERY_UNSUB");
    }

    #[test]
    fn flat_messages_may_put_type_last() {
        let mut w = Writer::new();
        w.map_header(2);
        w.str("timestamp");
        w.f64(5.0);
        w.str("type");
        w.str("PING");
        let msg = Message::decode(w.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(msg, Message::Ping(Ping { timestamp: 5 }));
    }

    /// A value nested to the depth ceiling inside a payload that comes before `type` is
    /// skipped, then decoded after seeking back, on a 2 MiB stack in any profile.
    #[test]
    fn deep_payload_before_type_fits_a_small_stack() {
        let handle = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(|| {
                let mut w = Writer::new();
                w.map_header(2);
                w.str("payload");
                w.map_header(2);
                w.str("topic");
                w.str("t");
                w.str("data");
                // Root map, payload map, then nested arrays up to the ceiling.
                for _ in 0..msgpack::MAX_DEPTH_CEILING - 2 {
                    w.array_header(1);
                }
                w.nil();
                w.str("type");
                w.str("TOPIC_PUB");
                let limits = Limits {
                    max_depth: usize::MAX,
                    ..Limits::default()
                };
                Message::decode(w.as_bytes(), &limits).map(|m| m.type_name())
            })
            .unwrap();
        assert_eq!(handle.join().unwrap(), Ok("TOPIC_PUB"));
    }

    #[test]
    fn type_errors_are_precise() {
        let limits = Limits::default();
        let err = Message::decode(&hex("81a474797065a3464f4f"), &limits).unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::UnknownType("FOO".into()));
        let err = Message::decode(&hex("80"), &limits).unwrap_err();
        assert_eq!(
            (err.field(), err.kind().clone()),
            ("type", ErrorKind::MissingType)
        );
        let err = Message::decode(&hex("90"), &limits).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::WrongType { .. }));
        // {type: QUERY_UNSUB, payload: {}}
        let err = Message::decode(
            &hex("82a474797065ab51554552595f554e535542a77061796c6f616480"),
            &limits,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "QUERY_UNSUB: field payload.queryId: required field is missing"
        );
    }

    #[test]
    fn optional_payload_round_trips_absent_and_present() {
        for body in [
            None,
            Some(PartitionMapRequest {
                current_version: Some(3),
            }),
        ] {
            let msg = Message::PartitionMapRequest(body);
            assert_eq!(Message::decode(&msg.encode(), &Limits::default()), Ok(msg));
        }
    }

    #[test]
    fn batch_frames_are_split_and_bounded() {
        let ping = Message::Ping(Ping { timestamp: 1 }).encode();
        let mut data = Vec::new();
        for _ in 0..2 {
            data.extend_from_slice(&u32::try_from(ping.len()).unwrap().to_be_bytes());
            data.extend_from_slice(&ping);
        }
        let batch = Batch {
            count: 99,
            data: Bin(data.clone()),
        };
        assert_eq!(
            batch.frames().unwrap(),
            vec![ping.as_slice(), ping.as_slice()]
        );
        data.pop();
        let truncated = Batch {
            count: 2,
            data: Bin(data),
        };
        assert_eq!(
            *truncated.frames().unwrap_err().kind(),
            ErrorKind::Truncated
        );
        let many = Batch {
            count: 0,
            data: Bin(vec![0; 4 * (BATCH_ITEMS_MAX + 1)]),
        };
        assert!(matches!(
            many.frames().unwrap_err().kind(),
            ErrorKind::TooLong { .. }
        ));
    }

    #[test]
    fn counter_state_reads_both_spellings_and_writes_both() {
        let mut c = PnCounter::new();
        c.add("a", 2.0).unwrap();
        c.add("b", -1.0).unwrap();
        let msg = Message::CounterUpdate(CounterState {
            name: "hits".into(),
            state: c,
        });
        let bytes = msg.encode();
        for key in ["positive", "negative"] {
            assert!(bytes.windows(key.len()).any(|w| w == key.as_bytes()));
        }
        assert_eq!(Message::decode(&bytes, &Limits::default()), Ok(msg));
    }
}
