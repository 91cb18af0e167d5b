/**
 * The sync engine: a sans-IO state machine (DESIGN.md §3, §5). Inputs are calls — socket opened
 * or closed, a decoded message, a timer tick, connectivity, a token, local writes — each with the
 * current time; outputs are `Effect`s the driver (client.ts) carries out in order: frames to
 * send, a socket to open or close, records to merge, state changes. It never touches a socket,
 * a clock, a timer or storage, so its unit tests assert exact outputs.
 *
 * States:  offline ⇄ (any)          (browser connectivity)
 *          disconnected → connecting → authenticating → syncing → connected
 *                ↑            ↓ timeout/close  ↓ close     ↓ close    ↓ close
 *                └──────── backoff ←───────────┴───────────┴──────────┘
 *          authenticating ──AUTH_FAIL × maxAuthFailures──→ failed ──resume()──→ connecting
 * Invariant: AUTH_FAILs are counted across connections until an AUTH_ACK / DEVICE_ACK; at
 * `maxAuthFailures` in a row the engine stops (no timer, no socket) and only `resume()` — the
 * driver's answer to a new token or `start()` — moves it on, so a refused token is not retried
 * forever and the client is not bricked either.
 * Per connection (a "session"): authenticate, flush the op log in batches (one in flight),
 * Merkle-sync every map (§6.3, §6.4), re-send every query and topic subscription, heartbeat.
 */
import type { MerkleTree } from '../crdt/merkle.js';
import type { LWWRecord } from '../crdt/lww-map.js';
import type { ORMapEntry } from '../crdt/or-map.js';
import { isTimestamp, type Timestamp } from '../crdt/hlc.js';
import type { AnyMessage, ServerEventPayload, WireQuery, WriteConcern } from '../protocol.js';
import type { StoredOp } from '../storage/types.js';
import { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff.js';
import { jwtExpiryMs } from './token.js';

export type EngineState =
  | 'stopped'
  | 'disconnected'
  | 'offline'
  | 'connecting'
  | 'authenticating'
  | 'syncing'
  | 'connected'
  | 'backoff'
  /** Stopped after `maxAuthFailures` refused tokens in a row; waits for `resume()`. */
  | 'failed';

export type MapKind = 'lww' | 'or';

/** Read-only view of the local replica that the engine consults (pure data, no I/O). */
export interface Replica {
  tree(kind: MapKind, mapName: string): MerkleTree;
  orEntries(mapName: string, keys: string[]): ORMapEntry[];
  /** Unsynced ops with seq > `afterSeq`, ascending, at most `limit`. */
  pendingOps(afterSeq: number, limit: number): StoredOp[];
  /** Millis of the last SYNC_RESP_ROOT timestamp for this map (0 = never synced). */
  lastSyncMillis(kind: MapKind, mapName: string): number;
}

export type Effect =
  | { kind: 'send'; message: AnyMessage }
  | { kind: 'openSocket' }
  | { kind: 'closeSocket'; code: number; reason: string }
  | { kind: 'fetchToken' }
  | { kind: 'state'; state: EngineState }
  | { kind: 'applyLww'; mapName: string; records: { key: string; record: LWWRecord }[] }
  | { kind: 'applyOr'; mapName: string; entries: ORMapEntry[] }
  | { kind: 'applyEvents'; events: ServerEventPayload[] }
  | { kind: 'resetMap'; mapKind: MapKind; mapName: string }
  | { kind: 'lastSync'; mapKind: MapKind; mapName: string; millis: number }
  | { kind: 'observeTimestamp'; timestamp: Timestamp }
  | { kind: 'opsAcked'; upToSeq: number; achievedLevel?: WriteConcern }
  | { kind: 'opRejected'; seq: number; reason: string; code?: number }
  | { kind: 'mapSynced'; mapKind: MapKind; mapName: string }
  | { kind: 'prune'; olderThan: Timestamp }
  | { kind: 'authenticated'; userId?: string }
  | { kind: 'authRequired' }
  | { kind: 'authFailed'; error: string }
  /** The last of `maxAuthFailures` refusals in a row: the engine is `failed` and retries no more. */
  | { kind: 'authStopped'; error: string; failures: number }
  | { kind: 'deviceToken'; token: string }
  | { kind: 'deliver'; message: AnyMessage }
  | { kind: 'ready' }
  | { kind: 'disconnected'; code: number; reason: string };

export interface EngineOptions {
  /** Is there a server at all? Without one the engine stays `disconnected` (local only). */
  hasServer: boolean;
  /** Is a token or token provider configured? Then AUTH is sent on open. */
  hasToken: boolean;
  backoff?: Partial<BackoffOptions>;
  connectTimeoutMs?: number;
  heartbeatIntervalMs?: number;
  heartbeatTimeoutMs?: number;
  /** Ops per OP_BATCH. */
  batchSize?: number;
  /** How long to wait for an OP_ACK before re-sending the batch. */
  ackTimeoutMs?: number;
  /** After an OP_ACK that stops short of a batch (a retryable refusal), wait this long. */
  retryDelayMs?: number;
  /** Token-less connections wait this long for DEVICE_ACK / AUTH_REQUIRED (§6.1). */
  deviceGraceMs?: number;
  /** Re-authenticate this long before the token's `exp`. */
  tokenRefreshMarginMs?: number;
  /** Topic publishes kept while offline; the oldest is dropped beyond it. */
  maxQueuedPublishes?: number;
  /** Map entries per ORMAP_PUSH_DIFF frame. */
  pushDiffChunk?: number;
  /** AUTH_FAILs in a row (across reconnects) after which the engine stops: `failed` (default 3). */
  maxAuthFailures?: number;
  random?: () => number;
}

interface MapSync {
  kind: MapKind;
  name: string;
  /** Waiting for the root reply. */
  awaitingRoot: boolean;
  /** Requested bucket/leaf paths not answered yet. */
  pending: Set<string>;
}

interface Session {
  authenticated: boolean;
  /** Seq of the last op sent in this session (ops after it still need sending). */
  sentUpTo: number;
  /** The batch in flight: its last seq and when it was sent. */
  inFlight: { lastSeq: number; sentAt: number } | undefined;
  resendAt: number | undefined;
  syncs: Map<string, MapSync>;
  pingAt: number | undefined;
  pongDeadline: number | undefined;
  graceDeadline: number | undefined;
  refreshAt: number | undefined;
}

const syncKey = (kind: MapKind, name: string): string => `${kind}:${name}`;
const ANY_PATH = /^[0-9a-f]{0,3}$/;

export class SyncEngine {
  private stateValue: EngineState = 'stopped';
  private online = true;
  private attempt = 0;
  /** AUTH_FAILs since the last successful authentication (bounded by `maxAuthFailures`). */
  private authFailures = 0;
  private retryAt: number | undefined;
  private connectDeadline: number | undefined;
  private session: Session | undefined;
  private deviceToken: string | undefined;
  private readonly maps = new Map<string, { kind: MapKind; name: string }>();
  private readonly queries = new Map<string, { mapName: string; query: WireQuery }>();
  private readonly topics = new Set<string>();
  private readonly counters = new Set<string>();
  private readonly publishQueue: { topic: string; data: unknown }[] = [];
  private readonly o: Required<Omit<EngineOptions, 'backoff'>> & { backoff: BackoffOptions };

  constructor(
    private readonly replica: Replica,
    options: EngineOptions,
  ) {
    this.o = {
      hasServer: options.hasServer,
      hasToken: options.hasToken,
      backoff: { ...DEFAULT_BACKOFF, ...options.backoff },
      connectTimeoutMs: options.connectTimeoutMs ?? 5000,
      heartbeatIntervalMs: options.heartbeatIntervalMs ?? 5000,
      heartbeatTimeoutMs: options.heartbeatTimeoutMs ?? 15_000,
      batchSize: options.batchSize ?? 500,
      ackTimeoutMs: options.ackTimeoutMs ?? 15_000,
      retryDelayMs: options.retryDelayMs ?? 1000,
      deviceGraceMs: options.deviceGraceMs ?? 500,
      tokenRefreshMarginMs: options.tokenRefreshMarginMs ?? 30_000,
      maxQueuedPublishes: options.maxQueuedPublishes ?? 1000,
      pushDiffChunk: options.pushDiffChunk ?? 100,
      maxAuthFailures: options.maxAuthFailures ?? 3,
      random: options.random ?? Math.random,
    };
    if (!(this.o.maxAuthFailures >= 1)) throw new RangeError('maxAuthFailures must be at least 1');
  }

  get state(): EngineState {
    return this.stateValue;
  }

  get isAuthenticated(): boolean {
    return this.session?.authenticated ?? false;
  }

  get queuedPublishes(): number {
    return this.publishQueue.length;
  }

  /** The earliest time at which `tick` has something to do, or undefined. */
  nextDeadline(): number | undefined {
    const s = this.session;
    const times = [this.retryAt, this.connectDeadline, s?.pingAt, s?.pongDeadline, s?.graceDeadline, s?.refreshAt, s?.resendAt];
    if (s?.inFlight) times.push(s.inFlight.sentAt + this.o.ackTimeoutMs);
    let min: number | undefined;
    for (const t of times) if (t !== undefined && (min === undefined || t < min)) min = t;
    return min;
  }

  // ---- lifecycle -------------------------------------------------------------------------

  start(now: number, online = true): Effect[] {
    this.online = online;
    const out: Effect[] = [];
    if (!this.o.hasServer) this.setState('disconnected', out);
    else if (!online) this.setState('offline', out);
    else this.connect(now, out);
    return out;
  }

  stop(): Effect[] {
    const out: Effect[] = [];
    this.dropSocket(out, 1000, 'client stopped');
    this.retryAt = undefined;
    this.setState('stopped', out);
    return out;
  }

  /**
   * Out of `failed` (a new token, or `start()` again): the count of refusals starts over and the
   * engine connects at once. Does nothing in any other state.
   */
  resume(now: number): Effect[] {
    const out: Effect[] = [];
    if (this.stateValue !== 'failed') return out;
    this.authFailures = 0;
    this.attempt = 0;
    if (this.online) this.connect(now, out);
    else this.setState('offline', out);
    return out;
  }

  setDeviceToken(token: string | undefined): void {
    this.deviceToken = token;
  }

  connectivity(online: boolean, now: number): Effect[] {
    const out: Effect[] = [];
    // `failed` stays failed across connectivity changes: only a new token brings it back.
    if (online === this.online || this.stateValue === 'stopped' || this.stateValue === 'failed' || !this.o.hasServer) {
      this.online = online;
      return out;
    }
    this.online = online;
    if (!online) {
      this.dropSocket(out, 1000, 'offline');
      this.retryAt = undefined;
      this.setState('offline', out);
    } else {
      // Coming back online is a fresh start: no reason to wait out an old backoff.
      this.attempt = 0;
      this.connect(now, out);
    }
    return out;
  }

  socketOpened(now: number): Effect[] {
    const out: Effect[] = [];
    if (this.stateValue !== 'connecting') return out;
    this.connectDeadline = undefined;
    this.session = {
      authenticated: false,
      sentUpTo: 0,
      inFlight: undefined,
      resendAt: undefined,
      syncs: new Map(),
      pingAt: undefined,
      pongDeadline: undefined,
      graceDeadline: undefined,
      refreshAt: undefined,
    };
    this.setState('authenticating', out);
    if (this.o.hasToken) {
      out.push({ kind: 'fetchToken' });
    } else {
      out.push({ kind: 'send', message: { type: 'DEVICE_HELLO', deviceToken: this.deviceToken } });
      this.session.graceDeadline = now + this.o.deviceGraceMs;
    }
    return out;
  }

  /** The driver resolved the token (or the provider returned none). */
  tokenReady(token: string | null, now: number): Effect[] {
    const out: Effect[] = [];
    const s = this.session;
    if (!s) return out;
    if (token) {
      out.push({ kind: 'send', message: { type: 'AUTH', token } });
      const exp = jwtExpiryMs(token);
      s.refreshAt = exp === undefined ? undefined : Math.max(now + 1000, exp - this.o.tokenRefreshMarginMs);
    } else if (!s.authenticated) {
      // No token after all: wait for the server to say whether it needs one.
      out.push({ kind: 'send', message: { type: 'DEVICE_HELLO', deviceToken: this.deviceToken } });
      s.graceDeadline = now + this.o.deviceGraceMs;
    }
    return out;
  }

  socketClosed(code: number, reason: string, now: number): Effect[] {
    const out: Effect[] = [];
    if (!['connecting', 'authenticating', 'syncing', 'connected'].includes(this.stateValue)) return out;
    this.endSession(out, code, reason);
    // A slow-consumer kick (1013) asks for an immediate resync, not a penalty.
    if (code === 1013) this.attempt = 0;
    this.scheduleRetry(now, out);
    return out;
  }

  tick(now: number): Effect[] {
    const out: Effect[] = [];
    if (this.retryAt !== undefined && now >= this.retryAt) {
      this.retryAt = undefined;
      this.connect(now, out);
      return out;
    }
    if (this.connectDeadline !== undefined && now >= this.connectDeadline) {
      this.dropSocket(out, 4000, 'connect timeout');
      this.scheduleRetry(now, out);
      return out;
    }
    const s = this.session;
    if (!s) return out;
    if (s.graceDeadline !== undefined && now >= s.graceDeadline) {
      s.graceDeadline = undefined;
      this.onAuthenticated(now, out, undefined); // auth-optional server: proceed
    }
    if (s.pongDeadline !== undefined && now >= s.pongDeadline) {
      this.dropSocket(out, 4000, 'heartbeat timeout');
      this.scheduleRetry(now, out);
      return out;
    }
    if (s.pingAt !== undefined && now >= s.pingAt) {
      out.push({ kind: 'send', message: { type: 'PING', timestamp: now } });
      s.pingAt = now + this.o.heartbeatIntervalMs;
      if (s.pongDeadline === undefined) s.pongDeadline = now + this.o.heartbeatTimeoutMs;
    }
    if (s.refreshAt !== undefined && now >= s.refreshAt) {
      s.refreshAt = undefined;
      out.push({ kind: 'fetchToken' });
    }
    if (s.inFlight && now >= s.inFlight.sentAt + this.o.ackTimeoutMs) {
      // No ack (e.g. every op of the batch was refused as retryable): send it again.
      s.sentUpTo = 0; // acknowledged ops are gone from the log: this resends the rest
      s.inFlight = undefined;
      this.flushOps(now, out);
    }
    if (s.resendAt !== undefined && now >= s.resendAt) {
      s.resendAt = undefined;
      this.flushOps(now, out);
    }
    return out;
  }

  // ---- local inputs ---------------------------------------------------------------------

  /** Register a map for Merkle sync (now if connected, and after every reconnect). */
  addMap(kind: MapKind, name: string): Effect[] {
    const out: Effect[] = [];
    const key = syncKey(kind, name);
    if (this.maps.has(key)) return out;
    this.maps.set(key, { kind, name });
    if (this.session?.authenticated) {
      this.startMapSync(kind, name, out);
      if (this.stateValue === 'connected') this.setState('syncing', out);
    }
    return out;
  }

  /** New ops were appended to the op log. */
  opsAdded(now: number): Effect[] {
    const out: Effect[] = [];
    if (this.session?.authenticated) this.flushOps(now, out);
    return out;
  }

  addQuery(queryId: string, mapName: string, query: WireQuery): Effect[] {
    this.queries.set(queryId, { mapName, query });
    return this.session?.authenticated ? [this.querySub(queryId)] : [];
  }

  removeQuery(queryId: string): Effect[] {
    if (!this.queries.delete(queryId) || !this.session?.authenticated) return [];
    return [{ kind: 'send', message: { type: 'QUERY_UNSUB', payload: { queryId } } }];
  }

  addTopic(topic: string): Effect[] {
    if (this.topics.has(topic)) return [];
    this.topics.add(topic);
    return this.session?.authenticated ? [{ kind: 'send', message: { type: 'TOPIC_SUB', payload: { topic } } }] : [];
  }

  removeTopic(topic: string): Effect[] {
    if (!this.topics.delete(topic) || !this.session?.authenticated) return [];
    return [{ kind: 'send', message: { type: 'TOPIC_UNSUB', payload: { topic } } }];
  }

  /** Publish now, or queue (bounded, oldest dropped) until the next authentication. */
  publish(topic: string, data: unknown): Effect[] {
    if (this.session?.authenticated) return [{ kind: 'send', message: { type: 'TOPIC_PUB', payload: { topic, data } } }];
    if (this.publishQueue.length >= this.o.maxQueuedPublishes) this.publishQueue.shift();
    this.publishQueue.push({ topic, data });
    return [];
  }

  /** Counters are re-requested after every reconnect (the server subscribes on request). */
  addCounter(name: string): Effect[] {
    if (this.counters.has(name)) return [];
    this.counters.add(name);
    return this.session?.authenticated ? [{ kind: 'send', message: { type: 'COUNTER_REQUEST', payload: { name } } }] : [];
  }

  /** Send a one-off request if authenticated; returns [] when it cannot be sent now. */
  request(message: AnyMessage): Effect[] {
    return this.session?.authenticated ? [{ kind: 'send', message }] : [];
  }

  // ---- server messages -------------------------------------------------------------------

  message(raw: unknown, now: number): Effect[] {
    const out: Effect[] = [];
    const s = this.session;
    if (!s || raw === null || typeof raw !== 'object') return out;
    const msg = raw as AnyMessage;
    const p = (msg.payload ?? {}) as Record<string, unknown>;
    s.pongDeadline = undefined; // any frame proves the connection is alive
    switch (msg.type) {
      case 'AUTH_REQUIRED':
        s.graceDeadline = undefined;
        if (!this.o.hasToken && !s.authenticated) out.push({ kind: 'authRequired' });
        return out;
      case 'AUTH_ACK':
        s.graceDeadline = undefined;
        this.onAuthenticated(now, out, typeof msg.userId === 'string' ? msg.userId : undefined);
        if (typeof msg.deviceToken === 'string') out.push({ kind: 'deviceToken', token: msg.deviceToken });
        return out;
      case 'DEVICE_ACK':
        s.graceDeadline = undefined;
        if (typeof msg.deviceToken === 'string') out.push({ kind: 'deviceToken', token: msg.deviceToken });
        this.onAuthenticated(now, out, undefined);
        return out;
      case 'AUTH_FAIL': {
        const error = typeof msg.error === 'string' ? msg.error : 'authentication failed';
        this.authFailures += 1;
        if (this.authFailures < this.o.maxAuthFailures) {
          out.push({ kind: 'authFailed', error });
          return out; // the server closes the socket; the close schedules the retry
        }
        this.dropSocket(out, 1000, 'authentication failed');
        this.retryAt = undefined;
        this.setState('failed', out);
        out.push({ kind: 'authStopped', error, failures: this.authFailures });
        return out;
      }
      case 'PONG':
        return out;
      case 'GC_PRUNE':
        // A statement about the server's tombstone horizon, valid whatever the auth state; a
        // no-auth server sends it before answering the handshake.
        if (isTimestamp(p.olderThan)) out.push({ kind: 'prune', olderThan: p.olderThan });
        return out;
    }
    if (!s.authenticated) {
      // An auth-optional server that sends data first: proceed unauthenticated (§6.1 step 3).
      if (s.graceDeadline !== undefined) {
        s.graceDeadline = undefined;
        this.onAuthenticated(now, out, undefined);
      } else {
        return out;
      }
    }
    this.dataMessage(msg, p, now, out);
    return out;
  }

  private dataMessage(msg: AnyMessage, p: Record<string, unknown>, now: number, out: Effect[]): void {
    switch (msg.type) {
      case 'OP_ACK':
        return this.onOpAck(String(p.lastId), p.achievedLevel as WriteConcern | undefined, now, out);
      case 'OP_REJECTED': {
        const seq = Number(p.opId);
        if (Number.isSafeInteger(seq)) out.push({ kind: 'opRejected', seq, reason: String(p.reason), code: p.code as number | undefined });
        return;
      }
      case 'SYNC_RESP_ROOT':
        return this.onRoot('lww', p, out);
      case 'ORMAP_SYNC_RESP_ROOT':
        if (p.fullResync === true) out.push({ kind: 'resetMap', mapKind: 'or', mapName: String(p.mapName) });
        return this.onRoot('or', p, out);
      case 'SYNC_RESP_BUCKETS':
        return this.onBuckets('lww', p, out);
      case 'ORMAP_SYNC_RESP_BUCKETS':
        return this.onBuckets('or', p, out);
      case 'SYNC_RESP_LEAF':
        return this.onLeaf('lww', p, out);
      case 'ORMAP_SYNC_RESP_LEAF':
        return this.onLeaf('or', p, out);
      case 'ORMAP_DIFF_RESPONSE':
        out.push({ kind: 'applyOr', mapName: String(p.mapName), entries: (p.entries ?? []) as ORMapEntry[] });
        return;
      case 'SYNC_RESET_REQUIRED': {
        const mapName = String(p.mapName);
        out.push({ kind: 'resetMap', mapKind: 'lww', mapName });
        out.push({ kind: 'lastSync', mapKind: 'lww', mapName, millis: 0 });
        this.session?.syncs.delete(syncKey('lww', mapName));
        if (this.maps.has(syncKey('lww', mapName))) this.startMapSync('lww', mapName, out, 0);
        return;
      }
      case 'SERVER_EVENT':
        out.push({ kind: 'applyEvents', events: [p as unknown as ServerEventPayload] });
        return;
      case 'SERVER_BATCH_EVENT':
        out.push({ kind: 'applyEvents', events: (p.events ?? []) as ServerEventPayload[] });
        return;
      default:
        out.push({ kind: 'deliver', message: msg });
    }
  }

  // ---- internals --------------------------------------------------------------------------

  private setState(state: EngineState, out: Effect[]): void {
    if (state === this.stateValue) return;
    this.stateValue = state;
    out.push({ kind: 'state', state });
  }

  private connect(now: number, out: Effect[]): void {
    this.connectDeadline = now + this.o.connectTimeoutMs;
    this.setState('connecting', out);
    out.push({ kind: 'openSocket' });
  }

  /** Close the current socket (if any) on our own initiative and forget the session. */
  private dropSocket(out: Effect[], code: number, reason: string): void {
    const active = ['connecting', 'authenticating', 'syncing', 'connected'].includes(this.stateValue);
    if (!active) return;
    out.push({ kind: 'closeSocket', code, reason });
    this.endSession(out, code, reason);
  }

  private endSession(out: Effect[], code: number, reason: string): void {
    this.session = undefined;
    this.connectDeadline = undefined;
    out.push({ kind: 'disconnected', code, reason });
  }

  private scheduleRetry(now: number, out: Effect[]): void {
    if (!this.online) {
      this.setState('offline', out);
      return;
    }
    this.retryAt = now + backoffDelay(this.attempt, this.o.backoff, this.o.random);
    this.attempt += 1;
    this.setState('backoff', out);
  }

  private onAuthenticated(now: number, out: Effect[], userId: string | undefined): void {
    const s = this.session;
    if (!s) return;
    this.authFailures = 0;
    if (s.authenticated) {
      out.push({ kind: 'authenticated', userId }); // a token refresh on a live connection
      return;
    }
    s.authenticated = true;
    this.attempt = 0;
    out.push({ kind: 'authenticated', userId });
    this.setState('syncing', out);
    // Order matters: ops first, so that the server's view includes our writes before any
    // query or sync reflects it (the server keeps per-connection request order).
    this.flushOps(now, out);
    for (const { topic, data } of this.publishQueue.splice(0)) {
      out.push({ kind: 'send', message: { type: 'TOPIC_PUB', payload: { topic, data } } });
    }
    s.pingAt = now + this.o.heartbeatIntervalMs;
    for (const { kind, name } of this.maps.values()) this.startMapSync(kind, name, out);
    for (const id of this.queries.keys()) out.push(this.querySub(id));
    for (const topic of this.topics) out.push({ kind: 'send', message: { type: 'TOPIC_SUB', payload: { topic } } });
    for (const name of this.counters) out.push({ kind: 'send', message: { type: 'COUNTER_REQUEST', payload: { name } } });
    out.push({ kind: 'ready' });
    this.checkSynced(out);
  }

  private querySub(queryId: string): Effect {
    const q = this.queries.get(queryId)!;
    // Field selection goes top-level as well (the server projects by it; PROTOCOL §4.7).
    const payload: Record<string, unknown> = { queryId, mapName: q.mapName, query: q.query };
    if (q.query.fields) payload.fields = q.query.fields;
    return { kind: 'send', message: { type: 'QUERY_SUB', payload } };
  }

  private flushOps(now: number, out: Effect[]): void {
    const s = this.session;
    if (!s || s.inFlight || s.resendAt !== undefined) return;
    const ops = this.replica.pendingOps(s.sentUpTo, this.o.batchSize);
    if (ops.length === 0) return;
    const lastSeq = ops[ops.length - 1]!.seq;
    out.push({ kind: 'send', message: { type: 'OP_BATCH', payload: { ops: ops.map((o) => o.op) } } });
    s.sentUpTo = lastSeq;
    s.inFlight = { lastSeq, sentAt: now };
  }

  private onOpAck(lastId: string, level: WriteConcern | undefined, now: number, out: Effect[]): void {
    const s = this.session!;
    const upTo = Number(lastId);
    if (Number.isSafeInteger(upTo)) out.push({ kind: 'opsAcked', upToSeq: upTo, achievedLevel: level });
    const batch = s.inFlight;
    if (!batch) return;
    s.inFlight = undefined;
    if (!Number.isSafeInteger(upTo) || upTo < batch.lastSeq) {
      // The server kept some ops back (retryable refusal): resend from there after a pause.
      s.sentUpTo = Number.isSafeInteger(upTo) ? upTo : 0;
      s.resendAt = now + this.o.retryDelayMs;
      return;
    }
    this.flushOps(now, out);
  }

  private startMapSync(kind: MapKind, name: string, out: Effect[], lastSync?: number): void {
    const s = this.session!;
    s.syncs.set(syncKey(kind, name), { kind, name, awaitingRoot: true, pending: new Set() });
    const lastSyncTimestamp = lastSync ?? this.replica.lastSyncMillis(kind, name);
    if (kind === 'lww') {
      out.push({ kind: 'send', message: { type: 'SYNC_INIT', mapName: name, lastSyncTimestamp } });
    } else {
      const tree = this.replica.tree('or', name);
      out.push({
        kind: 'send',
        message: { type: 'ORMAP_SYNC_INIT', mapName: name, rootHash: tree.rootHash, bucketHashes: tree.getBuckets(''), lastSyncTimestamp },
      });
    }
  }

  private onRoot(kind: MapKind, p: Record<string, unknown>, out: Effect[]): void {
    const mapName = String(p.mapName);
    const sync = this.session!.syncs.get(syncKey(kind, mapName));
    if (isTimestamp(p.timestamp)) {
      out.push({ kind: 'observeTimestamp', timestamp: p.timestamp });
      out.push({ kind: 'lastSync', mapKind: kind, mapName, millis: p.timestamp.millis });
    }
    if (!sync || !sync.awaitingRoot) return;
    sync.awaitingRoot = false;
    const local = p.fullResync === true ? 0 : this.replica.tree(kind, mapName).rootHash;
    if (p.rootHash !== local || p.fullResync === true) this.requestBucket(kind, mapName, '', sync, out);
    this.checkSynced(out);
  }

  private requestBucket(kind: MapKind, mapName: string, path: string, sync: MapSync, out: Effect[]): void {
    sync.pending.add(path);
    const type = kind === 'lww' ? 'MERKLE_REQ_BUCKET' : 'ORMAP_MERKLE_REQ_BUCKET';
    out.push({ kind: 'send', message: { type, payload: { mapName, path } } });
  }

  private onBuckets(kind: MapKind, p: Record<string, unknown>, out: Effect[]): void {
    const mapName = String(p.mapName);
    const path = String(p.path);
    const sync = this.session!.syncs.get(syncKey(kind, mapName));
    if (!sync || !sync.pending.delete(path) || !ANY_PATH.test(path) || path.length >= 3) {
      this.checkSynced(out);
      return;
    }
    const buckets = (p.buckets ?? {}) as Record<string, number>;
    const tree = this.replica.tree(kind, mapName);
    for (const [digit, hash] of Object.entries(buckets)) {
      if (!/^[0-9a-f]$/.test(digit)) continue;
      if (tree.nodeHash(path + digit) !== hash) this.requestBucket(kind, mapName, path + digit, sync, out);
    }
    if (kind === 'or') {
      // OR sync is two-way: push the keys under local buckets the server does not have.
      const missing = Object.entries(tree.getBuckets(path))
        .filter(([digit, hash]) => hash !== 0 && !(digit in buckets))
        .flatMap(([digit]) => tree.getKeysUnder(path + digit));
      this.pushDiff(mapName, missing, out);
    }
    this.checkSynced(out);
  }

  private onLeaf(kind: MapKind, p: Record<string, unknown>, out: Effect[]): void {
    const mapName = String(p.mapName);
    const path = String(p.path);
    const sync = this.session!.syncs.get(syncKey(kind, mapName));
    if (kind === 'lww') {
      const records = (p.records ?? []) as { key: string; record: LWWRecord }[];
      if (records.length > 0) out.push({ kind: 'applyLww', mapName, records });
    } else {
      const entries = (p.entries ?? []) as ORMapEntry[];
      if (entries.length > 0) out.push({ kind: 'applyOr', mapName, entries });
      if (ANY_PATH.test(path)) {
        const local = this.replica.tree('or', mapName).getKeysUnder(path);
        const keys = [...new Set([...entries.map((e) => e.key), ...local])];
        this.pushDiff(mapName, keys, out);
      }
    }
    // Leaves that arrive unrequested are the delta sent ahead of a root (lastSyncTimestamp).
    sync?.pending.delete(path);
    this.checkSynced(out);
  }

  private pushDiff(mapName: string, keys: string[], out: Effect[]): void {
    for (let i = 0; i < keys.length; i += this.o.pushDiffChunk) {
      const entries = this.replica.orEntries(mapName, keys.slice(i, i + this.o.pushDiffChunk));
      if (entries.length > 0) out.push({ kind: 'send', message: { type: 'ORMAP_PUSH_DIFF', payload: { mapName, entries } } });
    }
  }

  private checkSynced(out: Effect[]): void {
    const s = this.session;
    if (!s?.authenticated) return;
    for (const [key, sync] of s.syncs) {
      if (!sync.awaitingRoot && sync.pending.size === 0) {
        s.syncs.delete(key);
        out.push({ kind: 'mapSynced', mapKind: sync.kind, mapName: sync.name });
      }
    }
    if (s.syncs.size === 0 && this.stateValue === 'syncing') this.setState('connected', out);
  }
}
