/**
 * Last-write-wins map (PROTOCOL.md §2.2): each key holds one record; a remote record replaces the
 * local one only if its HLC timestamp is strictly greater. Removes are tombstones (value null)
 * so that they win over older writes and reach other replicas through Merkle sync.
 */
import { fnv1a } from './hash.js';
import { compareTimestamps, type Timestamp } from './hlc.js';
import { MerkleTree } from './merkle.js';

export interface LWWRecord<V = unknown> {
  value: V | null;
  timestamp: Timestamp;
  ttlMs?: number;
}

/** The LWW item hash: the value is not hashed, tombstones hash like live records (§3.4). */
export function lwwItemHash(key: string, ts: Timestamp): number {
  return fnv1a(`${key}:${ts.millis}:${ts.counter}:${ts.nodeId}`);
}

export function isExpired(record: { timestamp: Timestamp; ttlMs?: number }, nowMs: number): boolean {
  return record.ttlMs !== undefined && record.timestamp.millis + record.ttlMs < nowMs;
}

/** Normalise a record from the wire: `ttlMs: null` (sent by some servers) means no TTL. */
export function normaliseLwwRecord<V>(raw: LWWRecord<V>): LWWRecord<V> {
  const out: LWWRecord<V> = { value: raw.value === undefined ? null : raw.value, timestamp: raw.timestamp };
  if (typeof raw.ttlMs === 'number' && raw.ttlMs > 0) out.ttlMs = raw.ttlMs;
  return out;
}

export class LWWMap<V = unknown> {
  private readonly records = new Map<string, LWWRecord<V>>();
  readonly merkle = new MerkleTree();

  /** Merge a record; returns true if it replaced the local state. */
  merge(key: string, record: LWWRecord<V>): boolean {
    const local = this.records.get(key);
    if (local && compareTimestamps(record.timestamp, local.timestamp) <= 0) return false;
    this.records.set(key, record);
    this.merkle.update(key, lwwItemHash(key, record.timestamp));
    return true;
  }

  /** The live value, or undefined if absent, removed or expired. */
  get(key: string, nowMs: number = Date.now()): V | undefined {
    const r = this.records.get(key);
    if (!r || r.value === null || isExpired(r, nowMs)) return undefined;
    return r.value;
  }

  getRecord(key: string): LWWRecord<V> | undefined {
    return this.records.get(key);
  }

  /** Live entries (no tombstones, no expired records). */
  *entries(nowMs: number = Date.now()): IterableIterator<[string, V]> {
    for (const [k, r] of this.records) {
      if (r.value !== null && !isExpired(r, nowMs)) yield [k, r.value];
    }
  }

  /** Every record, tombstones included (what Merkle sync compares). */
  allRecords(): IterableIterator<[string, LWWRecord<V>]> {
    return this.records.entries();
  }

  get recordCount(): number {
    return this.records.size;
  }

  /** Drop tombstones older than `olderThan` (GC_PRUNE); returns the pruned keys. */
  prune(olderThan: Timestamp): string[] {
    const pruned: string[] = [];
    for (const [k, r] of this.records) {
      if (r.value === null && compareTimestamps(r.timestamp, olderThan) < 0) {
        this.records.delete(k);
        this.merkle.remove(k);
        pruned.push(k);
      }
    }
    return pruned;
  }

  clear(): void {
    this.records.clear();
    this.merkle.clear();
  }
}
