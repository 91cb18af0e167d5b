/**
 * A live query. It answers at once from the local replica, then merges what the server says
 * (QUERY_RESP, QUERY_UPDATE) for keys the replica does not hold; for keys it does hold, the
 * replica wins, because it includes this client's own writes the server has not seen yet.
 * Every change recomputes the visible rows (batched per microtask) and reports the difference.
 *
 * Two shapes of rows: TopGun's `T & {_key}` (`subscribe`, the primary spelling) and ours,
 * `{key, value}` (`results`, `subscribeRows`), which keeps non-object values intact.
 *
 * Pages: `limit` is a window that `loadMore()` widens (the local replica answers the wider
 * window at once, the server's rows follow). A query given a server `cursor` or a `groupBy`
 * shows the server's rows only: neither can be evaluated against the local replica.
 */
import { compareRows, compileFilter, type CompiledFilter, type PredicateNode, type SortField } from '../crdt/predicate.js';
import { TimeoutError } from '../errors.js';
import type { WireQuery } from '../protocol.js';

/** TopGun's query filter (`client.query(map, filter)`); `QueryOptions` is our name for it. */
export interface QueryFilter {
  /** Equality on fields (all must match). */
  where?: Record<string, unknown>;
  /** A predicate tree, e.g. from `Predicates`. */
  predicate?: PredicateNode;
  /** `{field: 'asc' | 'desc'}` or the wire's array form. */
  sort?: Record<string, 'asc' | 'desc'> | SortField[];
  /** Window size; `loadMore()` widens it. */
  limit?: number;
  /** A `nextCursor` from an earlier page: this query then shows that server page only. */
  cursor?: string;
  /** Field selection: rows carry only these fields (dot paths allowed). */
  fields?: string[];
  /** Server-side grouping (rows are the server's group rows only). */
  groupBy?: string[];
  aggregations?: { func: 'count' | 'sum' | 'avg' | 'min' | 'max' | string; field?: string }[];
}

/** Our name for the query filter. */
export type QueryOptions = QueryFilter;

/** A row as TopGun shapes it: the value's fields and its key (non-object values: `{_key, value}`). */
export type QueryResultItem<T> = T & { _key: string };

/** A row as we shape it: key and value side by side. */
export interface QueryRow<V> {
  key: string;
  value: V;
}

export type ChangeType = 'ENTER' | 'UPDATE' | 'LEAVE';

/** Our delta shape (`onDelta`). */
export interface QueryDelta<V> {
  type: ChangeType;
  key: string;
  value: V | undefined;
}

/** TopGun's change shape (`onChanges`, `useQuery().changes`). */
export interface ChangeEvent<T> {
  type: 'add' | 'update' | 'remove';
  key: string;
  value?: T;
  previousValue?: T;
  timestamp: number;
}

export type CursorStatus = 'valid' | 'expired' | 'invalid' | 'none';

export interface PaginationInfo {
  nextCursor?: string;
  hasMore: boolean;
  cursorStatus: CursorStatus;
}

/** What the query reads from the client: the local rows of its map. */
export interface QuerySource<V> {
  localRecord(key: string): { value: V | null } | undefined;
  localEntries(): Iterable<[string, V]>;
}

/** What the query asks of the client. */
export interface QueryHost {
  close(handle: { readonly id: string }): void;
  /** The wire query changed (a wider window): send it again. */
  resubscribe(handle: { readonly id: string; readonly wireQuery: WireQuery }): void;
  /** False for a local-only client: then the replica is the whole answer. */
  hasServer(): boolean;
}

/** Changes kept for `getPendingChanges()` / `consumeChanges()`. */
const MAX_PENDING_CHANGES = 1000;

export function normaliseSort(sort: QueryOptions['sort']): SortField[] {
  if (!sort) return [];
  if (Array.isArray(sort)) return sort;
  return Object.entries(sort).map(([field, direction]) => ({ field, direction }));
}

export function toWireQuery(options: QueryOptions, limit = options.limit): WireQuery {
  const q: WireQuery = {};
  if (options.where) q.where = options.where;
  if (options.predicate) q.predicate = options.predicate;
  const sort = normaliseSort(options.sort);
  if (sort.length > 0) q.sort = sort;
  if (limit !== undefined) q.limit = limit;
  if (options.cursor !== undefined) q.cursor = options.cursor;
  if (options.fields) q.fields = options.fields;
  if (options.groupBy) q.groupBy = options.groupBy;
  if (options.aggregations) q.aggregations = options.aggregations;
  return q;
}

/** Structural equality of plain values (what a decoded record holds). */
export function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    if (!(a instanceof Uint8Array && b instanceof Uint8Array) || a.length !== b.length) return false;
    return a.every((x, i) => x === b[i]);
  }
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && sameValue((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/** `{...value, _key}` for object values; `{_key, value}` for anything else. */
export function toResultItem<V>(key: string, value: V): QueryResultItem<V> {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) return { ...(value as object), _key: key } as QueryResultItem<V>;
  return { _key: key, value } as unknown as QueryResultItem<V>;
}

/** The selected fields of a value (dot paths build nested objects); non-objects pass through. */
export function projectFields(value: unknown, fields: string[] | undefined): unknown {
  if (!fields || value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  const out: Record<string, unknown> = {};
  for (const f of fields) {
    const path = f.split('.');
    let src: unknown = value;
    for (const p of path) src = src !== null && typeof src === 'object' ? (src as Record<string, unknown>)[p] : undefined;
    if (src === undefined) continue;
    let dst = out;
    for (const p of path.slice(0, -1)) dst = (dst[p] ??= {}) as Record<string, unknown>;
    dst[path[path.length - 1]!] = src;
  }
  return out;
}

export class QueryHandle<V = unknown> {
  readonly filter: CompiledFilter;
  private readonly host: QueryHost;
  private readonly sort: SortField[];
  /** Rows come from the server only (a cursor page or a grouping). */
  private readonly serverOnly: boolean;
  private readonly pageSize: number | undefined;
  private windowLimit: number | undefined;
  private readonly server = new Map<string, V>();
  private rows: QueryRow<V>[] = [];
  private items: QueryResultItem<V>[] | undefined;
  /** Raw (unprojected) values of the visible rows, by key. */
  private visible = new Map<string, V>();
  private serverAnswered = false;
  private serverPage: { nextCursor?: string; hasMore: boolean; cursorStatus: CursorStatus } = { hasMore: false, cursorStatus: 'none' };
  private localHasMore = false;
  private pagination: PaginationInfo = { hasMore: false, cursorStatus: 'none' };
  private scheduled = false;
  private closed = false;
  private pendingChanges: ChangeEvent<V>[] = [];
  private settledWaiters: (() => void)[] = [];
  private readonly listeners = new Set<(rows: QueryResultItem<V>[]) => void>();
  private readonly rowListeners = new Set<(rows: QueryRow<V>[]) => void>();
  private readonly deltaListeners = new Set<(deltas: QueryDelta<V>[]) => void>();
  private readonly changeListeners = new Set<(changes: ChangeEvent<V>[]) => void>();
  private readonly paginationListeners = new Set<(info: PaginationInfo) => void>();

  constructor(
    readonly id: string,
    readonly mapName: string,
    readonly options: QueryFilter,
    private readonly source: QuerySource<V>,
    host: QueryHost | ((handle: QueryHandle<V>) => void),
  ) {
    this.host = typeof host === 'function' ? { close: host, resubscribe: () => undefined, hasServer: () => true } : host;
    this.filter = compileFilter(options); // throws PredicateError before anything is sent
    this.sort = normaliseSort(options.sort);
    if (options.limit !== undefined && (!Number.isInteger(options.limit) || options.limit < 0 || options.limit > 0xffffffff)) {
      throw new RangeError('limit must be a non-negative 32-bit integer');
    }
    this.serverOnly = options.cursor !== undefined || (options.groupBy?.length ?? 0) > 0;
    this.pageSize = options.limit;
    this.windowLimit = options.limit;
    this.recompute();
  }

  /** The query as it goes on the wire now (the window included). */
  get wireQuery(): WireQuery {
    return toWireQuery(this.options, this.windowLimit);
  }

  /** Current rows, in query order, as `{key, value}`. */
  get results(): QueryRow<V>[] {
    return this.rows;
  }

  /** True once the server's first answer (for the current window) has been merged. */
  get isServerConfirmed(): boolean {
    return this.serverAnswered;
  }

  getFilter(): QueryFilter {
    return this.options;
  }

  getMapName(): string {
    return this.mapName;
  }

  /** TopGun shape: called with `T & {_key}` rows now and after every change. Returns an unsubscribe function. */
  subscribe(listener: (results: QueryResultItem<V>[]) => void): () => void {
    this.listeners.add(listener);
    listener(this.resultItems());
    return () => this.listeners.delete(listener);
  }

  /** Our shape: called with `{key, value}` rows now and after every change. */
  subscribeRows(listener: (rows: QueryRow<V>[]) => void): () => void {
    this.rowListeners.add(listener);
    listener(this.rows);
    return () => this.rowListeners.delete(listener);
  }

  /** Called with ENTER/UPDATE/LEAVE changes (not with the initial rows). */
  onDelta(listener: (deltas: QueryDelta<V>[]) => void): () => void {
    this.deltaListeners.add(listener);
    return () => this.deltaListeners.delete(listener);
  }

  /** TopGun shape of `onDelta`: add/update/remove with the previous value. */
  onChanges(listener: (changes: ChangeEvent<V>[]) => void): () => void {
    this.changeListeners.add(listener);
    return () => this.changeListeners.delete(listener);
  }

  /** Changes since the last `consumeChanges()` (at most the latest 1,000). */
  getPendingChanges(): ChangeEvent<V>[] {
    return [...this.pendingChanges];
  }

  consumeChanges(): ChangeEvent<V>[] {
    const c = this.pendingChanges;
    this.pendingChanges = [];
    return c;
  }

  getPaginationInfo(): PaginationInfo {
    return this.pagination;
  }

  onPaginationChange(listener: (info: PaginationInfo) => void): () => void {
    this.paginationListeners.add(listener);
    return () => this.paginationListeners.delete(listener);
  }

  /**
   * Widen the window by one page (the first `limit`): the local replica answers at once, the
   * server's rows follow. Resolves when the server has answered the wider window (at once
   * without a server). A query without `limit`, or a cursor page, has nothing to load.
   */
  loadMore(): Promise<void> {
    if (this.closed || this.pageSize === undefined || this.pageSize === 0 || this.serverOnly) return Promise.resolve();
    if (!this.pagination.hasMore) return Promise.resolve();
    this.windowLimit = Math.min(0xffffffff, (this.windowLimit ?? 0) + this.pageSize);
    this.serverAnswered = false;
    this.host.resubscribe(this);
    this.recompute();
    return this.whenSettled().catch(() => undefined);
  }

  /** True once the server has answered (or there is no server to wait for). */
  isSettled(): boolean {
    return this.serverAnswered || !this.host.hasServer();
  }

  /** Resolves once settled; rejects with TimeoutError after `timeoutMs` if given. */
  whenSettled(timeoutMs?: number): Promise<void> {
    if (this.isSettled()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const done = (): void => {
        if (timer) clearTimeout(timer);
        resolve();
      };
      this.settledWaiters.push(done);
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          this.settledWaiters = this.settledWaiters.filter((w) => w !== done);
          reject(new TimeoutError(`query on '${this.mapName}' not answered by the server within ${timeoutMs} ms`));
        }, timeoutMs);
      }
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.listeners.clear();
    this.rowListeners.clear();
    this.deltaListeners.clear();
    this.changeListeners.clear();
    this.paginationListeners.clear();
    this.host.close(this);
  }

  /** TopGun's name for `close()`. */
  unsubscribe(): void {
    this.close();
  }

  // ---- inputs from the client ----

  /** The local map changed (a write, a sync merge, an event). */
  localChanged(): void {
    if (!this.serverOnly) this.schedule();
  }

  serverResponse(results: { key: string; value: unknown }[], page: { nextCursor?: unknown; hasMore?: unknown; cursorStatus?: unknown } = {}): void {
    this.server.clear();
    for (const r of results) this.server.set(r.key, r.value as V);
    this.serverPage = {
      nextCursor: typeof page.nextCursor === 'string' ? page.nextCursor : undefined,
      hasMore: page.hasMore === true,
      cursorStatus: (typeof page.cursorStatus === 'string' ? page.cursorStatus : 'none') as CursorStatus,
    };
    this.serverAnswered = true;
    this.schedule();
    const waiters = this.settledWaiters;
    this.settledWaiters = [];
    for (const w of waiters) w();
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

  private resultItems(): QueryResultItem<V>[] {
    this.items ??= this.rows.map((r) => toResultItem(r.key, r.value));
    return this.items;
  }

  /** Recompute now (tests and the client call it to avoid waiting for the microtask). */
  recompute(): void {
    const candidates = new Map<string, V>();
    if (this.serverOnly) {
      for (const [key, value] of this.server) candidates.set(key, value);
    } else {
      for (const [key, value] of this.source.localEntries()) if (this.filter(value)) candidates.set(key, value);
      for (const [key, value] of this.server) {
        // The replica knows this key: its answer (including a removal) already counted above.
        if (this.source.localRecord(key) !== undefined) continue;
        if (this.filter(value)) candidates.set(key, value);
      }
    }
    let raw = [...candidates].map(([key, value]) => ({ key, value }));
    if (!this.serverOnly || this.sort.length > 0) raw.sort((a, b) => compareRows(this.sort, a, b));
    const limit = this.serverOnly ? undefined : this.windowLimit;
    this.localHasMore = limit !== undefined && raw.length > limit;
    if (limit !== undefined) raw = raw.slice(0, limit);
    const next = new Map(raw.map((r) => [r.key, r.value]));
    const deltas: QueryDelta<V>[] = [];
    const changes: ChangeEvent<V>[] = [];
    const now = Date.now();
    const fields = this.serverOnly ? undefined : this.options.fields;
    const shown = (v: V): V => projectFields(v, fields) as V;
    for (const [key, value] of next) {
      const prev = this.visible.get(key);
      if (!this.visible.has(key)) {
        deltas.push({ type: 'ENTER', key, value: shown(value) });
        changes.push({ type: 'add', key, value: shown(value), timestamp: now });
      } else if (prev !== value && !sameValue(prev, value)) {
        deltas.push({ type: 'UPDATE', key, value: shown(value) });
        changes.push({ type: 'update', key, value: shown(value), previousValue: shown(prev as V), timestamp: now });
      }
    }
    for (const [key, prev] of this.visible) {
      if (next.has(key)) continue;
      deltas.push({ type: 'LEAVE', key, value: undefined });
      changes.push({ type: 'remove', key, previousValue: shown(prev), timestamp: now });
    }
    const orderChanged = raw.length !== this.rows.length || raw.some((r, i) => r.key !== this.rows[i]?.key);
    // Keep the value already shown when only its identity changed (the same record, decoded again).
    for (const [key, value] of next) {
      const prev = this.visible.get(key);
      if (prev !== undefined && prev !== value && sameValue(prev, value)) next.set(key, prev);
    }
    for (const r of raw) r.value = next.get(r.key)!;
    this.visible = next;
    this.updatePagination();
    if (deltas.length === 0 && !orderChanged) return;
    this.rows = raw.map((r) => ({ key: r.key, value: shown(r.value) }));
    this.items = undefined;
    if (changes.length > 0) {
      this.pendingChanges.push(...changes);
      if (this.pendingChanges.length > MAX_PENDING_CHANGES) this.pendingChanges.splice(0, this.pendingChanges.length - MAX_PENDING_CHANGES);
    }
    for (const l of [...this.deltaListeners]) if (deltas.length > 0) l(deltas);
    for (const l of [...this.changeListeners]) if (changes.length > 0) l(changes);
    for (const l of [...this.rowListeners]) l(this.rows);
    if (this.listeners.size > 0) {
      const items = this.resultItems();
      for (const l of [...this.listeners]) l(items);
    }
  }

  private updatePagination(): void {
    const next: PaginationInfo = {
      hasMore: this.localHasMore || this.serverPage.hasMore,
      cursorStatus: this.serverPage.cursorStatus,
    };
    if (this.serverPage.nextCursor !== undefined) next.nextCursor = this.serverPage.nextCursor;
    const p = this.pagination;
    if (p.hasMore === next.hasMore && p.cursorStatus === next.cursorStatus && p.nextCursor === next.nextCursor) return;
    this.pagination = next;
    for (const l of [...this.paginationListeners]) l(next);
  }
}
