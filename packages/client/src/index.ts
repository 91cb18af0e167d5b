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
 *   sync/state.ts      TopGun's SyncState and the engine states' mapping to it
 *   crdt/predicates.ts the Predicates builder; write-concern.ts WriteConcern levels
 *   codec.ts           msgpackr framing; protocol.ts message shapes
 *
 * Names and shapes follow TopGun's own client (docs/migrating-from-topgun-client.md), with
 * our earlier names exported beside them.
 */
export { TopGunClient } from './client.js';
export type {
  TopGunClientOptions,
  SyncStatus,
  WriteAck,
  BackpressureOptions,
  TokenProvider,
  WebSocketFactory,
  WebSocketLike,
  ClientEvents,
  FetchLike,
  SqlResult,
  ClusterOptions,
  BackpressureEvent,
  BackpressureStatus,
  BackpressureEventData,
  MergeRejection,
} from './client.js';
/** TopGun's name for the client's options. */
export type { TopGunClientOptions as TopGunClientConfig } from './client.js';
export { SyncState } from './sync/state.js';
export type { StateChangeEvent, RecordSyncState } from './sync/state.js';
export { Predicates } from './crdt/predicates.js';
export { WriteConcern } from './write-concern.js';
export { TopGunMap, TopGunORMap } from './maps.js';
export type { WriteOptions, WriteResult, MapChange, WriteArg, Written } from './maps.js';
/** TopGun's names for the map handles. */
export type { TopGunMap as LWWMapHandle, TopGunORMap as ORMapHandle } from './maps.js';
export { QueryHandle } from './features/query.js';
export type {
  QueryOptions,
  QueryFilter,
  QueryRow,
  QueryResultItem,
  QueryDelta,
  ChangeType,
  ChangeEvent,
  CursorStatus,
  PaginationInfo,
} from './features/query.js';
export { TopicHandle } from './features/topic.js';
export type { TopicMessage, TopicCallback, TopicContext } from './features/topic.js';
export { LockHandle } from './features/lock.js';
export { CounterHandle } from './features/counter.js';
/** TopGun's names for the lock, counter and topic handles. */
export type { LockHandle as DistributedLock } from './features/lock.js';
export type { CounterHandle as PNCounterHandle } from './features/counter.js';
export { JournalManager, EventJournalReader } from './features/journal.js';
export type {
  JournalEvent,
  JournalEventType,
  JournalReadOptions,
  JournalSubscribeOptions,
  EventJournalEvent,
  EventJournalSubscribeOptions,
} from './features/journal.js';
export { MemoryStorage } from './storage/memory.js';
export { IndexedDBStorage } from './storage/indexeddb.js';
/** TopGun's name for the IndexedDB storage adapter (from its adapters package). */
export { IndexedDBStorage as IDBAdapter } from './storage/indexeddb.js';
export type { IndexedDBStorageOptions } from './storage/indexeddb.js';
export type { StorageAdapter, Commit, Snapshot, StoredOp, StoredRecord } from './storage/types.js';
export { SyncEngine } from './sync/engine.js';
export type { EngineState, Effect, Replica, EngineOptions, MapKind } from './sync/engine.js';
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
export type { PredicateNode, PredicateOp, SortField } from './crdt/predicate.js';
export { encodeMessage, decodeMessage } from './codec.js';
export { BackpressureError, OpRejectedError, TimeoutError, InvalidArgumentError, SqlError, NotSupportedError, NoWebSocketError, AuthFailedError } from './errors.js';
export type { ClientOp, WireQuery, HttpSyncRequest, HttpSyncResponse, HttpQuery, HttpOpResult } from './protocol.js';
