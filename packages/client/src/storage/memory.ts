/** In-memory twin of the IndexedDB adapter: same contract, nothing survives a reload. */
import { recordId, type Commit, type Snapshot, type StorageAdapter, type StoredOp, type StoredRecord } from './types.js';

/** Deep copy, so stored state cannot alias live objects (IndexedDB clones too). */
const clone = <T>(v: T): T => structuredClone(v);

export class MemoryStorage implements StorageAdapter {
  private readonly records = new Map<string, StoredRecord>();
  private readonly ops = new Map<number, StoredOp>();
  private readonly meta = new Map<string, unknown>();

  async load(): Promise<Snapshot> {
    return {
      records: [...this.records.values()].map(clone),
      ops: [...this.ops.values()].sort((a, b) => a.seq - b.seq).map(clone),
      meta: Object.fromEntries([...this.meta].map(([k, v]) => [k, clone(v)])),
    };
  }

  async commit(change: Commit): Promise<void> {
    // Clone everything first: a value that cannot be cloned fails the whole commit, like IDB.
    const records = (change.records ?? []).map(clone);
    const ops = (change.ops ?? []).map(clone);
    const meta = Object.entries(change.meta ?? {}).map(([k, v]) => [k, clone(v)] as const);
    for (const r of records) this.records.set(recordId(r.kind, r.mapName, r.key), r);
    for (const [kind, map, key] of change.deleteRecords ?? []) this.records.delete(recordId(kind, map, key));
    for (const o of ops) this.ops.set(o.seq, o);
    if (change.deleteOpsUpTo !== undefined) {
      for (const seq of [...this.ops.keys()]) if (seq <= change.deleteOpsUpTo) this.ops.delete(seq);
    }
    for (const seq of change.deleteOps ?? []) this.ops.delete(seq);
    for (const [k, v] of meta) this.meta.set(k, v);
  }

  async clearMap(kind: 'lww' | 'or', mapName: string): Promise<void> {
    for (const [id, r] of this.records) if (r.kind === kind && r.mapName === mapName) this.records.delete(id);
  }

  async close(): Promise<void> {}
}
