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
  /** TopGun's name for `timeoutMs`. */
  timeout?: number;
}

/** The third argument of `set`/`add`: TopGun's `ttlMs` number, or our options. */
export type WriteArg = WriteOptions | number | undefined;

function writeOptions(arg: WriteArg): WriteOptions | undefined {
  if (arg === undefined) return undefined;
  if (typeof arg === 'number') return { ttlMs: arg };
  if (arg.timeout !== undefined && arg.timeoutMs === undefined) return { ...arg, timeoutMs: arg.timeout };
  return arg;
}

/** What a write returns: the record now, and the server's acknowledgement on request. */
export interface WriteResult<R> {
  record: R;
  opId: string;
  /** Resolves when the server acknowledged the op (at its achieved level); rejects if refused. */
  acked(): Promise<WriteAck>;
}

/** What a map's subscribers receive: the keys changed, by whom, and the map's live entries. */
export interface MapChange<V = unknown, K extends string = string> {
  keys: K[];
  source: 'local' | 'remote';
  /** The map's live entries after the change (computed when first read). */
  readonly entries: [K, V][];
}

/**
 * What `set`, `remove` and `add` return: the record (TopGun's return value: `value`,
 * `timestamp`, `ttlMs`) with our write handle beside it (`opId`, `acked()`, `record`).
 */
export type Written<R> = R & WriteResult<R>;

function written<R extends object>(record: R, result: WriteResult<R>): Written<R> {
  return Object.assign({ ...record }, result);
}

function change<V, K extends string>(keys: string[], source: 'local' | 'remote', entries: () => [K, V][]): MapChange<V, K> {
  let cached: [K, V][] | undefined;
  return {
    keys: keys as K[],
    source,
    get entries() {
      cached ??= entries();
      return cached;
    },
  };
}

/** @internal What a handle needs from the client. */
export interface MapHost {
  writeLww(mapName: string, key: string, value: unknown, opts?: WriteOptions): { record: LWWRecord; seq: number };
  writeOrAdd(mapName: string, key: string, value: unknown, opts?: WriteOptions): { record: ORMapRecord; seq: number };
  writeOrRemove(mapName: string, key: string, value: unknown, opts?: WriteOptions): { seqs: number[]; tags: string[] };
  whenAcked(seq: number, timeoutMs?: number): Promise<WriteAck>;
  onMapChange(kind: MapKind, mapName: string, listener: (keys: string[], source: 'local' | 'remote') => void): () => void;
  nowMs(): number;
}

function checkKey(key: string): void {
  if (typeof key !== 'string') throw new TypeError('map keys are strings');
}

export class TopGunMap<V = unknown, K extends string = string> {
  constructor(
    readonly name: string,
    private readonly map: LWWMap,
    private readonly host: MapHost,
  ) {}

  get(key: K): V | undefined {
    return this.map.get(key, this.host.nowMs()) as V | undefined;
  }

  /** The stored record, tombstones included (null value = removed). */
  getRecord(key: K): LWWRecord<V> | undefined {
    return this.map.getRecord(key) as LWWRecord<V> | undefined;
  }

  /**
   * Write a value. The third argument is TopGun's `ttlMs`, or our options (TTL, write
   * concern, timeout). Returns the record, with `acked()` for the server's confirmation.
   */
  set(key: K, value: V, options?: WriteArg): Written<LWWRecord<V>> {
    checkKey(key);
    if (value === undefined || value === null) throw new TypeError('use remove() to delete; values cannot be null or undefined');
    const opts = writeOptions(options);
    const { record, seq } = this.host.writeLww(this.name, key, value, opts);
    return this.result(record as LWWRecord<V>, seq, opts);
  }

  remove(key: K, options?: WriteOptions): Written<LWWRecord<V>> {
    checkKey(key);
    const opts = writeOptions(options);
    const { record, seq } = this.host.writeLww(this.name, key, null, opts);
    return this.result(record as LWWRecord<V>, seq, opts);
  }

  /** Live entries (an array: iterable like TopGun's iterator, and indexable). */
  entries(): [K, V][] {
    return [...this.map.entries(this.host.nowMs())] as [K, V][];
  }

  keys(): K[] {
    return this.entries().map(([k]) => k);
  }

  /** TopGun's name for `keys()`. */
  allKeys(): K[] {
    return this.keys();
  }

  get size(): number {
    return this.entries().length;
  }

  /** Called after every change of this map (local writes and server updates), with the live entries. */
  subscribe(listener: (change: MapChange<V, K>) => void): () => void {
    return this.host.onMapChange('lww', this.name, (keys, source) => listener(change(keys, source, () => this.entries())));
  }

  /** TopGun's change callback: called (without arguments) after every change. */
  onChange(callback: () => void): () => void {
    return this.host.onMapChange('lww', this.name, () => callback());
  }

  /** The Merkle root of this replica (equal to the server's when in sync). */
  get rootHash(): number {
    return this.map.merkle.rootHash;
  }

  private result<R extends object>(record: R, seq: number, options?: WriteOptions): Written<R> {
    return written(record, { record, opId: String(seq), acked: () => this.host.whenAcked(seq, options?.timeoutMs) });
  }
}

export class TopGunORMap<V = unknown, K extends string = string> {
  constructor(
    readonly name: string,
    private readonly map: ORMap,
    private readonly host: MapHost,
  ) {}

  get(key: K): V[] {
    return this.map.get(key, this.host.nowMs()) as V[];
  }

  getRecords(key: K): ORMapRecord<V>[] {
    return this.map.getRecords(key) as ORMapRecord<V>[];
  }

  /** Add a value under `key`; the third argument is TopGun's `ttlMs`, or our options. */
  add(key: K, value: V, options?: WriteArg): Written<ORMapRecord<V>> {
    checkKey(key);
    const opts = writeOptions(options);
    const { record, seq } = this.host.writeOrAdd(this.name, key, value, opts);
    const r = record as ORMapRecord<V>;
    return written(r, { record: r, opId: String(seq), acked: () => this.host.whenAcked(seq, opts?.timeoutMs) });
  }

  /** Remove every value equal (structurally) to `value` under `key`; returns the tags removed. */
  remove(key: K, value: V, options?: WriteOptions): string[] {
    checkKey(key);
    return this.host.writeOrRemove(this.name, key, value, writeOptions(options)).tags;
  }

  keys(): K[] {
    return this.map.keys() as K[];
  }

  /** TopGun's name for `keys()`. */
  allKeys(): K[] {
    return this.keys();
  }

  entries(): [K, V[]][] {
    return this.keys().map((k) => [k, this.get(k)] as [K, V[]]).filter(([, v]) => v.length > 0);
  }

  get size(): number {
    return this.entries().length;
  }

  subscribe(listener: (change: MapChange<V[], K>) => void): () => void {
    return this.host.onMapChange('or', this.name, (keys, source) => listener(change(keys, source, () => this.entries())));
  }

  /** TopGun's change callback: called (without arguments) after every change. */
  onChange(callback: () => void): () => void {
    return this.host.onMapChange('or', this.name, () => callback());
  }

  get rootHash(): number {
    return this.map.merkle.rootHash;
  }
}
