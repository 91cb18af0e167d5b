/**
 * `TopGunClient`: the driver around the sans-IO sync engine. It wires the in-memory replica
 * (what every read is served from), the op log, the persister (IndexedDB or memory, written
 * behind the UI's back), the WebSocket transport and one timer, and carries out the engine's
 * effects in order.
 */
import { HLC } from './crdt/hlc.js';
import type { LWWRecord } from './crdt/lww-map.js';
import type { ORMapRecord } from './crdt/or-map.js';
import { OpRejectedError, SqlError } from './errors.js';
import { Emitter } from './events.js';
import { CounterHandle } from './features/counter.js';
import { JournalManager } from './features/journal.js';
import { LockHandle, LockManager } from './features/lock.js';
import { QueryHandle, toWireQuery, type QueryOptions } from './features/query.js';
import { SqlManager, type SqlResult } from './features/sql.js';
import { TopicHandle, type TopicMessage } from './features/topic.js';
import { TopGunMap, TopGunORMap, type WriteOptions } from './maps.js';
import { OpLog, type BackpressureOptions, type WriteAck } from './op-log.js';
import type { AnyMessage, ClientOp } from './protocol.js';
import { LocalReplica, type ChangeSource } from './replica.js';
import { Persister } from './storage/persister.js';
import type { StorageAdapter, StoredRecord } from './storage/types.js';
import type { BackoffOptions } from './sync/backoff.js';
import { SyncEngine, type MapKind, type SyncState } from './sync/engine.js';
import { HttpSyncEngine } from './sync/http-engine.js';
import type { HttpEffect } from './sync/machine.js';
import type { SyncMachine } from './sync/machine.js';
import { HttpTransport, httpSyncUrl, type FetchLike } from './http-transport.js';
import { Transport, type WebSocketFactory } from './transport.js';

export type { BackpressureOptions, WriteAck } from './op-log.js';
export type { WebSocketFactory, WebSocketLike } from './transport.js';
export type { FetchLike } from './http-transport.js';
export type { SqlResult } from './features/sql.js';

export type TokenProvider = () => string | null | undefined | Promise<string | null | undefined>;

export interface TopGunClientOptions {
  /** `ws://host:port/ws`. Without it (and without `httpUrl`) the client works local-only. */
  serverUrl?: string;
  /**
   * `websocket` (default): one live connection. `http`: no WebSocket; the client polls
   * `POST /sync` (ops, map deltas, one-shot queries). Topics, locks, counters, the journal and
   * `sql()` need the WebSocket.
   */
  transport?: 'websocket' | 'http';
  /** The `POST /sync` endpoint; by default derived from `serverUrl` (`ws://h/ws` → `http://h/sync`). */
  httpUrl?: string;
  /** HTTP transport: time between polls while nothing waits to be sent (default 5,000 ms). */
  pollIntervalMs?: number;
  /** HTTP transport: the `fetch` to use (default globalThis.fetch). */
  fetch?: FetchLike;
  storage: StorageAdapter;
  auth?: { token?: string; tokenProvider?: TokenProvider };
  /** This replica's id in HLC timestamps and OR tags (no ':'); random by default. */
  nodeId?: string;
  /** WebSocket implementation (Node: `ws`); defaults to globalThis.WebSocket. */
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
  state: SyncState;
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
};

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
  private readonly engine: SyncMachine;
  /** The WebSocket engine, unless the transport is HTTP. */
  private readonly wsEngine: SyncEngine | undefined;
  private readonly transport: Transport;
  private readonly http: { engine: HttpSyncEngine; transport: HttpTransport } | undefined;
  private readonly sqlQueries: SqlManager;
  private readonly locks: LockManager;
  /** The server's event journal: `read` pages, `subscribe` streams (resumed after reconnects). */
  readonly journal: JournalManager;
  private readonly mapHandles = new Map<string, TopGunMap<unknown>>();
  private readonly orHandles = new Map<string, TopGunORMap<unknown>>();
  private readonly queries = new Map<string, QueryHandle<unknown>>();
  private readonly topics = new Map<string, TopicHandle<unknown>>();
  private readonly counters = new Map<string, CounterHandle>();
  private readonly detach: (() => void)[] = [];
  private nextRequest = 1;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private online = true;
  private lastError: string | undefined;
  private userId: string | undefined;
  private closed = false;

  constructor(private readonly options: TopGunClientOptions) {
    this.now = options.now ?? Date.now;
    this.nodeId = options.nodeId ?? randomId();
    this.hlc = new HLC(this.nodeId, this.now);
    this.persister = new Persister(options.storage, (e) => this.fail(e));
    // Seqs start from the clock (×1000) so that ops made before the stored log is loaded still
    // sort after every op of an earlier session; after loading they continue above the maximum.
    this.ops = new OpLog(options.backpressure ?? {}, this.now() * 1000);
    this.replica = new LocalReplica(this.hlc, this.persister, {
      mapCreated: (kind, name) => this.engine && this.run(this.engine.addMap(kind, name)),
      changed: (kind, name, keys, source) => this.changed(kind, name, keys, source),
      failed: (e) => this.fail(e),
      clearStoredMap: (kind, name) => options.storage.clearMap(kind, name),
    });
    const view = this.replica.view((after, limit) => this.ops.after(after, limit));
    const hasToken = options.auth?.token !== undefined || options.auth?.tokenProvider !== undefined;
    if (options.transport === 'http') {
      const url = options.httpUrl ?? (options.serverUrl === undefined ? undefined : httpSyncUrl(options.serverUrl));
      const engine = new HttpSyncEngine(view, {
        hasServer: url !== undefined,
        hasToken,
        pollIntervalMs: options.pollIntervalMs,
        backoff: options.backoff,
        batchSize: options.batchSize,
      });
      const transport = new HttpTransport(url ?? '', options.fetch, {
        responded: (id, body) => this.run(engine.responded(id, body, this.now())),
        refused: (id, status, message) => this.run(engine.refused(id, status, message, this.now())),
        failed: (id) => this.run(engine.failed(id, this.now())),
      });
      this.http = { engine, transport };
      this.engine = engine;
    } else {
      this.wsEngine = new SyncEngine(view, {
        hasServer: options.serverUrl !== undefined,
        hasToken,
        backoff: options.backoff,
        heartbeatIntervalMs: options.heartbeat?.intervalMs,
        heartbeatTimeoutMs: options.heartbeat?.timeoutMs,
        batchSize: options.batchSize,
      });
      this.engine = this.wsEngine;
    }
    const ws = this.wsEngine;
    this.transport = new Transport(options.serverUrl, options.WebSocket, {
      open: () => ws && this.run(ws.socketOpened(this.now())),
      close: (code, reason) => ws && this.run(ws.socketClosed(code, reason, this.now())),
      message: (msg) => {
        if (this.events.count('message') > 0) this.events.emit('message', msg as AnyMessage);
        if (ws) this.run(ws.message(msg, this.now()));
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

  // ---- public API --------------------------------------------------------------------------

  getMap<V = unknown>(name: string): TopGunMap<V> {
    let h = this.mapHandles.get(name);
    if (!h) {
      h = new TopGunMap<unknown>(name, this.replica.lww(name), this);
      this.mapHandles.set(name, h);
    }
    return h as TopGunMap<V>;
  }

  getORMap<V = unknown>(name: string): TopGunORMap<V> {
    let h = this.orHandles.get(name);
    if (!h) {
      h = new TopGunORMap<unknown>(name, this.replica.or(name), this);
      this.orHandles.set(name, h);
    }
    return h as TopGunORMap<V>;
  }

  /** A live query over an LWW map: local answer now, the server's when it comes. */
  query<V = unknown>(mapName: string, options: QueryOptions = {}): QueryHandle<V> {
    const map = this.replica.lww(mapName);
    const id = `q-${this.nodeId}-${this.nextRequest++}`;
    const source = {
      localRecord: (key: string) => map.getRecord(key) as { value: V | null } | undefined,
      localEntries: () => map.entries(this.now()) as Iterable<[string, V]>,
    };
    const handle = new QueryHandle<V>(id, mapName, options, source, (h) => {
      this.queries.delete(h.id);
      this.run(this.engine.removeQuery(h.id));
    });
    this.queries.set(id, handle as QueryHandle<unknown>);
    this.run(this.engine.addQuery(id, mapName, toWireQuery(options)));
    return handle;
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

  /** Replace the static token (the next connection or refresh uses it). */
  setToken(token: string): void {
    this.options.auth = { ...this.options.auth, token };
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
  writeOrRemove(mapName: string, key: string, value: unknown, opts: WriteOptions = {}): number[] {
    const map = this.replica.or(mapName);
    const seqs: number[] = [];
    for (const tag of map.tagsOf(key, value)) {
      this.makeRoom();
      map.removeTag(key, tag);
      seqs.push(this.appendOp({ id: '', mapName, key, opType: 'OR_REMOVE', orTag: tag }, opts, [
        { kind: 'or', mapName, key, entry: map.entry(key) },
      ]));
    }
    if (seqs.length > 0) this.changed('or', mapName, [key], 'local');
    return seqs;
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
  }

  private appendOp(op: ClientOp, opts: WriteOptions, records: StoredRecord[]): number {
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
    this.events.emit('state', this.getSyncState());
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
      case 'openSocket': return this.transport.open();
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
      case 'authRequired': return this.fail(new Error('the server requires authentication and no token is configured'));
      case 'authFailed': return this.fail(new Error(`authentication failed: ${e.error}`));
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
        this.queries.get(String(p.queryId))?.serverResponse((p.results ?? []) as { key: string; value: unknown }[]);
        return;
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
