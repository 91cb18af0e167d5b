/**
 * HTTP sync (COMPAT §2): the sans-IO machine behind `transport: 'http'`, for places where a
 * WebSocket cannot live (serverless functions, strict proxies). Like `SyncEngine` it never
 * touches the network, a clock, a timer or storage: inputs are calls with the current time,
 * outputs are effects, and the driver (client.ts with http-transport.ts) performs the POSTs.
 *
 * States:  disconnected (no server)     offline ⇄ (any)   (browser connectivity)
 *          connecting ──200──→ connected ──poll every pollIntervalMs──┐
 *              ↑ ↓ network error, timeout, 4xx/5xx       ↑ ↓ failure   │
 *              └── backoff ←───────────────────────────────┴───────────┘
 *          connecting ──401 for a token × maxAuthFailures──→ failed ──resume()──→ connecting
 *
 * Invariants:
 * - 401s to a request carrying a token are counted until a 200; at `maxAuthFailures` in a row
 *   the engine is `failed`: nothing is due until `resume()` (a new token, or `start()`).
 * - At most one request is in flight; answers to any other request id are ignored (a request
 *   that timed out, or was abandoned by going offline, may still answer later).
 * - A request carries the oldest `batchSize` ops of the log. Ops leave the log only through
 *   `opsAcked` (as `OP_ACK` makes them leave it), so an unanswered request loses nothing: its
 *   ops go out again with the next one, with their own HLC timestamps (idempotent).
 * - The next request is due at once when the previous one could not carry everything (a full
 *   batch, or ops, queries or maps added while it was in flight), after `retryDelayMs` when the
 *   server held ops back (a retryable refusal), else after `pollIntervalMs`.
 * - Every request carries `syncMaps` for every LWW map with its last `serverSyncTimestamp`,
 *   and the live queries (at most `QUERIES_PER_REQUEST`, in turn): the server keeps no state
 *   between requests, so each query is re-run one-shot and its rows replace the last ones.
 *   OR maps are not served over HTTP (COMPAT §2.2).
 */
import { isTimestamp, type Timestamp } from '../crdt/hlc.js';
import type { LWWRecord } from '../crdt/lww-map.js';
import type { HttpOpResult, HttpQuery, HttpSyncRequest, WireQuery, WriteConcern } from '../protocol.js';
import type { StoredOp } from '../storage/types.js';
import { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff.js';
import type { MapKind, EngineState } from './engine.js';
import type { HttpEffect, SyncMachine } from './machine.js';
import { jwtExpiryMs } from './token.js';

/** Entries per list of a request other than `operations` that the server accepts (COMPAT §2.2). */
export const QUERIES_PER_REQUEST = 64;

/** `lastSyncTimestamp` of a map never synced: "from the beginning" (COMPAT §2.1). */
export const NEVER_SYNCED: Timestamp = { millis: 0, counter: 0, nodeId: '' };

/** What the HTTP engine reads from the replica (pure data, no I/O). */
export interface HttpReplica {
  /** Unsynced ops with seq > `afterSeq`, ascending, at most `limit`. */
  pendingOps(afterSeq: number, limit: number): StoredOp[];
  /** The `serverSyncTimestamp` of the map's last delta, or `NEVER_SYNCED`. */
  syncTimestamp(mapName: string): Timestamp;
}

export interface HttpEngineOptions {
  hasServer: boolean;
  /** Is a token or token provider configured? Then every request carries `Bearer <token>`. */
  hasToken: boolean;
  /** Time between polls while nothing is waiting (default 5,000 ms, as the TS provider). */
  pollIntervalMs?: number;
  /** A request unanswered this long is abandoned and retried with backoff (default 30,000). */
  requestTimeoutMs?: number;
  /** Ops per request (default 500; the server takes up to its `ops_per_batch_max`). */
  batchSize?: number;
  /** After an ack that stops short of the ops sent (a retryable refusal), wait this long. */
  retryDelayMs?: number;
  /** Fetch a new token this long before the current one's `exp`. */
  tokenRefreshMarginMs?: number;
  /** 401s in a row to a request with a token after which the engine stops: `failed` (default 3). */
  maxAuthFailures?: number;
  backoff?: Partial<BackoffOptions>;
  random?: () => number;
}

interface InFlight {
  id: number;
  sentAt: number;
  /** Seq of the last op carried, if any. */
  lastSeq: number | undefined;
  /** Was the op batch full (more ops may wait behind it)? */
  fullBatch: boolean;
  /** The token the request carried (null: none), to tell "required" from "refused". */
  token: string | null;
}

interface Token {
  value: string | null;
  refreshAt: number | undefined;
}

export class HttpSyncEngine implements SyncMachine {
  private stateValue: EngineState = 'stopped';
  private online = true;
  private attempt = 0;
  /** 401s to a token since the last 200 (bounded by `maxAuthFailures`). */
  private authFailures = 0;
  private nextId = 1;
  private inFlight: InFlight | undefined;
  /** When the next request is due (poll or retry); undefined while one is in flight. */
  private dueAt: number | undefined;
  /** Something changed while a request was in flight: send again as soon as it answers. */
  private dirty = false;
  private token: Token | undefined;
  private awaitingToken = false;
  private rotation = 0;
  private readonly maps = new Set<string>();
  /** Maps that received a delta since the last (re)connection (`mapSynced` once each). */
  private readonly synced = new Set<string>();
  private readonly queries = new Map<string, HttpQuery>();
  private readonly o: Required<Omit<HttpEngineOptions, 'backoff'>> & { backoff: BackoffOptions };

  constructor(
    private readonly replica: HttpReplica,
    options: HttpEngineOptions,
  ) {
    this.o = {
      hasServer: options.hasServer,
      hasToken: options.hasToken,
      pollIntervalMs: options.pollIntervalMs ?? 5000,
      requestTimeoutMs: options.requestTimeoutMs ?? 30_000,
      batchSize: options.batchSize ?? 500,
      retryDelayMs: options.retryDelayMs ?? 1000,
      tokenRefreshMarginMs: options.tokenRefreshMarginMs ?? 30_000,
      maxAuthFailures: options.maxAuthFailures ?? 3,
      backoff: { ...DEFAULT_BACKOFF, ...options.backoff },
      random: options.random ?? Math.random,
    };
    if (!(this.o.pollIntervalMs > 0)) throw new RangeError('pollIntervalMs must be positive');
    if (!(this.o.batchSize > 0)) throw new RangeError('batchSize must be positive');
    if (!(this.o.maxAuthFailures >= 1)) throw new RangeError('maxAuthFailures must be at least 1');
  }

  get state(): EngineState {
    return this.stateValue;
  }

  /** There is no WebSocket session: one-off requests (locks, journal, SQL) cannot be sent. */
  get isAuthenticated(): boolean {
    return false;
  }

  nextDeadline(): number | undefined {
    if (this.inFlight) return this.inFlight.sentAt + this.o.requestTimeoutMs;
    return this.dueAt;
  }

  // ---- lifecycle -------------------------------------------------------------------------

  start(now: number, online = true): HttpEffect[] {
    this.online = online;
    const out: HttpEffect[] = [];
    if (!this.o.hasServer) this.setState('disconnected', out);
    else if (!online) this.setState('offline', out);
    else this.connect(now, out);
    return out;
  }

  stop(): HttpEffect[] {
    const out: HttpEffect[] = [];
    this.abandon(out);
    this.dueAt = undefined;
    this.setState('stopped', out);
    return out;
  }

  resume(now: number): HttpEffect[] {
    const out: HttpEffect[] = [];
    if (this.stateValue !== 'failed') return out;
    this.authFailures = 0;
    this.attempt = 0;
    if (this.online) this.connect(now, out);
    else this.setState('offline', out);
    return out;
  }

  connectivity(online: boolean, now: number): HttpEffect[] {
    const out: HttpEffect[] = [];
    const was = this.online;
    this.online = online;
    // `failed` stays failed across connectivity changes: only a new token brings it back.
    if (online === was || this.stateValue === 'stopped' || this.stateValue === 'failed' || !this.o.hasServer) return out;
    if (!online) {
      this.abandon(out);
      this.dueAt = undefined;
      this.setState('offline', out);
    } else {
      this.attempt = 0; // back online is a fresh start, not a penalty
      this.connect(now, out);
    }
    return out;
  }

  tick(now: number): HttpEffect[] {
    const out: HttpEffect[] = [];
    const f = this.inFlight;
    if (f && now >= f.sentAt + this.o.requestTimeoutMs) {
      this.abandon(out);
      this.retryLater(now, out);
      return out;
    }
    if (this.dueAt !== undefined && now >= this.dueAt) {
      if (this.stateValue === 'backoff') this.setState('connecting', out);
      this.send(now, out);
    }
    return out;
  }

  tokenReady(token: string | null, now: number): HttpEffect[] {
    const out: HttpEffect[] = [];
    if (!this.awaitingToken) return out;
    this.awaitingToken = false;
    const exp = token ? jwtExpiryMs(token) : undefined;
    this.token = { value: token, refreshAt: exp === undefined ? undefined : exp - this.o.tokenRefreshMarginMs };
    this.post(now, token, out); // even a token near its expiry is used once: no fetch loop
    return out;
  }

  // ---- local inputs ---------------------------------------------------------------------

  addMap(kind: MapKind, name: string): HttpEffect[] {
    if (kind !== 'lww' || this.maps.has(name)) return [];
    this.maps.add(name);
    return this.wake();
  }

  opsAdded(now: number): HttpEffect[] {
    void now;
    return this.wake();
  }

  addQuery(queryId: string, mapName: string, query: WireQuery): HttpEffect[] {
    this.queries.set(queryId, toHttpQuery(queryId, mapName, query));
    return this.wake();
  }

  removeQuery(queryId: string): HttpEffect[] {
    this.queries.delete(queryId);
    return [];
  }

  // Topics, counters and one-off requests need a WebSocket: `POST /sync` has no such fields.
  addTopic(): HttpEffect[] {
    return [];
  }

  removeTopic(): HttpEffect[] {
    return [];
  }

  publish(): HttpEffect[] {
    return [];
  }

  addCounter(): HttpEffect[] {
    return [];
  }

  request(): HttpEffect[] {
    return [];
  }

  // ---- answers ---------------------------------------------------------------------------

  /** A 200 answer, decoded. */
  responded(requestId: number, body: unknown, now: number): HttpEffect[] {
    const out: HttpEffect[] = [];
    const f = this.inFlight;
    if (!f || f.id !== requestId) return out;
    this.inFlight = undefined;
    if (body === null || typeof body !== 'object' || !isTimestamp((body as { serverHlc?: unknown }).serverHlc)) {
      out.push(serverError(502, 'POST /sync answered 200 without a serverHlc: not a TopGun sync reply'));
      this.retryLater(now, out);
      return out;
    }
    const reply = body as Record<string, unknown>;
    out.push({ kind: 'observeTimestamp', timestamp: reply.serverHlc as Timestamp });
    const opErrors = this.errors(reply.errors, out);
    const complete = this.acks(reply.ack, f, opErrors, out);
    this.deltas(reply.deltas, out);
    this.queryResults(reply.queryResults, out);
    this.attempt = 0;
    this.authFailures = 0;
    if (this.stateValue !== 'connected') {
      out.push({ kind: 'authenticated', userId: undefined });
      this.setState('connected', out);
    }
    if (!complete) this.dueAt = now + this.o.retryDelayMs;
    else if (this.dirty || f.fullBatch) this.dueAt = now;
    else this.dueAt = now + this.o.pollIntervalMs;
    this.dirty = false;
    return out;
  }

  /** A non-200 answer: `message` from the JSON error body (or the status text). */
  refused(requestId: number, status: number, message: string, now: number): HttpEffect[] {
    const out: HttpEffect[] = [];
    const f = this.inFlight;
    if (!f || f.id !== requestId) return out;
    this.inFlight = undefined;
    if (status === 401) {
      this.token = undefined; // ask the provider again before the next request
      if (f.token === null) out.push({ kind: 'authRequired' });
      else if (++this.authFailures < this.o.maxAuthFailures) out.push({ kind: 'authFailed', error: message });
      else {
        this.dueAt = undefined;
        this.synced.clear();
        this.setState('failed', out);
        out.push({ kind: 'authStopped', error: message, failures: this.authFailures });
        return out;
      }
    } else {
      out.push(serverError(status, message));
    }
    this.retryLater(now, out);
    return out;
  }

  /** No answer: the network failed or the body could not be read. */
  failed(requestId: number, now: number): HttpEffect[] {
    const out: HttpEffect[] = [];
    const f = this.inFlight;
    if (!f || f.id !== requestId) return out;
    this.inFlight = undefined;
    this.retryLater(now, out);
    return out;
  }

  // ---- internals --------------------------------------------------------------------------

  private setState(state: EngineState, out: HttpEffect[]): void {
    if (state === this.stateValue) return;
    this.stateValue = state;
    out.push({ kind: 'state', state });
  }

  private connect(now: number, out: HttpEffect[]): void {
    this.setState('connecting', out);
    this.send(now, out);
  }

  /** Something new to send: now if idle and connected, else with the next request. */
  private wake(): HttpEffect[] {
    if (this.inFlight || this.awaitingToken) this.dirty = true;
    else if (this.stateValue === 'connected') this.dueAt = 0; // due at once, whatever `now` is
    return [];
  }

  private send(now: number, out: HttpEffect[]): void {
    if (this.inFlight || this.awaitingToken) return;
    this.dueAt = undefined;
    const t = this.token;
    if (this.o.hasToken && (t === undefined || (t.refreshAt !== undefined && now >= t.refreshAt))) {
      this.awaitingToken = true;
      out.push({ kind: 'fetchToken' });
      return;
    }
    this.post(now, t?.value ?? null, out);
  }

  private post(now: number, token: string | null, out: HttpEffect[]): void {
    const ops = this.replica.pendingOps(0, this.o.batchSize);
    const body: Omit<HttpSyncRequest, 'clientId' | 'clientHlc'> = {};
    if (ops.length > 0) body.operations = ops.map((o) => o.op);
    if (this.maps.size > 0) {
      body.syncMaps = [...this.maps].map((mapName) => ({ mapName, lastSyncTimestamp: this.replica.syncTimestamp(mapName) }));
    }
    const queries = this.nextQueries();
    if (queries.length > 0) body.queries = queries;
    const id = this.nextId++;
    this.inFlight = { id, sentAt: now, lastSeq: ops.at(-1)?.seq, fullBatch: ops.length >= this.o.batchSize, token };
    this.dirty = false;
    out.push({ kind: 'post', requestId: id, body, token });
  }

  /** The live queries for this request: all of them, or the next `QUERIES_PER_REQUEST` in turn. */
  private nextQueries(): HttpQuery[] {
    const all = [...this.queries.values()];
    if (all.length <= QUERIES_PER_REQUEST) return all;
    const start = this.rotation % all.length;
    this.rotation = start + QUERIES_PER_REQUEST;
    return [...all, ...all].slice(start, start + QUERIES_PER_REQUEST);
  }

  private abandon(out: HttpEffect[]): void {
    const f = this.inFlight;
    this.inFlight = undefined;
    this.awaitingToken = false;
    if (f) out.push({ kind: 'abortRequest', requestId: f.id });
  }

  private retryLater(now: number, out: HttpEffect[]): void {
    this.synced.clear();
    if (!this.online) {
      this.setState('offline', out);
      return;
    }
    this.dueAt = now + backoffDelay(this.attempt, this.o.backoff, this.o.random);
    this.attempt += 1;
    this.setState('backoff', out);
  }

  /**
   * `errors`: those naming an op are kept for its rejection; the others are reported as the
   * WebSocket's `ERROR` would be.
   */
  private errors(raw: unknown, out: HttpEffect[]): Map<string, { code: number; message: string }> {
    const byOp = new Map<string, { code: number; message: string }>();
    if (!Array.isArray(raw)) return byOp;
    for (const e of raw as { code?: unknown; message?: unknown; context?: { opId?: unknown } }[]) {
      const code = typeof e?.code === 'number' ? e.code : 0;
      const message = typeof e?.message === 'string' ? e.message : 'unknown error';
      const opId = e?.context?.opId;
      if (typeof opId === 'string') byOp.set(opId, { code, message });
      else out.push(serverError(code, message, e?.context));
    }
    return byOp;
  }

  /**
   * `ack`: refused ops reject their waiters first (as `OP_REJECTED` precedes `OP_ACK`), then
   * every op up to `lastId` leaves the log, each accepted one with its own level. Returns false
   * when the server held back ops this request carried (retry after `retryDelayMs`).
   */
  private acks(raw: unknown, f: InFlight, opErrors: Map<string, { code: number; message: string }>, out: HttpEffect[]): boolean {
    if (f.lastSeq === undefined) return true;
    const ack = raw as { lastId?: unknown; results?: unknown } | undefined;
    const results = (Array.isArray(ack?.results) ? ack.results : []) as HttpOpResult[];
    for (const r of results) {
      const seq = Number(r?.opId);
      if (r?.success !== false || !Number.isSafeInteger(seq)) continue;
      const e = opErrors.get(String(r.opId));
      out.push({ kind: 'opRejected', seq, reason: e?.message ?? r.error ?? 'refused by the server', code: e?.code });
    }
    const lastId = Number(ack?.lastId);
    if (!Number.isSafeInteger(lastId)) return false;
    let upTo = 0;
    let level: WriteConcern | undefined;
    for (const r of results) {
      const seq = Number(r?.opId);
      if (r?.success !== true || !Number.isSafeInteger(seq) || seq > lastId || seq <= upTo) continue;
      upTo = seq;
      level = r.achievedLevel;
      out.push({ kind: 'opsAcked', upToSeq: seq, achievedLevel: level });
    }
    if (lastId > upTo) out.push({ kind: 'opsAcked', upToSeq: lastId, achievedLevel: level });
    return lastId >= f.lastSeq;
  }

  private deltas(raw: unknown, out: HttpEffect[]): void {
    if (!Array.isArray(raw)) return;
    for (const d of raw as { mapName?: unknown; records?: unknown; serverSyncTimestamp?: unknown }[]) {
      if (typeof d?.mapName !== 'string' || !this.maps.has(d.mapName)) continue;
      const mapName = d.mapName;
      const records = (Array.isArray(d.records) ? d.records : []) as { key: string; record: LWWRecord }[];
      if (records.length > 0) out.push({ kind: 'applyLww', mapName, records: records.map(({ key, record }) => ({ key, record })) });
      if (isTimestamp(d.serverSyncTimestamp)) {
        out.push({ kind: 'observeTimestamp', timestamp: d.serverSyncTimestamp });
        out.push({ kind: 'syncTimestamp', mapName, timestamp: d.serverSyncTimestamp });
      }
      if (!this.synced.has(mapName)) {
        this.synced.add(mapName);
        out.push({ kind: 'mapSynced', mapKind: 'lww', mapName });
      }
    }
  }

  /** Rows of a live query, delivered as the WebSocket's `QUERY_RESP` would deliver them. */
  private queryResults(raw: unknown, out: HttpEffect[]): void {
    if (!Array.isArray(raw)) return;
    for (const r of raw as { queryId?: unknown; results?: unknown; hasMore?: unknown; nextCursor?: unknown }[]) {
      if (typeof r?.queryId !== 'string' || !this.queries.has(r.queryId)) continue;
      const payload: Record<string, unknown> = { queryId: r.queryId, results: Array.isArray(r.results) ? r.results : [] };
      if (typeof r.hasMore === 'boolean') payload.hasMore = r.hasMore;
      if (typeof r.nextCursor === 'string') payload.nextCursor = r.nextCursor;
      out.push({ kind: 'deliver', message: { type: 'QUERY_RESP', payload } });
    }
  }
}

function serverError(code: number, message: string, details?: unknown): HttpEffect {
  const payload: Record<string, unknown> = { code, message };
  if (details !== undefined) payload.details = details;
  return { kind: 'deliver', message: { type: 'ERROR', payload } };
}

/**
 * A live query as `POST /sync` takes it: `where` becomes the field-equality `filter`. A
 * predicate or sort cannot be sent, so the server returns a superset (the handle filters and
 * sorts locally); `limit` is sent only when the server's key order is the query's order.
 */
export function toHttpQuery(queryId: string, mapName: string, query: WireQuery): HttpQuery {
  const q: HttpQuery = { queryId, mapName };
  if (query.where) q.filter = query.where;
  if (query.limit !== undefined && !query.predicate && (query.sort?.length ?? 0) === 0) q.limit = query.limit;
  return q;
}
