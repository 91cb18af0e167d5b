/**
 * The messages this client sends and reads (PROTOCOL.md §4). Most are `{type, payload}`; the
 * handshake, heartbeat and sync-init messages are flat. Field names and shapes follow the
 * client vectors in crates/topgun-core/tests/vectors/c2s.
 */
import type { LWWRecord } from './crdt/lww-map.js';
import type { ORMapEntry, ORMapRecord } from './crdt/or-map.js';
import type { Timestamp } from './crdt/hlc.js';
import type { PredicateNode, SortField } from './crdt/predicate.js';

export type WriteConcern = 'FIRE_AND_FORGET' | 'MEMORY' | 'APPLIED' | 'REPLICATED' | 'PERSISTED';

/** One op-log entry as it goes out in `OP_BATCH.payload.ops` (§4.3 ClientOp). */
export interface ClientOp {
  id: string;
  mapName: string;
  key: string;
  opType: 'PUT' | 'REMOVE' | 'OR_ADD' | 'OR_REMOVE';
  record?: LWWRecord;
  orRecord?: ORMapRecord;
  orTag?: string;
  writeConcern?: WriteConcern;
  timeout?: number;
}

export interface WireQuery {
  where?: Record<string, unknown>;
  predicate?: PredicateNode;
  sort?: SortField[];
  limit?: number;
  cursor?: string;
  fields?: string[];
  groupBy?: string[];
  aggregations?: { func: string; field?: string }[];
}

export interface ServerEventPayload {
  mapName: string;
  eventType: 'PUT' | 'REMOVE' | 'OR_ADD' | 'OR_REMOVE';
  key: string;
  record?: LWWRecord;
  orRecord?: ORMapRecord;
  orTag?: string;
}

/** Messages the server sends that this client understands. */
export type ServerMessage =
  | { type: 'AUTH_REQUIRED' }
  | { type: 'AUTH_ACK'; userId?: string; deviceId?: string; deviceToken?: string }
  | { type: 'AUTH_FAIL'; error?: string; code?: number }
  | { type: 'DEVICE_ACK'; deviceId?: string; deviceToken?: string }
  | { type: 'PONG'; timestamp: number; serverTime: number }
  | { type: 'OP_ACK'; payload: { lastId: string; achievedLevel?: WriteConcern } }
  | { type: 'OP_REJECTED'; payload: { opId: string; reason: string; code?: number } }
  | { type: 'SYNC_RESP_ROOT'; payload: { mapName: string; rootHash: number; timestamp: Timestamp } }
  | { type: 'SYNC_RESP_BUCKETS'; payload: { mapName: string; path: string; buckets: Record<string, number> } }
  | { type: 'SYNC_RESP_LEAF'; payload: { mapName: string; path: string; records: { key: string; record: LWWRecord }[] } }
  | { type: 'SYNC_RESET_REQUIRED'; payload: { mapName: string; reason: string } }
  | { type: 'ORMAP_SYNC_RESP_ROOT'; payload: { mapName: string; rootHash: number; timestamp: Timestamp; fullResync?: boolean } }
  | { type: 'ORMAP_SYNC_RESP_BUCKETS'; payload: { mapName: string; path: string; buckets: Record<string, number> } }
  | { type: 'ORMAP_SYNC_RESP_LEAF'; payload: { mapName: string; path: string; entries: ORMapEntry[] } }
  | { type: 'ORMAP_DIFF_RESPONSE'; payload: { mapName: string; entries: ORMapEntry[] } }
  | { type: 'SERVER_EVENT'; payload: ServerEventPayload }
  | { type: 'SERVER_BATCH_EVENT'; payload: { events: ServerEventPayload[] } }
  | { type: 'QUERY_RESP'; payload: { queryId: string; results: { key: string; value: unknown }[]; nextCursor?: string; hasMore?: boolean; cursorStatus?: string } }
  | { type: 'QUERY_UPDATE'; payload: { queryId: string; key: string; value: unknown; changeType: 'ENTER' | 'UPDATE' | 'LEAVE' } }
  | { type: 'TOPIC_MESSAGE'; payload: { topic: string; data: unknown; publisherId?: string; timestamp: number } }
  | { type: 'LOCK_GRANTED'; payload: { requestId: string; name: string; fencingToken: number } }
  | { type: 'LOCK_RELEASED'; payload: { requestId: string; name: string; success: boolean } }
  | { type: 'COUNTER_RESPONSE' | 'COUNTER_UPDATE'; payload: { name: string; state: unknown } }
  | { type: 'GC_PRUNE'; payload: { olderThan: Timestamp } }
  | { type: 'ERROR'; payload: { code: number; message: string; details?: unknown } };

export type AnyMessage = { type: string; [field: string]: unknown };

/** `POST /sync` request body (PROTOCOL.md §4.17, COMPAT §2.1): a plain map, no `type`. */
export interface HttpSyncRequest {
  clientId: string;
  clientHlc: Timestamp;
  operations?: ClientOp[];
  syncMaps?: { mapName: string; lastSyncTimestamp: Timestamp }[];
  queries?: HttpQuery[];
}

/** A one-shot query over HTTP: `filter` is a field-equality where-clause. */
export interface HttpQuery {
  queryId: string;
  mapName: string;
  filter?: Record<string, unknown>;
  limit?: number;
  offset?: number;
  cursor?: string;
}

export interface HttpOpResult {
  opId: string;
  success: boolean;
  achievedLevel?: WriteConcern;
  error?: string;
}

/** `POST /sync` reply body (COMPAT §2.2). */
export interface HttpSyncResponse {
  serverHlc: Timestamp;
  ack?: { lastId: string; results?: HttpOpResult[] };
  deltas?: { mapName: string; records: { key: string; record: LWWRecord; eventType: 'PUT' | 'REMOVE' }[]; serverSyncTimestamp: Timestamp }[];
  queryResults?: { queryId: string; results: { key: string; value: unknown }[]; hasMore?: boolean; nextCursor?: string }[];
  errors?: { code: number; message: string; context?: Record<string, unknown> }[];
}
