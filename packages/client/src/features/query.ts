/**
 * A live query. It answers at once from the local replica, then merges what the server says
 * (QUERY_RESP, QUERY_UPDATE) for keys the replica does not hold; for keys it does hold, the
 * replica wins, because it includes this client's own writes the server has not seen yet.
 * Every change recomputes the visible rows (batched per microtask) and reports the difference.
 */
import { compareRows, compileFilter, type CompiledFilter, type PredicateNode, type SortField } from '../crdt/predicate.js';
import type { WireQuery } from '../protocol.js';

export interface QueryOptions {
  where?: Record<string, unknown>;
  predicate?: PredicateNode;
  /** `{field: 'asc' | 'desc'}` or the wire's array form. */
  sort?: Record<string, 'asc' | 'desc'> | SortField[];
  limit?: number;
}

export interface QueryRow<V> {
  key: string;
  value: V;
}

export type ChangeType = 'ENTER' | 'UPDATE' | 'LEAVE';

export interface QueryDelta<V> {
  type: ChangeType;
  key: string;
  value: V | undefined;
}

/** What the query reads from the client: the local rows of its map. */
export interface QuerySource<V> {
  localRecord(key: string): { value: V | null } | undefined;
  localEntries(): Iterable<[string, V]>;
}

export function normaliseSort(sort: QueryOptions['sort']): SortField[] {
  if (!sort) return [];
  if (Array.isArray(sort)) return sort;
  return Object.entries(sort).map(([field, direction]) => ({ field, direction }));
}

export function toWireQuery(options: QueryOptions): WireQuery {
  const q: WireQuery = {};
  if (options.where) q.where = options.where;
  if (options.predicate) q.predicate = options.predicate;
  const sort = normaliseSort(options.sort);
  if (sort.length > 0) q.sort = sort;
  if (options.limit !== undefined) q.limit = options.limit;
  return q;
}

export class QueryHandle<V = unknown> {
  readonly filter: CompiledFilter;
  private readonly sort: SortField[];
  private readonly server = new Map<string, V>();
  private rows: QueryRow<V>[] = [];
  private visible = new Map<string, V>();
  private serverAnswered = false;
  private scheduled = false;
  private closed = false;
  private readonly listeners = new Set<(rows: QueryRow<V>[]) => void>();
  private readonly deltaListeners = new Set<(deltas: QueryDelta<V>[]) => void>();

  constructor(
    readonly id: string,
    readonly mapName: string,
    readonly options: QueryOptions,
    private readonly source: QuerySource<V>,
    private readonly onClose: (handle: QueryHandle<V>) => void,
  ) {
    this.filter = compileFilter(options); // throws PredicateError before anything is sent
    this.sort = normaliseSort(options.sort);
    if (options.limit !== undefined && (!Number.isInteger(options.limit) || options.limit < 0 || options.limit > 0xffffffff)) {
      throw new RangeError('limit must be a non-negative 32-bit integer');
    }
    this.recompute();
  }

  /** Current rows, in query order. */
  get results(): QueryRow<V>[] {
    return this.rows;
  }

  /** True once the server's first answer has been merged. */
  get isServerConfirmed(): boolean {
    return this.serverAnswered;
  }

  /** Called with the full rows now and after every change. Returns an unsubscribe function. */
  subscribe(listener: (rows: QueryRow<V>[]) => void): () => void {
    this.listeners.add(listener);
    listener(this.rows);
    return () => this.listeners.delete(listener);
  }

  /** Called with ENTER/UPDATE/LEAVE changes (not with the initial rows). */
  onDelta(listener: (deltas: QueryDelta<V>[]) => void): () => void {
    this.deltaListeners.add(listener);
    return () => this.deltaListeners.delete(listener);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.listeners.clear();
    this.deltaListeners.clear();
    this.onClose(this);
  }

  // ---- inputs from the client ----

  /** The local map changed (a write, a sync merge, an event). */
  localChanged(): void {
    this.schedule();
  }

  serverResponse(results: { key: string; value: unknown }[]): void {
    this.server.clear();
    for (const r of results) this.server.set(r.key, r.value as V);
    this.serverAnswered = true;
    this.schedule();
  }

  serverUpdate(key: string, value: unknown, changeType: ChangeType): void {
    if (changeType === 'LEAVE') this.server.delete(key);
    else this.server.set(key, value as V);
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled || this.closed) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      if (!this.closed) this.recompute();
    });
  }

  /** Recompute now (tests and the client call it to avoid waiting for the microtask). */
  recompute(): void {
    const candidates = new Map<string, V>();
    for (const [key, value] of this.source.localEntries()) if (this.filter(value)) candidates.set(key, value);
    for (const [key, value] of this.server) {
      // The replica knows this key: its answer (including a removal) already counted above.
      if (this.source.localRecord(key) !== undefined) continue;
      if (this.filter(value)) candidates.set(key, value);
    }
    let rows = [...candidates].map(([key, value]) => ({ key, value }));
    rows.sort((a, b) => compareRows(this.sort, a, b));
    if (this.options.limit !== undefined) rows = rows.slice(0, this.options.limit);
    const next = new Map(rows.map((r) => [r.key, r.value]));
    const deltas: QueryDelta<V>[] = [];
    for (const [key, value] of next) {
      if (!this.visible.has(key)) deltas.push({ type: 'ENTER', key, value });
      else if (this.visible.get(key) !== value) deltas.push({ type: 'UPDATE', key, value });
    }
    for (const key of this.visible.keys()) if (!next.has(key)) deltas.push({ type: 'LEAVE', key, value: undefined });
    const orderChanged = rows.length !== this.rows.length || rows.some((r, i) => r.key !== this.rows[i]?.key);
    this.visible = next;
    if (deltas.length === 0 && !orderChanged) return;
    this.rows = rows;
    for (const l of [...this.deltaListeners]) if (deltas.length > 0) l(deltas);
    for (const l of [...this.listeners]) l(rows);
  }
}
