/**
 * Observed-remove map (PROTOCOL.md §2.3): a key holds many values, each added under a unique tag
 * (the add's timestamp string); a remove tombstones the tags it observed. Tombstones are kept
 * per key, which is what the server keeps and what a push diff must carry.
 */
import { fnv1a } from './hash.js';
import { compareTimestamps, parseTimestamp, type Timestamp } from './hlc.js';
import { isExpired } from './lww-map.js';
import { MerkleTree } from './merkle.js';

export interface ORMapRecord<V = unknown> {
  value: V;
  timestamp: Timestamp;
  tag: string;
  ttlMs?: number;
}

export interface ORMapEntry<V = unknown> {
  key: string;
  records: ORMapRecord<V>[];
  tombstones: string[];
}

/**
 * The TS client's value rendering inside the entry hash (§3.6): objects through JSON.stringify
 * with their own sorted top-level keys as an allow-list (applied at every depth, a quirk we must
 * reproduce), strings unquoted, everything else through String().
 */
function valueString(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'object') return JSON.stringify(value, Object.keys(value as object).sort());
  return String(value);
}

/** The OR entry hash the server computes too (§3.6, TS client formula). */
export function orEntryHash(key: string, records: Iterable<ORMapRecord>): number {
  const sorted = [...records].sort((a, b) => (a.tag < b.tag ? -1 : a.tag > b.tag ? 1 : 0));
  let text = `key:${key}`;
  for (const r of sorted) {
    const ts = r.timestamp;
    text += `|${r.tag}:${valueString(r.value)}:${ts.millis}:${ts.counter}:${ts.nodeId}`;
    if (r.ttlMs !== undefined) text += `:ttl=${r.ttlMs}`;
  }
  return fnv1a(text);
}

export function normaliseOrRecord<V>(raw: ORMapRecord<V>): ORMapRecord<V> {
  const out: ORMapRecord<V> = { value: raw.value, timestamp: raw.timestamp, tag: raw.tag };
  if (typeof raw.ttlMs === 'number' && raw.ttlMs > 0) out.ttlMs = raw.ttlMs;
  return out;
}

/** Structural equality for values (a remove names a value, not an object identity). */
export function valuesEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    if (!(a instanceof Uint8Array && b instanceof Uint8Array) || a.length !== b.length) return false;
    return a.every((x, i) => x === b[i]);
  }
  const ka = Object.keys(a as object);
  const kb = Object.keys(b as object);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => valuesEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

export class ORMap<V = unknown> {
  private readonly items = new Map<string, Map<string, ORMapRecord<V>>>();
  private readonly tombstones = new Map<string, Set<string>>();
  readonly merkle = new MerkleTree();

  /** Values visible under `key`. */
  get(key: string, nowMs: number = Date.now()): V[] {
    const recs = this.items.get(key);
    if (!recs) return [];
    const out: V[] = [];
    for (const r of recs.values()) if (!isExpired(r, nowMs)) out.push(r.value);
    return out;
  }

  getRecords(key: string): ORMapRecord<V>[] {
    return [...(this.items.get(key)?.values() ?? [])];
  }

  keys(): string[] {
    return [...this.items.keys()];
  }

  /** Keys that have records or tombstones (what must be persisted). */
  knownKeys(): string[] {
    return [...new Set([...this.items.keys(), ...this.tombstones.keys()])];
  }

  isTombstoned(key: string, tag: string): boolean {
    return this.tombstones.get(key)?.has(tag) ?? false;
  }

  /** Apply one record (a local add or an OR_ADD event); false if tombstoned or not newer. */
  apply(key: string, record: ORMapRecord<V>): boolean {
    if (this.isTombstoned(key, record.tag)) return false;
    let recs = this.items.get(key);
    const existing = recs?.get(record.tag);
    if (existing && compareTimestamps(record.timestamp, existing.timestamp) <= 0) return false;
    if (!recs) {
      recs = new Map();
      this.items.set(key, recs);
    }
    recs.set(record.tag, record);
    this.rehash(key);
    return true;
  }

  /** Tombstone one tag under `key`; returns true if that changed anything. */
  removeTag(key: string, tag: string): boolean {
    let set = this.tombstones.get(key);
    if (set?.has(tag)) return false;
    if (!set) {
      set = new Set();
      this.tombstones.set(key, set);
    }
    set.add(tag);
    const recs = this.items.get(key);
    if (recs?.delete(tag)) {
      if (recs.size === 0) this.items.delete(key);
      this.rehash(key);
    }
    return true;
  }

  /** Tags of the records under `key` whose value equals `value` (what a remove tombstones). */
  tagsOf(key: string, value: V): string[] {
    const tags: string[] = [];
    for (const r of this.items.get(key)?.values() ?? []) if (valuesEqual(r.value, value)) tags.push(r.tag);
    return tags;
  }

  /** Merge a remote entry (§2.3 mergeKey); returns true if the key changed. */
  mergeEntry(entry: ORMapEntry<V>): boolean {
    let changed = false;
    for (const tag of entry.tombstones) changed = this.removeTag(entry.key, tag) || changed;
    for (const r of entry.records) changed = this.apply(entry.key, normaliseOrRecord(r)) || changed;
    return changed;
  }

  entry(key: string): ORMapEntry<V> {
    return { key, records: this.getRecords(key), tombstones: [...(this.tombstones.get(key) ?? [])] };
  }

  /** Drop tombstones whose tag timestamp is older than `olderThan`; returns touched keys. */
  prune(olderThan: Timestamp): string[] {
    const touched: string[] = [];
    for (const [key, set] of this.tombstones) {
      for (const tag of set) {
        let ts: Timestamp | undefined;
        try {
          ts = parseTimestamp(tag);
        } catch {
          ts = undefined; // a foreign tag format: keep it, pruning it could resurrect a value
        }
        if (ts && compareTimestamps(ts, olderThan) < 0) set.delete(tag);
      }
      if (set.size === 0) this.tombstones.delete(key);
      touched.push(key);
    }
    return touched;
  }

  private rehash(key: string): void {
    const recs = this.items.get(key);
    if (!recs || recs.size === 0) this.merkle.remove(key);
    else this.merkle.update(key, orEntryHash(key, recs.values()));
  }

  clear(): void {
    this.items.clear();
    this.tombstones.clear();
    this.merkle.clear();
  }
}
