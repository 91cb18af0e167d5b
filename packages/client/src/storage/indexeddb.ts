/**
 * IndexedDB persistence (via `idb`). Three object stores: `records` (one row per LWW key or OR
 * key, id = kind/map/key), `oplog` (keyed by the op's numeric seq) and `meta`. Every `commit`
 * is one readwrite transaction over all three, so a record and its op-log entry land together
 * or not at all.
 */
import { openDB, type DBSchema, type IDBPDatabase } from 'idb';
import { recordId, type Commit, type Snapshot, type StorageAdapter, type StoredOp, type StoredRecord } from './types.js';

interface Schema extends DBSchema {
  records: { key: string; value: StoredRecord & { id: string } };
  oplog: { key: number; value: StoredOp };
  meta: { key: string; value: { key: string; value: unknown } };
}

const STORES = ['records', 'oplog', 'meta'] as const;

export interface IndexedDBStorageOptions {
  /** Database name; one per app and user. */
  name?: string;
  /** An IDBFactory to use instead of the global `indexedDB` (tests pass fake-indexeddb's). */
  factory?: IDBFactory;
}

export class IndexedDBStorage implements StorageAdapter {
  private db: IDBPDatabase<Schema> | undefined;
  private readonly name: string;
  private readonly factory: IDBFactory | undefined;

  constructor(options: IndexedDBStorageOptions = {}) {
    this.name = options.name ?? 'topgun';
    this.factory = options.factory;
  }

  private async open(): Promise<IDBPDatabase<Schema>> {
    if (this.db) return this.db;
    const original = globalThis.indexedDB;
    // `idb` reads the global factory; swap it in only for the duration of the open call.
    if (this.factory) (globalThis as { indexedDB: IDBFactory }).indexedDB = this.factory;
    try {
      this.db = await openDB<Schema>(this.name, 1, {
        upgrade(db) {
          db.createObjectStore('records', { keyPath: 'id' });
          db.createObjectStore('oplog', { keyPath: 'seq' });
          db.createObjectStore('meta', { keyPath: 'key' });
        },
      });
    } finally {
      if (this.factory) (globalThis as { indexedDB: IDBFactory | undefined }).indexedDB = original;
    }
    return this.db;
  }

  async load(): Promise<Snapshot> {
    const db = await this.open();
    const tx = db.transaction(STORES, 'readonly');
    const [rows, ops, meta] = await Promise.all([
      tx.objectStore('records').getAll(),
      tx.objectStore('oplog').getAll(),
      tx.objectStore('meta').getAll(),
    ]);
    await tx.done;
    return {
      records: rows.map(({ id: _id, ...r }) => r as StoredRecord),
      ops, // keyed by seq: getAll returns them in ascending order
      meta: Object.fromEntries(meta.map((m) => [m.key, m.value])),
    };
  }

  async commit(change: Commit): Promise<void> {
    const db = await this.open();
    const tx = db.transaction(STORES, 'readwrite');
    const records = tx.objectStore('records');
    const oplog = tx.objectStore('oplog');
    const meta = tx.objectStore('meta');
    const pending: Promise<unknown>[] = [];
    try {
      for (const r of change.records ?? []) pending.push(records.put({ ...r, id: recordId(r.kind, r.mapName, r.key) }));
      for (const [kind, map, key] of change.deleteRecords ?? []) pending.push(records.delete(recordId(kind, map, key)));
      for (const o of change.ops ?? []) pending.push(oplog.put(o));
      if (change.deleteOpsUpTo !== undefined) pending.push(oplog.delete(IDBKeyRange.upperBound(change.deleteOpsUpTo)));
      for (const seq of change.deleteOps ?? []) pending.push(oplog.delete(seq));
      for (const [key, value] of Object.entries(change.meta ?? {})) pending.push(meta.put({ key, value }));
    } catch (e) {
      // A synchronous failure (e.g. a value that cannot be cloned) aborts the whole transaction.
      for (const p of pending) p.catch(() => undefined); // they reject with AbortError now
      tx.abort();
      await tx.done.catch(() => undefined);
      throw e;
    }
    await Promise.all([...pending, tx.done]);
  }

  async clearMap(kind: 'lww' | 'or', mapName: string): Promise<void> {
    const db = await this.open();
    const prefix = recordId(kind, mapName, '');
    const range = IDBKeyRange.bound(prefix, `${prefix}\uffff`);
    await db.delete('records', range);
  }

  async close(): Promise<void> {
    this.db?.close();
    this.db = undefined;
  }
}
