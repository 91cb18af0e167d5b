/**
 * What the client persists, behind one narrow interface with two implementations (IndexedDB and
 * memory). The contract that matters: `commit` writes records and op-log entries in ONE atomic
 * step, so after a crash either both a write's record and its op are there or neither is.
 */
import type { LWWRecord } from '../crdt/lww-map.js';
import type { ORMapEntry } from '../crdt/or-map.js';
import type { ClientOp } from '../protocol.js';

export type StoredRecord =
  | { kind: 'lww'; mapName: string; key: string; record: LWWRecord }
  | { kind: 'or'; mapName: string; key: string; entry: ORMapEntry };

/** An op-log entry: the op as it goes on the wire, with its numeric id as the store key. */
export interface StoredOp {
  seq: number;
  op: ClientOp;
}

export interface Commit {
  records?: StoredRecord[];
  /** Records to delete (pruned tombstones), as [kind, mapName, key]. */
  deleteRecords?: ['lww' | 'or', string, string][];
  ops?: StoredOp[];
  /** Delete every op with seq ≤ this (acknowledged by the server). */
  deleteOpsUpTo?: number;
  /** Delete these op seqs (dropped by backpressure or refused by the server). */
  deleteOps?: number[];
  meta?: Record<string, unknown>;
}

export interface Snapshot {
  records: StoredRecord[];
  ops: StoredOp[];
  meta: Record<string, unknown>;
}

export interface StorageAdapter {
  /** Open and read everything back (called once, at start-up). */
  load(): Promise<Snapshot>;
  /** Apply one change atomically: all of it or none of it. */
  commit(change: Commit): Promise<void>;
  /** Forget every record of one map (SYNC_RESET_REQUIRED). */
  clearMap(kind: 'lww' | 'or', mapName: string): Promise<void>;
  close(): Promise<void>;
}

export function recordId(kind: 'lww' | 'or', mapName: string, key: string): string {
  // mapName cannot contain NUL in practice; it separates the parts unambiguously.
  return `${kind}\u0000${mapName}\u0000${key}`;
}
