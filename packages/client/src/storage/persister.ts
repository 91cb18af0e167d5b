/**
 * Serialises writes to storage. Commits queued while one is running are merged into the next
 * one (a record written twice is stored once), so a burst of `set`s costs one transaction, and
 * the order of commits is the order of calls. Callers never wait on it: the UI reads memory.
 */
import { recordId, type Commit, type StorageAdapter } from './types.js';

function emptyCommit(): Required<Commit> {
  return { records: [], deleteRecords: [], ops: [], deleteOpsUpTo: -Infinity, deleteOps: [], meta: {} };
}

export class Persister {
  private queued: Required<Commit> | undefined;
  private recordIndex = new Map<string, number>();
  private running: Promise<void> | undefined;
  private idle: Promise<void> = Promise.resolve();

  constructor(
    private readonly storage: StorageAdapter,
    private readonly onError: (error: unknown) => void,
  ) {}

  enqueue(change: Commit): void {
    const q = (this.queued ??= emptyCommit());
    for (const r of change.records ?? []) {
      const id = recordId(r.kind, r.mapName, r.key);
      // A later put of the same record replaces the earlier one and cancels a queued delete.
      q.deleteRecords = q.deleteRecords.filter(([k, m, key]) => recordId(k, m, key) !== id);
      const at = this.recordIndex.get(id);
      if (at === undefined) {
        this.recordIndex.set(id, q.records.length);
        q.records.push(r);
      } else {
        q.records[at] = r;
      }
    }
    for (const d of change.deleteRecords ?? []) {
      const id = recordId(...d);
      const at = this.recordIndex.get(id);
      if (at !== undefined) {
        q.records.splice(at, 1);
        this.recordIndex = new Map(q.records.map((r, i) => [recordId(r.kind, r.mapName, r.key), i]));
      }
      q.deleteRecords.push(d);
    }
    q.ops.push(...(change.ops ?? []));
    if (change.deleteOpsUpTo !== undefined) q.deleteOpsUpTo = Math.max(q.deleteOpsUpTo, change.deleteOpsUpTo);
    q.deleteOps.push(...(change.deleteOps ?? []));
    Object.assign(q.meta, change.meta ?? {});
    if (!this.running) this.kick();
  }

  /** Resolves once everything enqueued before the call is committed (or failed). */
  flush(): Promise<void> {
    if (!this.queued && !this.running) return Promise.resolve();
    return new Promise((resolve) => {
      const check = (): void => {
        if (!this.queued && !this.running) resolve();
        else void this.idle.then(() => queueMicrotask(check));
      };
      check();
    });
  }

  private kick(): void {
    this.running = (async () => {
      // Let the current burst of synchronous writes gather into one transaction.
      await Promise.resolve();
      while (this.queued) {
        const c = this.queued;
        this.queued = undefined;
        this.recordIndex = new Map();
        const commit: Commit = {
          records: c.records,
          deleteRecords: c.deleteRecords,
          ops: c.ops,
          deleteOps: c.deleteOps,
          meta: c.meta,
        };
        if (c.deleteOpsUpTo !== -Infinity) commit.deleteOpsUpTo = c.deleteOpsUpTo;
        try {
          await this.storage.commit(commit);
        } catch (e) {
          this.onError(e);
        }
      }
      this.running = undefined;
    })();
    this.idle = this.running;
  }
}
