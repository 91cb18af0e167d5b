/**
 * @topgun-rs/client — module map:
 *   client.ts          TopGunClient: the driver (memory replica, storage, socket, timers)
 *   maps.ts            TopGunMap (LWW) and TopGunORMap handles
 *   sync/engine.ts     the sans-IO sync state machine; sync/backoff.ts reconnect delays
 *   sync/http-engine.ts  the sans-IO machine of the HTTP transport (POST /sync polling)
 *   transport.ts       WebSocket driver; http-transport.ts the fetch driver of POST /sync
 *   crdt/              HLC, LWW-Map, OR-Map, PN counter, Merkle tree, hashes, predicates
 *   storage/           StorageAdapter, IndexedDBStorage, MemoryStorage, the Persister
 *   features/          live queries, topics, locks, counters, the event journal, SQL
 *   codec.ts           msgpackr framing; protocol.ts message shapes
 */
export { TopGunClient } from './client.js';
export type { TopGunClientOptions, SyncStatus, WriteAck, BackpressureOptions, TokenProvider, WebSocketFactory, WebSocketLike, ClientEvents, FetchLike, SqlResult } from './client.js';
export { TopGunMap, TopGunORMap } from './maps.js';
export type { WriteOptions, WriteResult, MapChange } from './maps.js';
export { QueryHandle } from './features/query.js';
export type { QueryOptions, QueryRow, QueryDelta, ChangeType } from './features/query.js';
export { TopicHandle } from './features/topic.js';
export type { TopicMessage } from './features/topic.js';
export { LockHandle } from './features/lock.js';
export { CounterHandle } from './features/counter.js';
export { JournalManager } from './features/journal.js';
export type { JournalEvent, JournalEventType, JournalReadOptions, JournalSubscribeOptions } from './features/journal.js';
export { MemoryStorage } from './storage/memory.js';
export { IndexedDBStorage } from './storage/indexeddb.js';
export type { IndexedDBStorageOptions } from './storage/indexeddb.js';
export type { StorageAdapter, Commit, Snapshot, StoredOp, StoredRecord } from './storage/types.js';
export { SyncEngine } from './sync/engine.js';
export type { SyncState, Effect, Replica, EngineOptions, MapKind } from './sync/engine.js';
export { HttpSyncEngine, NEVER_SYNCED, toHttpQuery } from './sync/http-engine.js';
export type { HttpEngineOptions, HttpReplica } from './sync/http-engine.js';
export type { HttpEffect } from './sync/machine.js';
export type { SyncMachine } from './sync/machine.js';
export { httpSyncUrl } from './http-transport.js';
export { backoffDelay, DEFAULT_BACKOFF } from './sync/backoff.js';
export type { BackoffOptions } from './sync/backoff.js';
export { HLC, compareTimestamps, timestampToString, parseTimestamp } from './crdt/hlc.js';
export type { Timestamp } from './crdt/hlc.js';
export { LWWMap, lwwItemHash } from './crdt/lww-map.js';
export type { LWWRecord } from './crdt/lww-map.js';
export { ORMap, orEntryHash } from './crdt/or-map.js';
export type { ORMapRecord, ORMapEntry } from './crdt/or-map.js';
export { PNCounter } from './crdt/pn-counter.js';
export { MerkleTree } from './crdt/merkle.js';
export { fnv1a, mix, combine, partitionId } from './crdt/hash.js';
export { compileFilter, PredicateError } from './crdt/predicate.js';
export type { PredicateNode, SortField, QueryFilter } from './crdt/predicate.js';
export { encodeMessage, decodeMessage } from './codec.js';
export { BackpressureError, OpRejectedError, TimeoutError, InvalidArgumentError, SqlError } from './errors.js';
export type { WriteConcern, ClientOp, WireQuery, HttpSyncRequest, HttpSyncResponse, HttpQuery, HttpOpResult } from './protocol.js';
