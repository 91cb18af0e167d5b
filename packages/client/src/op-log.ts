/**
 * The ops this client wrote that the server has not acknowledged yet, in seq order, with the
 * backpressure policy that bounds them and the promises that wait for their acknowledgement.
 * Storage of the op log itself goes through the persister (with the record, in one commit).
 */
import { BackpressureError, OpRejectedError, TimeoutError } from './errors.js';
import type { WriteConcern } from './protocol.js';
import type { StoredOp } from './storage/types.js';

export interface BackpressureOptions {
  /** Ops waiting for the server before the strategy applies (default 10,000). */
  maxPendingOps: number;
  /**
   * `throw`: refuse the write (BackpressureError), nothing changes.
   * `drop-oldest`: make room by dropping the oldest unacknowledged op (its value stays local).
   * `pause`: accept the write and report `paused`; `waitForCapacity()` resolves once the queue
   *   has drained below `lowWaterMark`. Hard limit 2 × maxPendingOps, then it throws.
   */
  strategy: 'pause' | 'throw' | 'drop-oldest';
  /** Fraction of maxPendingOps at which `pause` ends and `backpressure:low` is reported (default 0.5). */
  lowWaterMark?: number;
  /** Fraction of maxPendingOps at which `backpressure:high` is reported (default 0.8). */
  highWaterMark?: number;
}

export interface WriteAck {
  opId: string;
  achievedLevel?: WriteConcern;
}

const indexKey = (mapName: string, key: string): string => `${mapName}\u0000${key}`;

type Waiter = { resolve: (a: WriteAck) => void; reject: (e: Error) => void };

export class OpLog {
  private readonly pending = new Map<number, StoredOp>(); // insertion = ascending seq
  private readonly byKey = new Map<string, number>();
  private readonly waiters = new Map<number, Waiter[]>();
  private readonly capacityWaiters: (() => void)[] = [];
  private readonly bp: Required<BackpressureOptions>;
  private lastLevel: WriteConcern | undefined;
  private pausedValue = false;
  private nextSeq: number;

  constructor(options: Partial<BackpressureOptions>, firstSeq: number) {
    this.bp = { maxPendingOps: 10_000, strategy: 'throw', lowWaterMark: 0.5, highWaterMark: 0.8, ...options };
    this.nextSeq = firstSeq;
  }

  get size(): number {
    return this.pending.size;
  }

  get options(): Readonly<Required<BackpressureOptions>> {
    return this.bp;
  }

  /** Pending ops that write `key` of `mapName`. */
  pendingFor(mapName: string, key: string): number {
    return this.byKey.get(indexKey(mapName, key)) ?? 0;
  }

  get(seq: number): StoredOp | undefined {
    return this.pending.get(seq);
  }

  private indexAdd(op: StoredOp): void {
    const k = indexKey(op.op.mapName, op.op.key);
    this.byKey.set(k, (this.byKey.get(k) ?? 0) + 1);
  }

  private indexRemove(op: StoredOp | undefined): void {
    if (!op) return;
    const k = indexKey(op.op.mapName, op.op.key);
    const n = (this.byKey.get(k) ?? 1) - 1;
    if (n <= 0) this.byKey.delete(k);
    else this.byKey.set(k, n);
  }

  get paused(): boolean {
    return this.pausedValue;
  }

  /**
   * Apply the backpressure policy before a write; returns the seqs it dropped (drop-oldest).
   * Throws BackpressureError (nothing changed) when the write must be refused.
   */
  makeRoom(): number[] {
    const { maxPendingOps, strategy } = this.bp;
    const n = this.pending.size;
    if (strategy === 'throw' && n >= maxPendingOps) throw new BackpressureError(n, maxPendingOps);
    if (strategy === 'pause' && n >= maxPendingOps * 2) throw new BackpressureError(n, maxPendingOps * 2);
    const dropped: number[] = [];
    if (strategy === 'drop-oldest') {
      for (const seq of this.pending.keys()) {
        if (this.pending.size < maxPendingOps) break;
        this.indexRemove(this.pending.get(seq));
        this.pending.delete(seq);
        dropped.push(seq);
        this.settle(seq, undefined, new Error(`op ${seq} dropped by backpressure (drop-oldest); its value stays local only`));
      }
    }
    return dropped;
  }

  /** Assign the next seq to `op` and queue it. */
  append(op: StoredOp['op']): StoredOp {
    const seq = this.nextSeq++;
    op.id = String(seq);
    const stored = { seq, op };
    this.pending.set(seq, stored);
    this.indexAdd(stored);
    this.updatePause();
    return stored;
  }

  /** Ops read back from storage: they go first; seqs continue above them. */
  restore(ops: StoredOp[]): void {
    const later = [...this.pending.values()];
    this.pending.clear();
    for (const op of ops) this.pending.set(op.seq, op);
    for (const op of later) this.pending.set(op.seq, op);
    this.byKey.clear();
    for (const op of this.pending.values()) this.indexAdd(op);
    const max = ops.length > 0 ? ops[ops.length - 1]!.seq : 0;
    this.nextSeq = Math.max(this.nextSeq, max + 1);
    this.updatePause();
  }

  /** Pending ops with seq > `afterSeq`, ascending, at most `limit`. */
  after(afterSeq: number, limit: number): StoredOp[] {
    const out: StoredOp[] = [];
    for (const op of this.pending.values()) {
      if (op.seq <= afterSeq) continue;
      out.push(op);
      if (out.length >= limit) break;
    }
    return out;
  }

  has(seq: number): boolean {
    return this.pending.has(seq);
  }

  /** OP_ACK: every op up to `upTo` is done; returns whether anything was pending. */
  acknowledge(upTo: number, level: WriteConcern | undefined): boolean {
    this.lastLevel = level;
    const acked: number[] = [];
    for (const seq of this.pending.keys()) {
      if (seq > upTo) break;
      acked.push(seq);
    }
    for (const seq of acked) {
      this.indexRemove(this.pending.get(seq));
      this.pending.delete(seq);
      this.settle(seq, level);
    }
    this.updatePause();
    return acked.length > 0;
  }

  /** OP_REJECTED: the op's waiters fail (the ack that follows removes it, if final). */
  reject(seq: number, error: OpRejectedError): void {
    this.settle(seq, undefined, error);
  }

  whenAcked(seq: number, timeoutMs?: number): Promise<WriteAck> {
    if (!this.pending.has(seq)) return Promise.resolve({ opId: String(seq), achievedLevel: this.lastLevel });
    return new Promise((resolve, reject) => {
      const entry: Waiter = { resolve, reject };
      const list = this.waiters.get(seq) ?? [];
      list.push(entry);
      this.waiters.set(seq, list);
      if (timeoutMs === undefined) return;
      setTimeout(() => {
        const l = this.waiters.get(seq);
        if (!l?.includes(entry)) return;
        l.splice(l.indexOf(entry), 1);
        reject(new TimeoutError(`op ${seq} not acknowledged within ${timeoutMs} ms (it stays queued)`));
      }, timeoutMs);
    });
  }

  waitForCapacity(): Promise<void> {
    if (!this.pausedValue) return Promise.resolve();
    return new Promise((resolve) => this.capacityWaiters.push(resolve));
  }

  private settle(seq: number, level: WriteConcern | undefined, error?: Error): void {
    const list = this.waiters.get(seq);
    if (!list) return;
    this.waiters.delete(seq);
    for (const w of list) {
      if (error) w.reject(error);
      else w.resolve({ opId: String(seq), achievedLevel: level });
    }
  }

  private updatePause(): void {
    if (this.bp.strategy !== 'pause') return;
    const n = this.pending.size;
    const was = this.pausedValue;
    if (n >= this.bp.maxPendingOps) this.pausedValue = true;
    else if (n <= this.bp.maxPendingOps * this.bp.lowWaterMark) this.pausedValue = false;
    if (was && !this.pausedValue) for (const w of this.capacityWaiters.splice(0)) w();
  }
}

export { OpRejectedError };
