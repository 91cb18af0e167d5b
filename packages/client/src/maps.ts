/**
 * The map handles applications use. Reads are synchronous from memory; writes change memory at
 * once, queue the op and persist both behind the caller's back.
 */
import type { LWWMap, LWWRecord } from './crdt/lww-map.js';
import type { ORMap, ORMapRecord } from './crdt/or-map.js';
import type { MapKind } from './sync/engine.js';
import type { WriteConcern } from './protocol.js';
import type { WriteAck } from './op-log.js';

export interface WriteOptions {
  /** Record lifetime; the record is hidden once `timestamp.millis + ttlMs` has passed. */
  ttlMs?: number;
  /** Level the server should reach before acknowledging (sent with the op). */
  writeConcern?: WriteConcern;
  /** How long `acked()` waits (and the server's write-concern timeout). */
  timeoutMs?: number;
}

/** What a write returns: the record now, and the server's acknowledgement on request. */
export interface WriteResult<R> {
  record: R;
  opId: string;
  /** Resolves when the server acknowledged the op (at its achieved level); rejects if refused. */
  acked(): Promise<WriteAck>;
}

export interface MapChange {
  keys: string[];
  source: 'local' | 'remote';
}

/** @internal What a handle needs from the client. */
export interface MapHost {
  writeLww(mapName: string, key: string, value: unknown, opts?: WriteOptions): { record: LWWRecord; seq: number };
  writeOrAdd(mapName: string, key: string, value: unknown, opts?: WriteOptions): { record: ORMapRecord; seq: number };
  writeOrRemove(mapName: string, key: string, value: unknown, opts?: WriteOptions): number[];
  whenAcked(seq: number, timeoutMs?: number): Promise<WriteAck>;
  onMapChange(kind: MapKind, mapName: string, listener: (keys: string[], source: 'local' | 'remote') => void): () => void;
  nowMs(): number;
}

function checkKey(key: string): void {
  if (typeof key !== 'string') throw new TypeError('map keys are strings');
}

export class TopGunMap<V = unknown> {
  constructor(
    readonly name: string,
    private readonly map: LWWMap,
    private readonly host: MapHost,
  ) {}

  get(key: string): V | undefined {
    return this.map.get(key, this.host.nowMs()) as V | undefined;
  }

  /** The stored record, tombstones included (null value = removed). */
  getRecord(key: string): LWWRecord<V> | undefined {
    return this.map.getRecord(key) as LWWRecord<V> | undefined;
  }

  set(key: string, value: V, options?: WriteOptions): WriteResult<LWWRecord<V>> {
    checkKey(key);
    if (value === undefined || value === null) throw new TypeError('use remove() to delete; values cannot be null or undefined');
    const { record, seq } = this.host.writeLww(this.name, key, value, options);
    return this.result(record as LWWRecord<V>, seq, options);
  }

  remove(key: string, options?: WriteOptions): WriteResult<LWWRecord<V>> {
    checkKey(key);
    const { record, seq } = this.host.writeLww(this.name, key, null, options);
    return this.result(record as LWWRecord<V>, seq, options);
  }

  entries(): [string, V][] {
    return [...this.map.entries(this.host.nowMs())] as [string, V][];
  }

  keys(): string[] {
    return this.entries().map(([k]) => k);
  }

  get size(): number {
    return this.entries().length;
  }

  /** Called after every change of this map (local writes and server updates). */
  subscribe(listener: (change: MapChange) => void): () => void {
    return this.host.onMapChange('lww', this.name, (keys, source) => listener({ keys, source }));
  }

  /** The Merkle root of this replica (equal to the server's when in sync). */
  get rootHash(): number {
    return this.map.merkle.rootHash;
  }

  private result<R>(record: R, seq: number, options?: WriteOptions): WriteResult<R> {
    return { record, opId: String(seq), acked: () => this.host.whenAcked(seq, options?.timeoutMs) };
  }
}

export class TopGunORMap<V = unknown> {
  constructor(
    readonly name: string,
    private readonly map: ORMap,
    private readonly host: MapHost,
  ) {}

  get(key: string): V[] {
    return this.map.get(key, this.host.nowMs()) as V[];
  }

  getRecords(key: string): ORMapRecord<V>[] {
    return this.map.getRecords(key) as ORMapRecord<V>[];
  }

  add(key: string, value: V, options?: WriteOptions): WriteResult<ORMapRecord<V>> {
    checkKey(key);
    const { record, seq } = this.host.writeOrAdd(this.name, key, value, options);
    return { record: record as ORMapRecord<V>, opId: String(seq), acked: () => this.host.whenAcked(seq, options?.timeoutMs) };
  }

  /** Remove every value equal (structurally) to `value` under `key`; returns how many. */
  remove(key: string, value: V, options?: WriteOptions): number {
    checkKey(key);
    return this.host.writeOrRemove(this.name, key, value, options).length;
  }

  keys(): string[] {
    return this.map.keys();
  }

  entries(): [string, V[]][] {
    return this.map.keys().map((k) => [k, this.get(k)] as [string, V[]]).filter(([, v]) => v.length > 0);
  }

  subscribe(listener: (change: MapChange) => void): () => void {
    return this.host.onMapChange('or', this.name, (keys, source) => listener({ keys, source }));
  }

  get rootHash(): number {
    return this.map.merkle.rootHash;
  }
}
