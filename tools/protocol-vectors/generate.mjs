// Writes the client→server protocol vectors (PROTOCOL.md §4, §8) into
// crates/topgun-core/tests/vectors/{c2s,c2s-invalid}/ as NAME.msgpack + NAME.json.
//
// Every frame is encoded exactly as the TopGun TS client encodes it: the
// client's `serialize()` (strip undefined, then msgpackr `pack`: plain objects
// as map16, non-int32/uint32 numbers as float64). Deterministic: fixed inputs,
// no clocks, no randomness. Idempotent: both output folders are wiped first.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { unpack } from 'msgpackr';
import {
  VECTORS_DIR,
  normalizeBytes,
  parseVectorJson,
  serialize,
  stripUndefined,
  toVectorJson,
} from './lib.mjs';

const C2S_DIR = path.join(VECTORS_DIR, 'c2s');
const INVALID_DIR = path.join(VECTORS_DIR, 'c2s-invalid');

// ---------------------------------------------------------------------------
// Shared values

/** HLC timestamps. `millis` is a JS number ≥ 2^32, so msgpackr writes float64. */
const TS1 = { millis: 1700000000000, counter: 1, nodeId: 'node-1' };
const TS2 = { millis: 1700000000001, counter: 0, nodeId: 'node-2' };
const TS3 = { millis: 1700000000002, counter: 3, nodeId: '5f0c7a2e-9a1b-4c3d-8e2f-0123456789ab' };
const tagOf = (ts) => `${ts.millis}:${ts.counter}:${ts.nodeId}`;

/** A record value using every MsgPack kind the client can produce from JSON-ish data. */
const RICH_VALUE = {
  name: 'Zoë Ünicode 🚀 東京',
  age: 42,
  balance: -1250, // int16
  debt: -70000, // int32
  tiny: -5, // negative fixint
  score: 3.5, // float64
  ratio: 0.1,
  big: 2 ** 40, // ≥ 2^32 → float64 on the wire
  veryNegative: -(2 ** 31) - 1, // < -2^31 → float64
  maxU32: 4294967295, // uint32
  active: true,
  deleted: false,
  nickname: null,
  empty: '',
  tags: ['admin', 'ops', '日本語', '👋'],
  address: { city: 'Zürich', zip: '8001', geo: { lat: 47.3769, lng: 8.5417 } },
  history: [
    { at: 1700000000000, delta: -5 },
    { at: 1700000000001, delta: 2.25 },
  ],
  matrix: [[1, 2], [3, [4, null]], []],
  'ключ 🔑': { nested: { deeper: { deepest: 'ok' } } },
};

/** Little-endian f32 bytes, the wire form of a query vector (§4.15). */
function f32le(values) {
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => view.setFloat32(i * 4, v, true));
  return out;
}

/**
 * A client op-log entry as the TS SyncEngine stores and later sends it in
 * OP_BATCH: unused CRDT fields are `undefined` (stripped by serialize), the
 * entry carries `timestamp` + `synced`, and the numeric op-log id is assigned
 * after the append, as a decimal string — so it is the last key.
 */
function opLogEntry({ id, mapName, opType, key, record, orRecord, orTag, timestamp }) {
  const entry = {
    mapName,
    opType,
    key,
    record,
    orRecord,
    orTag,
    timestamp,
    synced: false,
  };
  entry.id = id;
  return entry;
}

const OPS = {
  put: opLogEntry({
    id: '17',
    mapName: 'users',
    opType: 'PUT',
    key: 'user:alice',
    record: { value: RICH_VALUE, timestamp: TS1, ttlMs: undefined },
    timestamp: TS1,
  }),
  putTtl: opLogEntry({
    id: '18',
    mapName: 'sessions',
    opType: 'PUT',
    key: 'sess-👤-1',
    record: { value: { user: 'alice', scopes: ['read', 'write'] }, timestamp: TS2, ttlMs: 86400000 },
    timestamp: TS2,
  }),
  remove: opLogEntry({
    id: '19',
    mapName: 'users',
    opType: 'REMOVE',
    key: 'user:bob',
    record: { value: null, timestamp: TS2 },
    timestamp: TS2,
  }),
  orAdd: opLogEntry({
    id: '20',
    mapName: 'todos',
    opType: 'OR_ADD',
    key: 'list-1',
    orRecord: { value: { title: 'Buy milk 🥛', done: false, qty: 2 }, timestamp: TS1, tag: tagOf(TS1), ttlMs: undefined },
    timestamp: TS1,
  }),
  orAddTtl: opLogEntry({
    id: '21',
    mapName: 'todos',
    opType: 'OR_ADD',
    key: 'list-1',
    orRecord: { value: 'temporary', timestamp: TS3, tag: tagOf(TS3), ttlMs: 30000 },
    timestamp: TS3,
  }),
  orRemove: opLogEntry({
    id: '22',
    mapName: 'todos',
    opType: 'OR_REMOVE',
    key: 'list-1',
    orTag: tagOf(TS1),
    timestamp: TS2,
  }),
};

/** A predicate tree that uses every op of PROTOCOL.md §5.2 at least once. */
const PREDICATE_ALL_OPS = {
  op: 'and',
  children: [
    { op: 'eq', attribute: 'status', value: 'active' },
    { op: 'neq', attribute: 'role', value: null },
    { op: 'gt', attribute: 'age', value: 18 },
    { op: 'gte', attribute: 'score', value: 3.5 },
    { op: 'lt', attribute: 'balance', value: -1250 },
    { op: 'lte', attribute: 'big', value: 2 ** 40 },
    { op: 'like', attribute: 'name', value: 'Zo%' },
    { op: 'regex', attribute: 'email', value: '^[a-z]+@example\\.com$' },
    { op: 'in', attribute: 'country', value: ['CH', 'DE', 'JP'] },
    { op: 'between', attribute: 'age', value: [18, 65] },
    { op: 'isNull', attribute: 'deletedAt' },
    { op: 'isNotNull', attribute: 'address.city' },
    { op: 'containsAll', attribute: 'tags', value: ['admin', 'ops'] },
    { op: 'containsAny', attribute: 'tags', value: ['日本語', '👋'] },
    { op: 'startsWith', attribute: 'name', value: 'Zo' },
    { op: 'endsWith', attribute: 'email', value: '.com' },
    {
      op: 'or',
      children: [
        { op: 'contains', attribute: 'bio', value: 'rust' },
        { op: 'match', attribute: 'bio', query: 'distributed systems', matchOptions: { minScore: 0.5, boost: 2, operator: 'and', fuzziness: 1 } },
        { op: 'matchPhrase', attribute: 'bio', query: 'conflict free', slop: 2 },
        { op: 'matchPrefix', attribute: 'title', query: 'top', prefix: 'top', maxExpansions: 50 },
      ],
    },
    { op: 'not', children: [{ op: 'eq', attribute: 'banned', value: true }] },
    { op: 'or', children: [] },
  ],
};

const SMALL_PREDICATE = {
  op: 'and',
  children: [
    { op: 'eq', attribute: 'category', value: 'books' },
    { op: 'gte', attribute: 'price', value: 9.99 },
  ],
};

const CURSOR = 'eyJzb3J0VmFsdWVzIjpbeyJmaWVsZCI6ImNyZWF0ZWRBdCIsInZhbHVlIjoxNzAwMDAwMDAwMDAwLCJkaXJlY3Rpb24iOiJkZXNjIn1dLCJsYXN0S2V5IjoidXNlcjphbGljZSJ9';

/** QUERY_SUB as the TS client builds it: the filter (incl. `fields`) goes into `query`. */
function querySub(queryId, mapName, filter) {
  return { type: 'QUERY_SUB', payload: { queryId, mapName, query: { ...filter }, fields: filter.fields } };
}

/** The §1.3 inbound BATCH form: no header, each item = big-endian u32 length + frame. */
function beBatch(frames) {
  const parts = [];
  for (const frame of frames) {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(frame.length, 0);
    parts.push(len, Buffer.from(frame));
  }
  return new Uint8Array(Buffer.concat(parts));
}

function nestedArrays(depth, leaf) {
  let v = leaf;
  for (let i = 0; i < depth; i += 1) v = [v];
  return v;
}

// ---------------------------------------------------------------------------
// Valid client → server frames

const VALID = {
  // §4.1 handshake
  AUTH: { type: 'AUTH', token: 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl', deviceToken: 'd-01.9f3a7c', protocolVersion: undefined },
  AUTH__token_only: { type: 'AUTH', token: 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2ln', deviceToken: undefined },
  DEVICE_HELLO: { type: 'DEVICE_HELLO', deviceToken: 'd-01.9f3a7c' },
  DEVICE_HELLO__first_connect: { type: 'DEVICE_HELLO', deviceToken: undefined },

  // §4.3 writes (CLIENT_OP is never sent by the TS client; shape per ClientOp)
  CLIENT_OP__lww_put: { type: 'CLIENT_OP', payload: { id: '1', mapName: 'users', key: 'user:alice', opType: 'PUT', record: { value: RICH_VALUE, timestamp: TS1 } } },
  CLIENT_OP__lww_put_ttl: { type: 'CLIENT_OP', payload: { id: '2', mapName: 'sessions', key: 's1', opType: 'PUT', record: { value: 'x', timestamp: TS2, ttlMs: 60000 } } },
  CLIENT_OP__lww_remove: { type: 'CLIENT_OP', payload: { id: '3', mapName: 'users', key: 'user:bob', opType: 'REMOVE', record: { value: null, timestamp: TS2 } } },
  CLIENT_OP__or_add: { type: 'CLIENT_OP', payload: { id: '4', mapName: 'todos', key: 'list-1', opType: 'OR_ADD', orRecord: { value: { title: 'Buy milk 🥛', qty: 2 }, timestamp: TS1, tag: tagOf(TS1), ttlMs: 30000 } } },
  CLIENT_OP__or_remove: { type: 'CLIENT_OP', payload: { id: '5', mapName: 'todos', key: 'list-1', opType: 'OR_REMOVE', orTag: tagOf(TS1) } },
  CLIENT_OP__write_concern: { type: 'CLIENT_OP', payload: { id: '6', mapName: 'orders', key: 'o-9', opType: 'PUT', record: { value: { total: 3.5 }, timestamp: TS3 }, writeConcern: 'PERSISTED', timeout: 5000 } },
  OP_BATCH: { type: 'OP_BATCH', payload: { ops: [OPS.put, OPS.putTtl, OPS.remove, OPS.orAdd, OPS.orAddTtl, OPS.orRemove] } },
  OP_BATCH__empty: { type: 'OP_BATCH', payload: { ops: [] } },
  OP_BATCH__write_concern: { type: 'OP_BATCH', payload: { ops: [OPS.put], writeConcern: 'REPLICATED', timeout: 2 ** 40 } },

  // §4.4 LWW Merkle sync
  SYNC_INIT: { type: 'SYNC_INIT', mapName: 'users', lastSyncTimestamp: 1700000000000 },
  SYNC_INIT__initial: { type: 'SYNC_INIT', mapName: 'users', lastSyncTimestamp: 0 },
  MERKLE_REQ_BUCKET__root: { type: 'MERKLE_REQ_BUCKET', payload: { mapName: 'users', path: '' } },
  MERKLE_REQ_BUCKET__leaf: { type: 'MERKLE_REQ_BUCKET', payload: { mapName: 'users', path: '872' } },

  // §4.5 OR-Map sync and confirmed apply
  ORMAP_SYNC_INIT: { type: 'ORMAP_SYNC_INIT', mapName: 'todos', rootHash: 2476720979, bucketHashes: { 6: 3202217666, 8: 1458996198 }, lastSyncTimestamp: 1700000000001, claimedEpoch: 17 },
  ORMAP_SYNC_INIT__empty: { type: 'ORMAP_SYNC_INIT', mapName: 'todos', rootHash: 0, bucketHashes: {}, lastSyncTimestamp: 0, claimedEpoch: 0 },
  ORMAP_MERKLE_REQ_BUCKET: { type: 'ORMAP_MERKLE_REQ_BUCKET', payload: { mapName: 'todos', path: 'a3' } },
  ORMAP_DIFF_REQUEST: { type: 'ORMAP_DIFF_REQUEST', payload: { mapName: 'todos', keys: ['list-1', 'list-2', 'liste-ü'] } },
  ORMAP_PUSH_DIFF: {
    type: 'ORMAP_PUSH_DIFF',
    payload: {
      mapName: 'todos',
      entries: [
        {
          key: 'list-1',
          records: [
            { value: { title: 'Buy milk 🥛', done: false, qty: 2 }, timestamp: TS1, tag: tagOf(TS1) },
            { value: 'temporary', timestamp: TS3, tag: tagOf(TS3), ttlMs: 30000 },
          ],
          tombstones: [tagOf(TS2), '1699999999999:0:node-9'],
        },
        { key: 'list-2', records: [], tombstones: [tagOf(TS2), '1699999999999:0:node-9'] },
      ],
    },
  },
  CLIENT_APPLY_ACK: { type: 'CLIENT_APPLY_ACK', cursor: 42 },
  CLIENT_APPLY_ACK__large_cursor: { type: 'CLIENT_APPLY_ACK', cursor: 2 ** 40 },

  // §4.7 live queries (§5)
  QUERY_SUB__where: querySub('q-where', 'users', { where: { status: 'active', age: 42, verified: true }, limit: 10 }),
  QUERY_SUB__predicate_all_ops: querySub('q-pred', 'users', { predicate: PREDICATE_ALL_OPS, limit: 50 }),
  QUERY_SUB__sort_array: querySub('q-sort-a', 'users', {
    predicate: SMALL_PREDICATE,
    sort: [{ field: 'createdAt', direction: 'desc' }, { field: 'name', direction: 'asc' }],
    limit: 20,
  }),
  QUERY_SUB__sort_record: querySub('q-sort-r', 'users', { where: { status: 'active' }, sort: { createdAt: 'desc', name: 'asc' }, limit: 20 }),
  QUERY_SUB__group_by_aggregations: querySub('q-agg', 'products', {
    where: { inStock: true },
    groupBy: ['category', 'brand'],
    aggregations: [
      { func: 'count' },
      { func: 'sum', field: 'price' },
      { func: 'min', field: 'price' },
      { func: 'max', field: 'price' },
      { func: 'avg', field: 'rating' },
    ],
  }),
  QUERY_SUB__cursor: querySub('q-page-2', 'users', { sort: [{ field: 'createdAt', direction: 'desc' }], limit: 25, cursor: CURSOR }),
  QUERY_SUB__fields: querySub('q-proj', 'users', { where: { status: 'active' }, fields: ['name', 'age', 'address'], limit: 100 }),
  QUERY_SUB__empty_query: querySub('q-all', 'users', {}),
  QUERY_UNSUB: { type: 'QUERY_UNSUB', payload: { queryId: 'q-where' } },
  QUERY_SYNC_INIT: { type: 'QUERY_SYNC_INIT', payload: { queryId: 'q-proj', rootHash: 3716192681 } },

  // §4.8 topics
  TOPIC_SUB: { type: 'TOPIC_SUB', payload: { topic: 'chat/room-1' } },
  TOPIC_UNSUB: { type: 'TOPIC_UNSUB', payload: { topic: 'chat/room-1' } },
  TOPIC_PUB: { type: 'TOPIC_PUB', payload: { topic: 'chat/room-1', data: { text: 'Hallo 👋 — ça va?', from: 'alice', at: 1700000000000, meta: RICH_VALUE } } },
  TOPIC_PUB__scalar_data: { type: 'TOPIC_PUB', payload: { topic: 'metrics:cpu', data: 3.5 } },
  TOPIC_PUB__null_data: { type: 'TOPIC_PUB', payload: { topic: 'events.ping', data: null } },

  // §4.9 locks
  LOCK_REQUEST: { type: 'LOCK_REQUEST', payload: { requestId: 'lock-req-1', name: 'orders/checkout:42', ttl: 10000 } },
  LOCK_REQUEST__no_ttl: { type: 'LOCK_REQUEST', payload: { requestId: 'lock-req-2', name: 'jobs.nightly', ttl: undefined } },
  LOCK_RELEASE: { type: 'LOCK_RELEASE', payload: { requestId: 'lock-rel-1', name: 'orders/checkout:42', fencingToken: 3 } },

  // §4.10 PN counters (§9 item 1: both spellings reach the server)
  COUNTER_REQUEST: { type: 'COUNTER_REQUEST', payload: { name: 'page-views' } },
  COUNTER_SYNC__p_n: { type: 'COUNTER_SYNC', payload: { name: 'page-views', state: { p: { 'node-1': 5, 'node-2': 2.5 }, n: { 'node-1': 1 } } } },
  COUNTER_SYNC__positive_negative: { type: 'COUNTER_SYNC', payload: { name: 'page-views', state: { positive: { 'node-1': 5, 'node-2': 2 ** 40 }, negative: {} } } },

  // §4.11 heartbeat
  PING: { type: 'PING', timestamp: 1700000000000 },

  // §4.14 cluster map
  PARTITION_MAP_REQUEST: { type: 'PARTITION_MAP_REQUEST', payload: { currentVersion: 3 } },
  PARTITION_MAP_REQUEST__no_payload: { type: 'PARTITION_MAP_REQUEST', payload: undefined },
  PARTITION_MAP_REQUEST__empty_payload: { type: 'PARTITION_MAP_REQUEST', payload: { currentVersion: undefined } },

  // §4.12 entry processors, journal, resolvers (flat)
  ENTRY_PROCESS: {
    type: 'ENTRY_PROCESS',
    requestId: 'ep-1',
    mapName: 'accounts',
    key: 'acc-1',
    processor: { name: 'increment', code: 'return { value: (value ?? 0) + args.amount };', args: { amount: 5, reason: 'bonus 🎁', big: 2 ** 40 } },
  },
  ENTRY_PROCESS_BATCH: {
    type: 'ENTRY_PROCESS_BATCH',
    requestId: 'epb-1',
    mapName: 'accounts',
    keys: ['acc-1', 'acc-2', 'acc-ü'],
    processor: { name: 'reset', code: 'return { value: 0 };', args: undefined },
  },
  JOURNAL_SUBSCRIBE: { type: 'JOURNAL_SUBSCRIBE', requestId: 'journal-1', fromSequence: '42', mapName: 'users', types: ['PUT', 'UPDATE', 'DELETE'] },
  JOURNAL_SUBSCRIBE__minimal: { type: 'JOURNAL_SUBSCRIBE', requestId: 'journal-2', fromSequence: undefined, mapName: undefined, types: undefined },
  JOURNAL_UNSUBSCRIBE: { type: 'JOURNAL_UNSUBSCRIBE', subscriptionId: 'journal-1' },
  JOURNAL_READ: { type: 'JOURNAL_READ', requestId: 'jr-1', fromSequence: '18446744073709551615', limit: 100, mapName: 'users' },
  JOURNAL_READ__minimal: { type: 'JOURNAL_READ', requestId: 'jr-2', fromSequence: '0' },
  REGISTER_RESOLVER: {
    type: 'REGISTER_RESOLVER',
    requestId: 'rr-1',
    mapName: 'users',
    resolver: { name: 'max-wins', code: 'return local.value > remote.value ? local : remote;', priority: 50, keyPattern: 'user:*' },
  },
  UNREGISTER_RESOLVER: { type: 'UNREGISTER_RESOLVER', requestId: 'ur-1', mapName: 'users', resolverName: 'max-wins' },
  LIST_RESOLVERS: { type: 'LIST_RESOLVERS', requestId: 'lr-1', mapName: 'users' },
  LIST_RESOLVERS__all_maps: { type: 'LIST_RESOLVERS', requestId: 'lr-2', mapName: undefined },

  // §4.15 search
  SEARCH: { type: 'SEARCH', payload: { requestId: 's-1', mapName: 'articles', query: 'crdt merkle sync', options: { limit: 10, minScore: 0.5, boost: { title: 2, body: 1.5 } } } },
  SEARCH__no_options: { type: 'SEARCH', payload: { requestId: 's-2', mapName: 'articles', query: 'Zürich 🚀', options: undefined } },
  SEARCH_SUB: { type: 'SEARCH_SUB', payload: { subscriptionId: 'ss-1', mapName: 'articles', query: 'rust', options: { limit: 20 } } },
  SEARCH_UNSUB: { type: 'SEARCH_UNSUB', payload: { subscriptionId: 'ss-1' } },
  HYBRID_SEARCH: {
    type: 'HYBRID_SEARCH',
    payload: {
      requestId: 'hs-1',
      mapName: 'articles',
      queryText: 'offline first',
      methods: ['exact', 'fullText', 'semantic'],
      k: 10,
      queryVector: f32le([0.25, -1.5, 3.5, 0.125]),
      predicate: SMALL_PREDICATE,
      includeValue: true,
      minScore: 0.1,
    },
  },
  HYBRID_SEARCH__text_only: { type: 'HYBRID_SEARCH', payload: { requestId: 'hs-2', mapName: 'articles', queryText: 'sync', methods: ['fullText'], k: 5 } },
  HYBRID_SEARCH_SUB: {
    type: 'HYBRID_SEARCH_SUB',
    payload: {
      subscriptionId: 'hss-1',
      mapName: 'articles',
      queryText: 'offline first',
      methods: ['fullText', 'semantic'],
      k: 10,
      queryVector: f32le([1, 0, -0.5]),
      includeValue: false,
    },
  },
  HYBRID_SEARCH_UNSUB: { type: 'HYBRID_SEARCH_UNSUB', payload: { subscriptionId: 'hss-1' } },
  VECTOR_SEARCH: {
    type: 'VECTOR_SEARCH',
    payload: {
      id: 'vs-1',
      mapName: 'embeddings',
      indexName: 'default',
      queryVector: f32le([0.25, -1.5, 3.5, 0.125]),
      k: 5,
      efSearch: 64,
      options: { includeValue: true, includeVectors: false, minScore: 0.75, filter: SMALL_PREDICATE },
    },
  },
  VECTOR_SEARCH__minimal: { type: 'VECTOR_SEARCH', payload: { id: 'vs-2', mapName: 'embeddings', queryVector: f32le([1, 2]), k: 1 } },
  SQL_QUERY: { type: 'SQL_QUERY', payload: { sql: "SELECT name, age FROM users WHERE city = 'Zürich' ORDER BY age DESC LIMIT 10", queryId: 'sql-1' } },

  // §1.3 inbound BATCH: big-endian item lengths, no count header; `count` is advisory.
  BATCH: {
    type: 'BATCH',
    count: 3,
    data: beBatch([
      serialize({ type: 'PING', timestamp: 1700000000000 }),
      serialize({ type: 'TOPIC_SUB', payload: { topic: 'chat/room-1' } }),
      serialize({ type: 'QUERY_UNSUB', payload: { queryId: 'q-where' } }),
    ]),
  },

  // §4.17 HTTP POST /sync body: top-level map without `type`.
  HTTP_SYNC_REQUEST: {
    clientId: 'client-5f0c7a2e',
    clientHlc: TS3,
    operations: [OPS.put, OPS.remove, OPS.orAdd],
    syncMaps: [{ mapName: 'users', lastSyncTimestamp: TS1 }],
    queries: [{ queryId: 'q-http', mapName: 'users', filter: { status: 'active' }, limit: 10, offset: undefined, cursor: undefined }],
    searches: [{ searchId: 'search-http', mapName: 'articles', query: 'rust', options: { limit: 5 } }],
  },
  HTTP_SYNC_REQUEST__minimal: { clientId: 'client-5f0c7a2e', clientHlc: TS1, operations: undefined },
};

// ---------------------------------------------------------------------------
// Invalid frames: the decoder must reject them, naming `expectField`
// ("" = a frame-level error where no field can be named).

const validOpBatchBytes = serialize(VALID.OP_BATCH);

const INVALID = {
  QUERY_SUB__limit_fractional: {
    frame: querySub('q-bad', 'users', { where: { status: 'active' }, limit: 10.5 }),
    reason: 'query.limit is a strict u32; msgpackr sends 10.5 as float64 (§1.5)',
    expectField: 'payload.query.limit',
  },
  SEARCH__options_limit_fractional: {
    frame: { type: 'SEARCH', payload: { requestId: 's-bad', mapName: 'articles', query: 'x', options: { limit: 10.5 } } },
    reason: 'SearchOptions.limit is a strict u32 (§1.5)',
    expectField: 'payload.options.limit',
  },
  QUERY_SYNC_INIT__negative_root_hash: {
    frame: { type: 'QUERY_SYNC_INIT', payload: { queryId: 'q-proj', rootHash: -5 } },
    reason: 'Merkle rootHash is a strict u32; -5 is a negative fixint (§1.5)',
    expectField: 'payload.rootHash',
  },
  ORMAP_SYNC_INIT__negative_root_hash: {
    frame: { type: 'ORMAP_SYNC_INIT', mapName: 'todos', rootHash: -5, bucketHashes: {}, lastSyncTimestamp: 0, claimedEpoch: 0 },
    reason: 'rootHash is a strict u32; negative values are rejected (§1.5)',
    expectField: 'rootHash',
  },
  ORMAP_SYNC_INIT__fractional_root_hash: {
    frame: { type: 'ORMAP_SYNC_INIT', mapName: 'todos', rootHash: 1.5, bucketHashes: {}, lastSyncTimestamp: 0, claimedEpoch: 0 },
    reason: 'rootHash is a strict u32; float64 1.5 is rejected (§1.5)',
    expectField: 'rootHash',
  },
  ORMAP_SYNC_INIT__fractional_bucket_hash: {
    frame: { type: 'ORMAP_SYNC_INIT', mapName: 'todos', rootHash: 7, bucketHashes: { a: 2.5 }, lastSyncTimestamp: 0, claimedEpoch: 0 },
    reason: 'bucket hashes are strict u32 (§1.5)',
    expectField: 'bucketHashes.a',
  },
  CLIENT_OP__fractional_millis: {
    frame: { type: 'CLIENT_OP', payload: { id: '1', mapName: 'users', key: 'k', opType: 'PUT', record: { value: 1, timestamp: { millis: 1.5, counter: 0, nodeId: 'node-1' } } } },
    reason: 'Timestamp.millis tolerates whole float64 only; 1.5 cannot be converted losslessly to u64 (§1.5)',
    expectField: 'payload.record.timestamp.millis',
  },
  OP_BATCH__negative_counter: {
    frame: { type: 'OP_BATCH', payload: { ops: [opLogEntry({ id: '1', mapName: 'users', opType: 'PUT', key: 'k', record: { value: 1, timestamp: { millis: 1700000000000, counter: -1, nodeId: 'node-1' } }, timestamp: TS1 })] } },
    reason: 'Timestamp.counter is u32; -1 is rejected (§1.5, §2.1)',
    expectField: 'payload.ops[0].record.timestamp.counter',
  },
  CLIENT_OP__node_id_with_colon: {
    frame: { type: 'CLIENT_OP', payload: { id: '1', mapName: 'users', key: 'k', opType: 'PUT', record: { value: 1, timestamp: { millis: 1700000000000, counter: 1, nodeId: 'node:1' } } } },
    reason: "Timestamp.nodeId must not contain ':' (it would break the millis:counter:nodeId string form, §2.1)",
    expectField: 'payload.record.timestamp.nodeId',
  },
  MISSING_TYPE: {
    frame: { payload: { queryId: 'q-where' } },
    reason: 'every message needs a string `type` discriminant (§1.7)',
    expectField: 'type',
  },
  UNKNOWN_TYPE: {
    frame: { type: 'NOT_A_MESSAGE', payload: { queryId: 'q-where' } },
    reason: 'unknown message name (§1.7)',
    expectField: 'type',
  },
  CLIENT_OP__missing_map_name: {
    frame: { type: 'CLIENT_OP', payload: { id: '1', key: 'k', opType: 'PUT', record: { value: 1, timestamp: TS1 } } },
    reason: 'ClientOp.mapName is required (§4.3)',
    expectField: 'payload.mapName',
  },
  MERKLE_REQ_BUCKET__map_name_integer: {
    frame: { type: 'MERKLE_REQ_BUCKET', payload: { mapName: 42, path: '' } },
    reason: 'mapName must be a string',
    expectField: 'payload.mapName',
  },
  QUERY_SUB__unknown_predicate_op: {
    frame: querySub('q-bad-op', 'users', { predicate: { op: 'and', children: [{ op: 'eq', attribute: 'a', value: 1 }, { op: 'fuzzy', attribute: 'name', value: 'alice' }] } }),
    reason: "'fuzzy' is not a predicate op of §5.2",
    expectField: 'payload.query.predicate.children[1].op',
  },
  NOT_A_MAP: {
    frame: ['PING', 1700000000000],
    reason: 'a frame must be a MsgPack map (§1.2, §1.7); this one is an array',
    expectField: '',
  },
  DEPTH_300: {
    frame: { type: 'TOPIC_PUB', payload: { topic: 'deep', data: nestedArrays(300, 'bottom') } },
    reason: 'MsgPack nesting depth exceeds the 256 limit (§1.2, §7.3): 300 nested arrays inside payload.data',
    expectField: '',
  },
  TRUNCATED: {
    bytes: validOpBatchBytes.subarray(0, Math.floor(validOpBatchBytes.length / 2)),
    reason: 'the valid OP_BATCH vector cut in half: unexpected end of input',
    expectField: '',
  },
};

// ---------------------------------------------------------------------------
// Writing

function resetDir(dir) {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
}

function writePair(dir, name, bytes, jsonText) {
  fs.writeFileSync(path.join(dir, `${name}.msgpack`), bytes);
  fs.writeFileSync(path.join(dir, `${name}.json`), jsonText);
}

/** Self-check: the bytes decode back to the JSON, and every map is map16 (0xde) as msgpackr emits. */
function checkValid(name, bytes, jsonText) {
  assert.equal(bytes[0], 0xde, `${name}: top-level map must be map16`);
  const decoded = normalizeBytes(unpack(bytes));
  assert.deepStrictEqual(decoded, parseVectorJson(jsonText), `${name}: bytes and JSON disagree`);
}

function main() {
  resetDir(C2S_DIR);
  resetDir(INVALID_DIR);

  for (const [name, frame] of Object.entries(VALID)) {
    const bytes = serialize(frame);
    // The JSON is written from the object the client actually packs (undefined already stripped).
    const jsonText = toVectorJson(stripUndefined(frame));
    checkValid(name, bytes, jsonText);
    writePair(C2S_DIR, name, bytes, jsonText);
  }

  for (const [name, { frame, bytes, reason, expectField }] of Object.entries(INVALID)) {
    const out = bytes ?? serialize(frame);
    writePair(INVALID_DIR, name, out, toVectorJson({ reason, expectField }));
  }

  const rel = (p) => path.relative(process.cwd(), p) || '.';
  console.log(
    `protocol-vectors: wrote ${Object.keys(VALID).length} valid pairs to ${rel(C2S_DIR)} and ` +
      `${Object.keys(INVALID).length} invalid pairs to ${rel(INVALID_DIR)}`,
  );
}

main();
