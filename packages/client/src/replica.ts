/**
 * The in-memory replica: every LWW and OR map the app uses, and the last sync time of each.
 * Reads are served from here. Data from the server is merged here (by the CRDT rules) and the
 * records that changed are handed to the persister; nothing here waits on storage.
 */
import { isTimestamp, type HLC, type Timestamp } from './crdt/hlc.js';
import { LWWMap, normaliseLwwRecord, type LWWRecord } from './crdt/lww-map.js';
import { ORMap, normaliseOrRecord, type ORMapEntry } from './crdt/or-map.js';
import type { MerkleTree } from './crdt/merkle.js';
import type { ServerEventPayload } from './protocol.js';
import type { Persister } from './storage/persister.js';
import type { Snapshot, StoredOp, StoredRecord } from './storage/types.js';
import type { MapKind, Replica } from './sync/engine.js';
import { NEVER_SYNCED, type HttpReplica } from './sync/http-engine.js';

export type ChangeSource = 'local' | 'remote';

export interface ReplicaHooks {
  /** A map was created (the engine must sync it). */
  mapCreated(kind: MapKind, name: string): void;
  /** Keys of a map changed. */
  changed(kind: MapKind, mapName: string, keys: string[], source: ChangeSource): void;
  /** Storage failed outside the persister (clearing a map). */
  failed(error: unknown): void;
  clearStoredMap(kind: MapKind, mapName: string): Promise<void>;
}

export class LocalReplica {
  private readonly lwwMaps = new Map<string, LWWMap>();
  private readonly orMaps = new Map<string, ORMap>();
  private readonly lastSync = new Map<string, number>();
  /** The `serverSyncTimestamp` of each LWW map's last HTTP delta (its millis are `lastSync`'s). */
  private readonly syncTimestamps = new Map<string, Timestamp>();

  constructor(
    private readonly hlc: HLC,
    private readonly persister: Persister,
    private readonly hooks: ReplicaHooks,
  ) {}

  lww(name: string): LWWMap {
    let m = this.lwwMaps.get(name);
    if (!m) {
      m = new LWWMap();
      this.lwwMaps.set(name, m);
      this.hooks.mapCreated('lww', name);
    }
    return m;
  }

  or(name: string): ORMap {
    let m = this.orMaps.get(name);
    if (!m) {
      m = new ORMap();
      this.orMaps.set(name, m);
      this.hooks.mapCreated('or', name);
    }
    return m;
  }

  /** The read-only view the sync engines consult. */
  view(pendingOps: (afterSeq: number, limit: number) => StoredOp[]): Replica & HttpReplica {
    return {
      tree: (kind, name): MerkleTree => (kind === 'lww' ? this.lww(name).merkle : this.or(name).merkle),
      orEntries: (name, keys) => keys.map((k) => this.or(name).entry(k)).filter((e) => e.records.length + e.tombstones.length > 0),
      pendingOps,
      lastSyncMillis: (kind, name) => this.lastSync.get(`${kind}:${name}`) ?? 0,
      syncTimestamp: (name) => this.syncTimestamp(name),
    };
  }

  /**
   * Where the next HTTP delta of an LWW map starts: the server's last `serverSyncTimestamp`,
   * unless a WebSocket sync moved the map's last sync time on since (then that time).
   */
  syncTimestamp(mapName: string): Timestamp {
    const millis = this.lastSync.get(`lww:${mapName}`) ?? 0;
    const ts = this.syncTimestamps.get(mapName);
    if (ts && ts.millis === millis) return ts;
    return millis === 0 ? NEVER_SYNCED : { millis, counter: 0, nodeId: '' };
  }

  /** An HTTP delta of `mapName` was merged up to the server's `timestamp`. */
  setSyncTimestamp(mapName: string, timestamp: Timestamp): void {
    this.syncTimestamps.set(mapName, timestamp);
    this.persister.enqueue({ meta: { [`syncTimestamp:${mapName}`]: timestamp } });
    this.setLastSync('lww', mapName, timestamp.millis);
  }

  setLastSync(kind: MapKind, mapName: string, millis: number): void {
    this.lastSync.set(`${kind}:${mapName}`, millis);
    this.persister.enqueue({ meta: { [`lastSync:${kind}:${mapName}`]: millis } });
  }

  /** Merge what storage held at start-up (after writes made meanwhile, which are newer). */
  load(snapshot: Snapshot): void {
    const touched = new Map<string, { kind: MapKind; name: string; keys: string[] }>();
    for (const r of snapshot.records) {
      if (r.kind === 'lww') {
        const rec = normaliseLwwRecord(r.record);
        this.hlc.update(rec.timestamp);
        this.lww(r.mapName).merge(r.key, rec);
      } else {
        this.or(r.mapName).mergeEntry(r.entry);
      }
      const id = `${r.kind}:${r.mapName}`;
      const t = touched.get(id) ?? { kind: r.kind, name: r.mapName, keys: [] };
      t.keys.push(r.key);
      touched.set(id, t);
    }
    for (const [k, v] of Object.entries(snapshot.meta)) {
      if (k.startsWith('lastSync:') && typeof v === 'number') this.lastSync.set(k.slice(9), v);
      if (k.startsWith('syncTimestamp:') && isTimestamp(v)) this.syncTimestamps.set(k.slice(14), v);
    }
    for (const t of touched.values()) this.hooks.changed(t.kind, t.name, t.keys, 'remote');
  }

  applyLww(mapName: string, records: { key: string; record: LWWRecord }[]): void {
    const map = this.lww(mapName);
    const changed: string[] = [];
    const stored: StoredRecord[] = [];
    for (const { key, record } of records) {
      if (typeof key !== 'string' || !record || !isTimestamp(record.timestamp)) continue;
      const rec = normaliseLwwRecord(record);
      this.hlc.update(rec.timestamp);
      if (map.merge(key, rec)) {
        changed.push(key);
        stored.push({ kind: 'lww', mapName, key, record: rec });
      }
    }
    if (stored.length > 0) this.persister.enqueue({ records: stored });
    if (changed.length > 0) this.hooks.changed('lww', mapName, changed, 'remote');
  }

  applyOr(mapName: string, entries: ORMapEntry[]): void {
    const map = this.or(mapName);
    const changed: string[] = [];
    for (const e of entries) {
      if (typeof e?.key !== 'string') continue;
      const records = (e.records ?? []).filter((r) => r && isTimestamp(r.timestamp) && typeof r.tag === 'string').map(normaliseOrRecord);
      for (const r of records) this.hlc.update(r.timestamp);
      if (map.mergeEntry({ key: e.key, records, tombstones: (e.tombstones ?? []).filter((t) => typeof t === 'string') })) changed.push(e.key);
    }
    if (changed.length === 0) return;
    this.persister.enqueue({ records: changed.map((key) => ({ kind: 'or' as const, mapName, key, entry: map.entry(key) })) });
    this.hooks.changed('or', mapName, changed, 'remote');
  }

  applyEvents(events: ServerEventPayload[]): void {
    for (const ev of events) {
      if (!ev || typeof ev.mapName !== 'string' || typeof ev.key !== 'string') continue;
      if ((ev.eventType === 'PUT' || ev.eventType === 'REMOVE') && ev.record) {
        this.applyLww(ev.mapName, [{ key: ev.key, record: ev.record }]);
      } else if (ev.eventType === 'OR_ADD' && ev.orRecord) {
        this.applyOr(ev.mapName, [{ key: ev.key, records: [ev.orRecord], tombstones: [] }]);
      } else if (ev.eventType === 'OR_REMOVE' && typeof ev.orTag === 'string') {
        this.applyOr(ev.mapName, [{ key: ev.key, records: [], tombstones: [ev.orTag] }]);
      }
    }
  }

  /** SYNC_RESET_REQUIRED / fullResync: forget the map here and in storage. */
  reset(kind: MapKind, mapName: string): void {
    const keys = kind === 'lww' ? [...this.lww(mapName).allRecords()].map(([k]) => k) : this.or(mapName).knownKeys();
    (kind === 'lww' ? this.lww(mapName) : this.or(mapName)).clear();
    this.hooks.clearStoredMap(kind, mapName).catch((e) => this.hooks.failed(e));
    if (keys.length > 0) this.hooks.changed(kind, mapName, keys, 'remote');
  }

  /** GC_PRUNE: drop tombstones older than `olderThan` everywhere. */
  prune(olderThan: Timestamp): void {
    for (const [name, map] of this.lwwMaps) {
      const keys = map.prune(olderThan);
      if (keys.length > 0) this.persister.enqueue({ deleteRecords: keys.map((k) => ['lww', name, k] as ['lww', string, string]) });
    }
    for (const [name, map] of this.orMaps) {
      const keys = map.prune(olderThan);
      if (keys.length > 0) this.persister.enqueue({ records: keys.map((key) => ({ kind: 'or' as const, mapName: name, key, entry: map.entry(key) })) });
    }
  }
}
