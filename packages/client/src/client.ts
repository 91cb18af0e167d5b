/**
 * `TopGunClient`: the driver around the sans-IO sync engine. It wires the in-memory replica
 * (what every read is served from), the op log, the persister (IndexedDB or memory, written
 * behind the UI's back), the WebSocket transport and one timer, and carries out the engine's
 * effects in order.
 */
import { HLC } from './crdt/hlc.js';
import type { LWWRecord } from './crdt/lww-map.js';
import type { ORMapRecord } from './crdt/or-map.js';
import { AuthFailedError, NoWebSocketError, NotSupportedError, OpRejectedError, SqlError, TimeoutError } from './errors.js';
import { Emitter } from './events.js';
import { CounterHandle } from './features/counter.js';
import { EventJournalReader, JournalManager } from './features/journal.js';
import { LockHandle, LockManager } from './features/lock.js';
import { QueryHandle, type QueryFilter, type QueryHost, type QueryResultItem } from './features/query.js';
import { SqlManager, type SqlResult } from './features/sql.js';
import { TopicHandle, type TopicMessage } from './features/topic.js';
import type { Timestamp } from './crdt/hlc.js';
import { TopGunMap, TopGunORMap, type WriteOptions } from './maps.js';
import { OpLog, type BackpressureOptions, type WriteAck } from './op-log.js';
import type { AnyMessage, ClientOp } from './protocol.js';
import { LocalReplica, type ChangeSource } from './replica.js';
import { Persister } from './storage/persister.js';
import type { StorageAdapter, StoredRecord } from './storage/types.js';
import type { BackoffOptions } from './sync/backoff.js';
import { SyncEngine, type MapKind, type EngineState } from './sync/engine.js';
import { SyncState, toSyncState, type RecordSyncState, type StateChangeEvent } from './sync/state.js';
import { HttpSyncEngine } from './sync/http-engine.js';
import type { HttpEffect } from './sync/machine.js';
import type { SyncMachine } from './sync/machine.js';
import { HttpTransport, httpSyncUrl, type FetchLike } from './http-transport.js';
import { resolveWebSocket, Transport, type WebSocketFactory } from './transport.js';

export type { BackpressureOptions, WriteAck } from './op-log.js';
export type { WebSocketFactory, WebSocketLike } from './transport.js';
export type { FetchLike } from './http-transport.js';
export type { SqlResult } from './features/sql.js';

export type TokenProvider = () => string | null | undefined | Promise<string | null | undefined>;

/** TopGun's cluster options: accepted; the client connects to the first seed (no routing yet). */
export interface ClusterOptions {
  /** Seed nodes (`ws://host:port`); the client uses the first while it has no `serverUrl`. */
  seeds: string[];
  /** Accepted for TopGun compatibility; partition-aware routing comes with the cluster. */
  smartRouting?: boolean;
  connectionsPerNode?: number;
  connectionTimeoutMs?: number;
  [option: string]: unknown;
}

/** TopGun's backpressure events (`client.onBackpressure(event, listener)`). */
export type BackpressureEvent = 'backpressure:high' | 'backpressure:low' | 'backpressure:paused' | 'backpressure:resumed' | 'operation:dropped';

export interface BackpressureStatus {
  pending: number;
  max: number;
  /** pending / max, 0..(2 with `pause`). */
  percentage: number;
  isPaused: boolean;
  strategy: BackpressureOptions['strategy'];
}

export interface BackpressureEventData {
  pending: number;
  max: number;
  /** With `operation:dropped`: the ids of the ops dropped. */
  opIds?: string[];
}

/** A write the server refused (TopGun's merge rejection; here from `OP_REJECTED` and `MERGE_REJECTED`). */
export interface MergeRejection {
  mapName: string;
  key: string;
  attemptedValue: unknown;
  reason: string;
  timestamp: Timestamp | number;
  /** The op's id, and the server's code (403 policy, 429 rate limit, …), for `OP_REJECTED`s. */
  opId?: string;
  code?: number;
}

export interface TopGunClientOptions {
  /** `ws://host:port/ws`. Without it (and without `httpUrl`) the client works local-only. */
  serverUrl?: string;
  /**
   * `websocket` (default): one live connection. `http`: no WebSocket; the client polls
   * `POST /sync` (ops, map deltas, one-shot queries). Topics, locks, counters, the journal and
   * `sql()` need the WebSocket.
   */
  transport?: 'websocket' | 'http' | 'auto';
  /** The `POST /sync` endpoint; by default derived from `serverUrl` (`ws://h/ws` → `http://h/sync`). */
  httpUrl?: string;
  /** HTTP transport: time between polls while nothing waits to be sent (default 5,000 ms). */
  pollIntervalMs?: number;
  /** HTTP transport: the `fetch` to use (default globalThis.fetch). */
  fetch?: FetchLike;
  storage: StorageAdapter;
  auth?: { token?: string; tokenProvider?: TokenProvider };
  /**
   * Called when the server asks for a token the client does not have, or refuses the one it
   * sent. It may return a token (or a promise of one): the client then authenticates with it
   * at once. Otherwise call `setAuthToken()` / `setAuthTokenProvider()` later. `stopped` is
   * set on the refusal that made the client stop (`maxAuthFailures`); a token returned then
   * starts it again.
   */
  onAuthRequired?: (reason: { error?: string; stopped?: boolean }) => string | null | undefined | void | Promise<string | null | undefined | void>;
  /**
   * Refused tokens in a row (AUTH_FAIL, or HTTP 401 to a token) after which the client stops
   * reconnecting instead of retrying forever (default 3, at least 1). It then reports once — an
   * `AuthFailedError` on the `error` event and `onAuthRequired({ error, stopped: true })` — and
   * its connection state is `ERROR` (`getSyncState().state` `'failed'`). A successful
   * authentication resets the count; a new token (`setAuthToken`, `setAuthTokenProvider`,
   * `setToken`, or one `onAuthRequired` returns), `start()` or `resetConnection()` tries again.
   */
  maxAuthFailures?: number;
  /** TopGun's cluster options (seeds); see `ClusterOptions`. */
  cluster?: ClusterOptions;
  /** \`transport: 'auto'\`: failed WebSocket connects, without one ever opening, before HTTP takes over (default 3). */
  maxWsAttempts?: number;
  /** This replica's id in HLC timestamps and OR tags (no ':'); random by default. */
  nodeId?: string;
  /**
   * WebSocket implementation (Node: `ws`); defaults to globalThis.WebSocket. Where neither
   * exists, a client with a `serverUrl` and the WebSocket transport throws `NoWebSocketError`
   * when constructed (`transport: 'auto'` uses HTTP instead).
   */
  WebSocket?: WebSocketFactory;
  backoff?: Partial<BackoffOptions>;
  heartbeat?: { intervalMs?: number; timeoutMs?: number };
  /** Ops per OP_BATCH (default 500). */
  batchSize?: number;
  backpressure?: Partial<BackpressureOptions>;
  /** Listen to the browser's online/offline events (default true where they exist). */
  watchConnectivity?: boolean;
  /** Clock, for tests. */
  now?: () => number;
}

export interface SyncStatus {
  state: EngineState;
  online: boolean;
  pendingOps: number;
  paused: boolean;
  lastError?: string;
  userId?: string;
}

export type ClientEvents = {
  state: SyncStatus;
  error: Error;
  mapChange: { kind: MapKind; mapName: string; keys: string[]; source: ChangeSource };
  opsDropped: { opIds: string[] };
  opRejected: OpRejectedError;
  mapSynced: { kind: MapKind; mapName: string };
  /** Every decoded frame from the server (for diagnostics and tests). */
  message: AnyMessage;
  connectionState: StateChangeEvent;
  backpressure: { event: BackpressureEvent; data: BackpressureEventData };
  mergeRejected: MergeRejection;
  /** `transport: 'auto'` switched to HTTP sync. */
  transportChange: { transport: 'http'; reason: string };
};

/** Connection-state changes kept for `getStateHistory()`. */
const STATE_HISTORY_MAX = 50;

function randomId(): string {
  const c = globalThis.crypto as Crypto | undefined;
  if (c?.randomUUID) return c.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

export class TopGunClient {
  readonly nodeId: string;
  readonly hlc: HLC;
  /** Resolves once the persisted replica and op log are loaded into memory. */
  readonly ready: Promise<void>;
  private readonly events = new Emitter<ClientEvents>();
  private readonly now: () => number;
  private readonly persister: Persister;
  private readonly replica: LocalReplica;
  private readonly ops: OpLog;
  private engine: SyncMachine;
  /** The WebSocket engine, unless the transport is HTTP. */
  private readonly wsEngine: SyncEngine | undefined;
  private readonly transport: Transport;
  private http: { engine: HttpSyncEngine; transport: HttpTransport } | undefined;
  /** `transport: 'auto'` over a WebSocket that has not opened yet: connect attempts so far. */
  private fallback: { attempts: number; max: number } | undefined;
  private readonly knownMaps: { kind: MapKind; name: string }[] = [];
  private readonly sqlQueries: SqlManager;
  private readonly locks: LockManager;
  /** The server's event journal: `read` pages, `subscribe` streams (resumed after reconnects). */
  readonly journal: JournalManager;
  private readonly mapHandles = new Map<string, TopGunMap<unknown>>();
  private readonly orHandles = new Map<string, TopGunORMap<unknown>>();
  private readonly queries = new Map<string, QueryHandle<unknown>>();
  private readonly topics = new Map<string, TopicHandle<unknown>>();
  private readonly counters = new Map<string, CounterHandle>();
  private journalReader: EventJournalReader | undefined;
  private readonly detach: (() => void)[] = [];
  private nextRequest = 1;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private online = true;
  private lastError: string | undefined;
  private userId: string | undefined;
  private closed = false;
  private readonly options: TopGunClientOptions;
  private readonly stateHistory: StateChangeEvent[] = [];
  private connState: SyncState = SyncState.INITIAL;
  private bpHigh = false;
  private bpPaused = false;
  private readonly rejectedKeys = new Set<string>();

  constructor(options: TopGunClientOptions) {
    options = { ...options };
    if (options.serverUrl === undefined && options.cluster?.seeds?.length) options.serverUrl = options.cluster.seeds[0];
    const hasWs = resolveWebSocket(options.WebSocket) !== undefined;
    if (options.transport === 'auto') {
      options.transport = hasWs ? 'websocket' : 'http';
      this.fallback = hasWs ? { attempts: 0, max: options.maxWsAttempts ?? 3 } : undefined;
    }
    // Fail fast: without an implementation every connect would fail, and back off, forever.
    if (options.transport !== 'http' && options.serverUrl !== undefined && !hasWs) throw new NoWebSocketError(options.serverUrl);
    this.options = options;
    this.now = options.now ?? Date.now;
    this.nodeId = options.nodeId ?? randomId();
    this.hlc = new HLC(this.nodeId, this.now);
    this.persister = new Persister(options.storage, (e) => this.fail(e));
    // Seqs start from the clock (×1000) so that ops made before the stored log is loaded still
    // sort after every op of an earlier session; after loading they continue above the maximum.
    this.ops = new OpLog(options.backpressure ?? {}, this.now() * 1000);
    this.replica = new LocalReplica(this.hlc, this.persister, {
      mapCreated: (kind, name) => {
        this.knownMaps.push({ kind, name });
        if (this.engine) this.run(this.engine.addMap(kind, name));
      },
      changed: (kind, name, keys, source) => this.changed(kind, name, keys, source),
      failed: (e) => this.fail(e),
      clearStoredMap: (kind, name) => options.storage.clearMap(kind, name),
    });
    const view = this.replica.view((after, limit) => this.ops.after(after, limit));
    this.view = view;
    const hasToken = options.auth?.token !== undefined || options.auth?.tokenProvider !== undefined;
    if (options.transport === 'http') {
      this.engine = this.makeHttp(view, hasToken);
    } else {
      this.wsEngine = new SyncEngine(view, {
        hasServer: options.serverUrl !== undefined,
        hasToken,
        backoff: options.backoff,
        heartbeatIntervalMs: options.heartbeat?.intervalMs,
        heartbeatTimeoutMs: options.heartbeat?.timeoutMs,
        batchSize: options.batchSize,
        maxAuthFailures: options.maxAuthFailures,
      });
      this.engine = this.wsEngine;
    }
    const ws = this.wsEngine;
    this.transport = new Transport(options.serverUrl, options.WebSocket, {
      open: () => {
        this.fallback = undefined; // the WebSocket works: no fallback from now on
        if (ws && this.engine === ws) this.run(ws.socketOpened(this.now()));
      },
      close: (code, reason) => ws && this.engine === ws && this.run(ws.socketClosed(code, reason, this.now())),
      message: (msg) => {
        if (this.events.count('message') > 0) this.events.emit('message', msg as AnyMessage);
        if (ws && this.engine === ws) this.run(ws.message(msg, this.now()));
      },
      error: (e) => this.fail(e),
    });
    this.locks = new LockManager({
      isReady: () => this.engine.isAuthenticated,
      send: (m) => this.transport.send(m),
      newRequestId: () => `${this.nodeId}-${this.nextRequest++}`,
      setTimer: (fn, ms) => setTimeout(fn, ms),
      clearTimer: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
    });
    this.journal = new JournalManager({
      send: (m) => {
        if (!this.engine.isAuthenticated) return false;
        this.transport.send(m);
        return true;
      },
      newRequestId: () => `${this.nodeId}-${this.nextRequest++}`,
      setTimer: (fn, ms) => setTimeout(fn, ms),
      clearTimer: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
    });
    this.sqlQueries = new SqlManager({
      isReady: () => this.engine.isAuthenticated,
      send: (m) => this.transport.send(m),
      newRequestId: () => `sql-${this.nodeId}-${this.nextRequest++}`,
      setTimer: (fn, ms) => setTimeout(fn, ms),
      clearTimer: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
    });
    this.watchConnectivity();
    this.ready = this.load();
  }

  private readonly view: ReturnType<LocalReplica['view']>;

  private makeHttp(view: ReturnType<LocalReplica['view']>, hasToken: boolean): HttpSyncEngine {
    const options = this.options;
    const url = options.httpUrl ?? (options.serverUrl === undefined ? undefined : httpSyncUrl(options.serverUrl));
    const engine = new HttpSyncEngine(view, {
      hasServer: url !== undefined,
      hasToken,
      pollIntervalMs: options.pollIntervalMs,
      backoff: options.backoff,
      batchSize: options.batchSize,
      maxAuthFailures: options.maxAuthFailures,
    });
    const transport = new HttpTransport(url ?? '', options.fetch, {
      responded: (id, body) => this.run(engine.responded(id, body, this.now())),
      refused: (id, status, message) => this.run(engine.refused(id, status, message, this.now())),
      failed: (id) => this.run(engine.failed(id, this.now())),
    });
    this.http = { engine, transport };
    return engine;
  }

  /**
   * `transport: 'auto'`: the WebSocket never opened in `maxWsAttempts` tries, so HTTP sync
   * (`POST /sync`) takes over for the rest of this client's life, with every map and query.
   */
  private fallBackToHttp(): void {
    const ws = this.wsEngine;
    this.fallback = undefined;
    if (!ws || this.engine !== ws) return;
    this.options.transport = 'http';
    const hasToken = this.options.auth?.token !== undefined || this.options.auth?.tokenProvider !== undefined;
    const effects = ws.stop();
    const http = this.makeHttp(this.view, hasToken);
    this.engine = http;
    this.run(effects.filter((e) => e.kind !== 'openSocket'));
    this.locks.disconnected();
    this.journal.disconnected();
    this.sqlQueries.disconnected();
    for (const m of this.knownMaps) this.run(http.addMap(m.kind, m.name));
    for (const q of this.queries.values()) this.run(http.addQuery(q.id, q.mapName, q.wireQuery));
    this.run(http.start(this.now(), this.online));
    this.events.emit('transportChange', { transport: 'http', reason: 'the WebSocket did not open' });
    this.emitState();
  }

  /** The transport in use: `websocket` or `http` (after an automatic fallback, too). */
  getTransport(): 'websocket' | 'http' {
    return this.options.transport === 'http' ? 'http' : 'websocket';
  }

  /**
   * TopGun's lifecycle: resolves once the stored replica is loaded and syncing has started.
   * After the client stopped on refused tokens (`maxAuthFailures`), it tries again.
   */
  start(): Promise<void> {
    void this.ready.then(() => this.resume());
    return this.ready;
  }

  // ---- public API --------------------------------------------------------------------------

  /** An LWW map: TopGun's `getMap<K, V>(name)`, or ours, `getMap<V>(name)`. */
  getMap<V = unknown>(name: string): TopGunMap<V>;
  getMap<K extends string, V>(name: string): TopGunMap<V, K>;
  getMap(name: string): TopGunMap<unknown> {
    let h = this.mapHandles.get(name);
    if (!h) {
      h = new TopGunMap<unknown>(name, this.replica.lww(name), this);
      this.mapHandles.set(name, h);
    }
    return h;
  }

  /** An OR map: TopGun's `getORMap<K, V>(name)`, or ours, `getORMap<V>(name)`. */
  getORMap<V = unknown>(name: string): TopGunORMap<V>;
  getORMap<K extends string, V>(name: string): TopGunORMap<V, K>;
  getORMap(name: string): TopGunORMap<unknown> {
    let h = this.orHandles.get(name);
    if (!h) {
      h = new TopGunORMap<unknown>(name, this.replica.or(name), this);
      this.orHandles.set(name, h);
    }
    return h;
  }

  /** A live query over an LWW map: local answer now, the server's when it comes. */
  query<V = unknown>(mapName: string, filter: QueryFilter = {}): QueryHandle<V> {
    const map = this.replica.lww(mapName);
    const id = `q-${this.nodeId}-${this.nextRequest++}`;
    const source = {
      localRecord: (key: string) => map.getRecord(key) as { value: V | null } | undefined,
      localEntries: () => map.entries(this.now()) as Iterable<[string, V]>,
    };
    const host: QueryHost = {
      close: (h) => {
        this.queries.delete(h.id);
        this.run(this.engine.removeQuery(h.id));
      },
      resubscribe: (h) => {
        this.run(this.engine.removeQuery(h.id));
        this.run(this.engine.addQuery(h.id, mapName, h.wireQuery));
      },
      hasServer: () => this.options.serverUrl !== undefined || this.options.httpUrl !== undefined,
    };
    const handle = new QueryHandle<V>(id, mapName, filter, source, host);
    this.queries.set(id, handle as QueryHandle<unknown>);
    this.run(this.engine.addQuery(id, mapName, handle.wireQuery));
    return handle;
  }

  /**
   * One answer to a query, then the query ends: the server's rows once it has answered
   * (merged with local writes it has not seen), or the local rows at once for a local-only
   * client. Without an answer within `timeoutMs` (default 10 s) it resolves with the local
   * rows, or rejects with `TimeoutError` when `requireServer` is set.
   */
  async queryOnce<V = unknown>(mapName: string, filter: QueryFilter = {}, options: { timeoutMs?: number; requireServer?: boolean } = {}): Promise<QueryResultItem<V>[]> {
    const h = this.query<V>(mapName, filter);
    try {
      try {
        await h.whenSettled(options.timeoutMs ?? 10_000);
      } catch (e) {
        if (options.requireServer || !(e instanceof TimeoutError)) throw e;
      }
      await Promise.resolve(); // the microtask that merges the answer
      h.recompute();
      let rows: QueryResultItem<V>[] = [];
      h.subscribe((r) => (rows = r))();
      return rows;
    } finally {
      h.close();
    }
  }

  /** True when connected with nothing waiting for the server (or local-only with nothing to send). */
  isSettled(): boolean {
    const hasServer = this.options.serverUrl !== undefined || this.options.httpUrl !== undefined;
    return this.ops.size === 0 && (!hasServer || this.engine.state === 'connected');
  }

  /** Resolves once `isSettled()`; rejects with TimeoutError after `timeoutMs` if given. */
  whenSettled(timeoutMs?: number): Promise<void> {
    if (this.isSettled()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const off = this.events.on('state', () => {
        if (!this.isSettled()) return;
        off();
        if (timer) clearTimeout(timer);
        resolve();
      });
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          off();
          reject(new TimeoutError(`not settled within ${timeoutMs} ms (${this.ops.size} ops pending, ${this.engine.state})`));
        }, timeoutMs);
      }
    });
  }

  topic<T = unknown>(name: string): TopicHandle<T> {
    let t = this.topics.get(name);
    if (!t) {
      t = new TopicHandle<unknown>(name, {
        subscribeTopic: (n) => this.run(this.engine.addTopic(n)),
        unsubscribeTopic: (n) => this.run(this.engine.removeTopic(n)),
        publishTopic: (n, data) => this.run(this.engine.publish(n, data)),
      });
      this.topics.set(name, t);
    }
    return t as TopicHandle<T>;
  }

  getLock(name: string): LockHandle {
    return new LockHandle(name, this.locks);
  }

  /** TopGun's name for `counter()`. */
  getPNCounter(name: string): CounterHandle {
    return this.counter(name);
  }

  counter(name: string): CounterHandle {
    let c = this.counters.get(name);
    if (!c) {
      c = new CounterHandle(name, this.nodeId, {
        sync: (state) => this.run(this.engine.request({ type: 'COUNTER_SYNC', payload: { name, state } })),
        persist: (state) => this.persister.enqueue({ meta: { [`counter:${name}`]: state } }),
      });
      this.counters.set(name, c);
      this.run(this.engine.addCounter(name));
    }
    return c;
  }

  /**
   * Run an SQL query on the server (over the WebSocket; sent once connected). Resolves with
   * `{columns, rows}`; rejects with `SqlError` (`code` `FEATURE_DISABLED` when the server has
   * SQL off, `SQL_ERROR` for a bad query, `NOT_SUPPORTED` over HTTP or without a server), or with
   * `TimeoutError` after `timeoutMs` (default 30 s) without an answer.
   */
  sql(query: string, options: { timeoutMs?: number } = {}): Promise<SqlResult> {
    if (this.http) return Promise.reject(new SqlError('NOT_SUPPORTED', 'sql() needs the WebSocket transport; POST /sync carries no SQL'));
    if (this.closed) return Promise.reject(new SqlError('CLIENT_CLOSED', 'the client is closed'));
    if (this.options.serverUrl === undefined) return Promise.reject(new SqlError('NOT_SUPPORTED', 'sql() needs a server: this client is local-only'));
    return this.sqlQueries.query(query, options.timeoutMs);
  }

  /** TopGun's event-journal reader (bigint sequences); `client.journal` is ours. */
  getEventJournal(): EventJournalReader {
    return (this.journalReader ??= new EventJournalReader(this.journal));
  }

  /** Full-text search: not served by this server yet; rejects with NotSupportedError. */
  search<V = unknown>(mapName: string, query: string, options?: { limit?: number; minScore?: number; boost?: Record<string, number> }): Promise<{ key: string; value: V; score: number; matchedTerms: string[] }[]> {
    void mapName, query, options;
    return Promise.reject(new NotSupportedError('search', 'this server answers search requests with ERROR 501 until search is built'));
  }

  /** Live search: not served yet; throws NotSupportedError. */
  searchSubscribe(mapName: string, query: string, options?: unknown): never {
    void mapName, query, options;
    throw new NotSupportedError('searchSubscribe', 'this server answers search requests with ERROR 501 until search is built');
  }

  /** Hybrid (full-text + semantic) search: not served yet; rejects with NotSupportedError. */
  hybridQuery(mapName: string, options?: unknown): Promise<never> {
    void mapName, options;
    return Promise.reject(new NotSupportedError('hybridQuery', 'this server answers hybrid search with ERROR 501 until search is built'));
  }

  /** Entry processors: the server declines them (running client code needs a sandbox). */
  executeOnKey(mapName: string, key: string, processor: { name: string; code: string; args?: unknown }): Promise<never> {
    void mapName, key, processor;
    return Promise.reject(new NotSupportedError('executeOnKey', 'the server declines entry processors: running client code needs a sandbox'));
  }

  executeOnKeys(mapName: string, keys: string[], processor: { name: string; code: string; args?: unknown }): Promise<never> {
    void mapName, keys, processor;
    return Promise.reject(new NotSupportedError('executeOnKeys', 'the server declines entry processors: running client code needs a sandbox'));
  }

  /**
   * TopGun's conflict-resolver manager: registering is declined by the server (a sandbox is
   * needed); `onRejection` hears every write the server refused.
   */
  getConflictResolvers(): {
    register(mapName: string, resolver: { name: string; code: string; priority?: number; keyPattern?: string }): Promise<never>;
    unregister(mapName: string, resolverName: string): Promise<never>;
    list(mapName?: string): Promise<never[]>;
    onRejection(listener: (rejection: MergeRejection) => void): () => void;
  } {
    const refused = (): Promise<never> => Promise.reject(new NotSupportedError('conflict resolvers', 'the server declines custom resolvers: running client code needs a sandbox'));
    return {
      register: refused,
      unregister: refused,
      list: () => Promise.resolve([]),
      onRejection: (listener) => this.onMergeRejected(listener),
    };
  }

  /** Every write the server refused (`OP_REJECTED`: policy, rate limit, bad op; `MERGE_REJECTED`). */
  onMergeRejected(listener: (rejection: MergeRejection) => void): () => void {
    return this.events.on('mergeRejected', listener);
  }

  // ---- connection state (TopGun names) ----

  /** The connection state in TopGun's terms (`SyncState.CONNECTED`, …). */
  getConnectionState(): SyncState {
    return this.connState;
  }

  onConnectionStateChange(listener: (event: StateChangeEvent) => void): () => void {
    return this.events.on('connectionState', listener);
  }

  /** The latest connection-state changes, oldest first (at most 50; `limit` the newest n). */
  getStateHistory(limit?: number): StateChangeEvent[] {
    return limit === undefined ? [...this.stateHistory] : this.stateHistory.slice(-limit);
  }

  /** Drop the connection and connect again at once (also after `maxAuthFailures` stopped it). */
  resetConnection(): void {
    if (this.engine.state === 'failed') return this.resume();
    const online = this.online;
    this.setOnline(false);
    this.setOnline(online);
  }

  /** Cluster mode is not built: always false. */
  isCluster(): boolean {
    return false;
  }

  /** The node ids connected to (one server; its URL). */
  getConnectedNodes(): string[] {
    return this.engine.state === 'connected' && this.options.serverUrl !== undefined ? [this.options.serverUrl] : [];
  }

  // ---- backpressure (TopGun names) ----

  getPendingOpsCount(): number {
    return this.ops.size;
  }

  getBackpressureStatus(): BackpressureStatus {
    const { maxPendingOps, strategy } = this.ops.options;
    return { pending: this.ops.size, max: maxPendingOps, percentage: this.ops.size / maxPendingOps, isPaused: this.ops.paused, strategy };
  }

  isBackpressurePaused(): boolean {
    return this.ops.paused;
  }

  onBackpressure(event: BackpressureEvent, listener: (data: BackpressureEventData) => void): () => void {
    return this.events.on('backpressure', (e) => {
      if (e.event === event) listener(e.data);
    });
  }

  // ---- per-record sync state ----

  /**
   * Where one record stands: `pending` while a write of it awaits the server, `rejected` when
   * the server refused its latest write (until it is written again), else `synced`.
   */
  getRecordSyncState(mapName: string, key: string): RecordSyncState {
    if (this.ops.pendingFor(mapName, key) > 0) return 'pending';
    if (this.rejectedKeys.has(`${mapName}\u0000${key}`)) return 'rejected';
    return 'synced';
  }

  // ---- auth (TopGun names) ----

  /** TopGun's `setAuthToken`: use this token from now on (re-authenticates a live connection). */
  setAuthToken(token: string): void {
    this.options.auth = { token };
    this.reauthenticate();
  }

  /** TopGun's `setAuthTokenProvider`: asked on each connection and before the token expires. */
  setAuthTokenProvider(provider: TokenProvider): void {
    this.options.auth = { tokenProvider: provider };
    this.reauthenticate();
  }

  getSyncState(): SyncStatus {
    return {
      state: this.engine.state,
      online: this.online,
      pendingOps: this.ops.size,
      paused: this.ops.paused,
      lastError: this.lastError,
      userId: this.userId,
    };
  }

  /** Sync-state changes (state, pending op count, pause, errors). */
  onSyncState(listener: (status: SyncStatus) => void): () => void {
    return this.events.on('state', listener);
  }

  on<K extends keyof ClientEvents>(event: K, listener: (payload: ClientEvents[K]) => void): () => void {
    return this.events.on(event, listener);
  }

  /** Resolves once everything written so far is in local storage. */
  flush(): Promise<void> {
    return this.persister.flush();
  }

  /** With the `pause` strategy: resolves when the op queue has room again. */
  waitForCapacity(): Promise<void> {
    return this.ops.waitForCapacity();
  }

  /** Replace the static token (the next connection or refresh uses it; a stopped client retries). */
  setToken(token: string): void {
    this.options.auth = { ...this.options.auth, token };
    this.resume();
  }

  /** Tell the client about connectivity (browsers do this through online/offline events). */
  setOnline(online: boolean): void {
    this.online = online;
    this.run(this.engine.connectivity(online, this.now()));
    this.emitState();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.run(this.engine.stop());
    this.http?.transport.abortAll();
    this.sqlQueries.rejectAll((id) => new SqlError('CLIENT_CLOSED', `the client closed before SQL query ${id} was answered`, id));
    for (const d of this.detach) d();
    if (this.timer) clearTimeout(this.timer);
    await this.persister.flush();
    await this.options.storage.close();
  }

  // ---- used by map handles (MapHost) -------------------------------------------------------

  /** @internal A local LWW write: memory, then op + record in one commit, then the engine. */
  writeLww(mapName: string, key: string, value: unknown, opts: WriteOptions = {}): { record: LWWRecord; seq: number } {
    this.makeRoom();
    const map = this.replica.lww(mapName);
    const record: LWWRecord = { value, timestamp: this.hlc.now() };
    if (opts.ttlMs !== undefined) record.ttlMs = opts.ttlMs;
    map.merge(key, record);
    const seq = this.appendOp({ id: '', mapName, key, opType: value === null ? 'REMOVE' : 'PUT', record }, opts, [
      { kind: 'lww', mapName, key, record },
    ]);
    this.changed('lww', mapName, [key], 'local');
    return { record, seq };
  }

  /** @internal */
  writeOrAdd(mapName: string, key: string, value: unknown, opts: WriteOptions = {}): { record: ORMapRecord; seq: number } {
    this.makeRoom();
    const map = this.replica.or(mapName);
    const timestamp = this.hlc.now();
    const record: ORMapRecord = { value, timestamp, tag: `${timestamp.millis}:${timestamp.counter}:${timestamp.nodeId}` };
    if (opts.ttlMs !== undefined) record.ttlMs = opts.ttlMs;
    map.apply(key, record);
    const seq = this.appendOp({ id: '', mapName, key, opType: 'OR_ADD', orRecord: record }, opts, [
      { kind: 'or', mapName, key, entry: map.entry(key) },
    ]);
    this.changed('or', mapName, [key], 'local');
    return { record, seq };
  }

  /** @internal Tombstone every tag holding `value`: one op per tag. Returns the seqs. */
  writeOrRemove(mapName: string, key: string, value: unknown, opts: WriteOptions = {}): { seqs: number[]; tags: string[] } {
    const map = this.replica.or(mapName);
    const seqs: number[] = [];
    const tags = [...map.tagsOf(key, value)];
    for (const tag of tags) {
      this.makeRoom();
      map.removeTag(key, tag);
      seqs.push(this.appendOp({ id: '', mapName, key, opType: 'OR_REMOVE', orTag: tag }, opts, [
        { kind: 'or', mapName, key, entry: map.entry(key) },
      ]));
    }
    if (seqs.length > 0) this.changed('or', mapName, [key], 'local');
    return { seqs, tags };
  }

  /** @internal */
  whenAcked(seq: number, timeoutMs?: number): Promise<WriteAck> {
    return this.ops.whenAcked(seq, timeoutMs);
  }

  /** @internal */
  onMapChange(kind: MapKind, mapName: string, listener: (keys: string[], source: ChangeSource) => void): () => void {
    return this.events.on('mapChange', (c) => {
      if (c.kind === kind && c.mapName === mapName) listener(c.keys, c.source);
    });
  }

  /** @internal */
  nowMs(): number {
    return this.now();
  }

  // ---- internals ---------------------------------------------------------------------------

  private async load(): Promise<void> {
    try {
      const snap = await this.options.storage.load();
      this.replica.load(snap);
      this.ops.restore(snap.ops);
      for (const [k, v] of Object.entries(snap.meta)) {
        if (k === 'deviceToken' && typeof v === 'string') this.wsEngine?.setDeviceToken(v);
        if (k.startsWith('counter:')) this.counter(k.slice(8)).restore(v);
      }
    } catch (e) {
      this.fail(e); // start anyway: the app keeps working from memory
    }
    this.run(this.engine.start(this.now(), this.online));
    this.emitState();
  }

  private makeRoom(): void {
    const dropped = this.ops.makeRoom();
    if (dropped.length === 0) return;
    this.persister.enqueue({ deleteOps: dropped });
    this.events.emit('opsDropped', { opIds: dropped.map(String) });
    this.events.emit('backpressure', { event: 'operation:dropped', data: { pending: this.ops.size, max: this.ops.options.maxPendingOps, opIds: dropped.map(String) } });
  }

  private appendOp(op: ClientOp, opts: WriteOptions, records: StoredRecord[]): number {
    this.rejectedKeys.delete(`${op.mapName}\u0000${op.key}`);
    if (opts.writeConcern) op.writeConcern = opts.writeConcern;
    if (opts.timeoutMs !== undefined) op.timeout = opts.timeoutMs;
    const stored = this.ops.append(op);
    // The record and its op-log entry go to storage in one transaction.
    this.persister.enqueue({ records, ops: [stored] });
    this.run(this.engine.opsAdded(this.now()));
    this.emitState();
    return stored.seq;
  }

  private changed(kind: MapKind, mapName: string, keys: string[], source: ChangeSource): void {
    if (keys.length === 0) return;
    this.events.emit('mapChange', { kind, mapName, keys, source });
    if (kind === 'lww') for (const q of this.queries.values()) if (q.mapName === mapName) q.localChanged();
  }

  private fail(e: unknown): void {
    const err = e instanceof Error ? e : new Error(String(e));
    this.lastError = err.message;
    this.events.emit('error', err);
    this.emitState();
  }

  private emitState(): void {
    const next = toSyncState(this.engine.state);
    if (next !== this.connState) {
      const event: StateChangeEvent = { from: this.connState, to: next, timestamp: this.now() };
      this.connState = next;
      this.stateHistory.push(event);
      if (this.stateHistory.length > STATE_HISTORY_MAX) this.stateHistory.shift();
      this.events.emit('connectionState', event);
    }
    this.checkBackpressure();
    this.events.emit('state', this.getSyncState());
  }

  /** Threshold events: high/low water marks and pause/resume, each on its crossing. */
  private checkBackpressure(): void {
    const { maxPendingOps, highWaterMark, lowWaterMark } = this.ops.options;
    const data = { pending: this.ops.size, max: maxPendingOps };
    const emit = (event: BackpressureEvent): void => this.events.emit('backpressure', { event, data });
    if (!this.bpHigh && this.ops.size >= maxPendingOps * highWaterMark) {
      this.bpHigh = true;
      emit('backpressure:high');
    } else if (this.bpHigh && this.ops.size <= maxPendingOps * lowWaterMark) {
      this.bpHigh = false;
      emit('backpressure:low');
    }
    if (this.ops.paused !== this.bpPaused) {
      this.bpPaused = this.ops.paused;
      emit(this.bpPaused ? 'backpressure:paused' : 'backpressure:resumed');
    }
  }

  /** `onAuthRequired`: a token it returns is used at once (and restarts a stopped client). */
  private async askForToken(reason: { error?: string; stopped?: boolean }): Promise<void> {
    let token: string | null | undefined | void;
    try {
      token = await this.options.onAuthRequired?.(reason);
    } catch (e) {
      return this.fail(e);
    }
    if (typeof token === 'string' && token !== '' && !this.closed) {
      this.options.auth = { token };
      if (this.engine.state === 'failed') this.resume();
      else this.run(this.engine.tokenReady(token, this.now()));
    }
  }

  /** A new token or provider: a live session authenticates again with it; a stopped client retries. */
  private reauthenticate(): void {
    if (this.closed) return;
    if (this.engine.state === 'failed') return this.resume();
    void this.fetchToken();
  }

  /** Out of the `failed` state (too many refused tokens), if in it: connect again. */
  private resume(): void {
    if (this.closed || this.engine.state !== 'failed') return;
    this.lastError = undefined;
    this.run(this.engine.resume(this.now()));
    this.emitState();
  }

  private run(effects: HttpEffect[]): void {
    for (const e of effects) this.apply(e);
    this.schedule();
  }

  private apply(e: HttpEffect): void {
    switch (e.kind) {
      case 'post': return this.http?.transport.post(e.requestId, { clientId: this.nodeId, clientHlc: this.hlc.now(), ...e.body }, e.token);
      case 'abortRequest': return this.http?.transport.abort(e.requestId);
      case 'syncTimestamp': return this.replica.setSyncTimestamp(e.mapName, e.timestamp);
      case 'send': return this.transport.send(e.message);
      case 'openSocket':
        if (this.fallback && ++this.fallback.attempts > this.fallback.max) return void queueMicrotask(() => this.fallBackToHttp());
        return this.transport.open();
      case 'closeSocket': return this.transport.close(e.code, e.reason);
      case 'fetchToken': return void this.fetchToken();
      case 'state': return this.emitState();
      case 'applyLww': return this.replica.applyLww(e.mapName, e.records);
      case 'applyOr': return this.replica.applyOr(e.mapName, e.entries);
      case 'applyEvents': return this.replica.applyEvents(e.events);
      case 'resetMap': return this.replica.reset(e.mapKind, e.mapName);
      case 'lastSync': return this.replica.setLastSync(e.mapKind, e.mapName, e.millis);
      case 'observeTimestamp': return this.hlc.update(e.timestamp);
      case 'opsAcked':
        if (this.ops.acknowledge(e.upToSeq, e.achievedLevel)) {
          this.persister.enqueue({ deleteOpsUpTo: e.upToSeq });
          this.emitState();
        }
        return;
      case 'opRejected': {
        const err = new OpRejectedError(String(e.seq), e.reason, e.code);
        const op = this.ops.get(e.seq)?.op;
        if (op) {
          this.rejectedKeys.add(`${op.mapName}\u0000${op.key}`);
          const attempted = op.record ? op.record.value : op.orRecord?.value;
          this.events.emit('mergeRejected', { mapName: op.mapName, key: op.key, attemptedValue: attempted, reason: e.reason, timestamp: this.now(), opId: String(e.seq), code: e.code });
        }
        this.ops.reject(e.seq, err);
        this.events.emit('opRejected', err);
        return this.fail(err);
      }
      case 'mapSynced': return this.events.emit('mapSynced', { kind: e.mapKind, mapName: e.mapName });
      case 'prune': return this.replica.prune(e.olderThan);
      case 'authenticated':
        this.userId = e.userId;
        this.lastError = undefined;
        return this.emitState();
      case 'authRequired':
        if (this.options.auth?.token !== undefined || this.options.auth?.tokenProvider !== undefined) return void this.fetchToken();
        if (this.options.onAuthRequired) return void this.askForToken({});
        return this.fail(new Error('the server requires authentication and no token is configured'));
      case 'authFailed':
        this.fail(new Error(`authentication failed: ${e.error}`));
        if (this.options.onAuthRequired) void this.askForToken({ error: e.error });
        return;
      case 'authStopped':
        // Reported once; the engine retries no more until a new token or start().
        this.fail(new AuthFailedError(e.error, e.failures));
        if (this.options.onAuthRequired) void this.askForToken({ error: e.error, stopped: true });
        return;
      case 'deviceToken': return this.persister.enqueue({ meta: { deviceToken: e.token } });
      case 'deliver': return this.deliver(e.message);
      case 'ready':
        this.locks.ready();
        this.journal.ready();
        this.sqlQueries.ready();
        for (const c of this.counters.values()) c.resync();
        return;
      case 'disconnected':
        this.locks.disconnected();
        this.journal.disconnected();
        this.sqlQueries.disconnected();
        return this.emitState();
    }
  }

  private deliver(msg: AnyMessage): void {
    const p = (msg.payload ?? {}) as Record<string, unknown>;
    switch (msg.type) {
      case 'QUERY_RESP':
        this.queries.get(String(p.queryId))?.serverResponse((p.results ?? []) as { key: string; value: unknown }[], p);
        return;
      case 'MERGE_REJECTED': {
        const m = msg as Record<string, unknown>;
        this.events.emit('mergeRejected', {
          mapName: String(m.mapName),
          key: String(m.key),
          attemptedValue: m.attemptedValue,
          reason: String(m.reason),
          timestamp: (m.timestamp as Timestamp | undefined) ?? this.now(),
        });
        return;
      }
      case 'QUERY_UPDATE':
        this.queries.get(String(p.queryId))?.serverUpdate(String(p.key), p.value, p.changeType as 'ENTER' | 'UPDATE' | 'LEAVE');
        return;
      case 'TOPIC_MESSAGE':
        this.topics.get(String(p.topic))?.deliver(p as unknown as TopicMessage);
        return;
      case 'LOCK_GRANTED':
      case 'LOCK_RELEASED':
        this.locks.message(msg as { type: string; payload: Record<string, unknown> });
        return;
      case 'COUNTER_RESPONSE':
      case 'COUNTER_UPDATE':
        this.counters.get(String(p.name))?.merge(p.state);
        return;
      case 'SQL_QUERY_RESP':
        this.sqlQueries.message(p);
        return;
      case 'JOURNAL_EVENT':
      case 'JOURNAL_READ_RESPONSE':
        this.journal.message(msg);
        return;
      case 'ERROR':
        this.fail(new Error(`server error ${String(p.code)}: ${String(p.message)}`));
    }
  }

  private async fetchToken(): Promise<void> {
    const auth = this.options.auth ?? {};
    let token: string | null | undefined;
    try {
      token = auth.tokenProvider ? await auth.tokenProvider() : auth.token;
    } catch (e) {
      this.fail(e);
      token = null;
    }
    this.run(this.engine.tokenReady(token ?? null, this.now()));
  }

  /** One timer for all of the engine's deadlines. */
  private schedule(): void {
    if (this.closed) return;
    const at = this.engine.nextDeadline();
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (at === undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.run(this.engine.tick(this.now()));
    }, Math.max(0, at - this.now()));
  }

  private watchConnectivity(): void {
    const w = globalThis as unknown as { addEventListener?: Window['addEventListener']; removeEventListener?: Window['removeEventListener']; navigator?: Navigator };
    if (this.options.watchConnectivity === false || typeof w.addEventListener !== 'function') return;
    if (w.navigator && typeof w.navigator.onLine === 'boolean') this.online = w.navigator.onLine;
    const on = (): void => this.setOnline(true);
    const off = (): void => this.setOnline(false);
    w.addEventListener('online', on);
    w.addEventListener('offline', off);
    this.detach.push(() => {
      w.removeEventListener?.('online', on);
      w.removeEventListener?.('offline', off);
    });
  }
}
