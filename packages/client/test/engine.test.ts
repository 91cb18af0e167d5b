import { describe, expect, it } from 'vitest';
import { LWWMap } from '../src/crdt/lww-map.js';
import { ORMap } from '../src/crdt/or-map.js';
import type { StoredOp } from '../src/storage/types.js';
import { SyncEngine, type Effect, type EngineOptions, type Replica } from '../src/sync/engine.js';

/** A replica made of real CRDT maps; tests mutate it the way the driver would. */
function fixture(options: Partial<EngineOptions> = {}) {
  const lww = new Map<string, LWWMap>();
  const or = new Map<string, ORMap>();
  const ops: StoredOp[] = [];
  const lastSync = new Map<string, number>();
  const replica: Replica = {
    tree: (kind, name) => {
      if (kind === 'lww') return (lww.get(name) ?? lww.set(name, new LWWMap()).get(name)!).merkle;
      return (or.get(name) ?? or.set(name, new ORMap()).get(name)!).merkle;
    },
    orEntries: (name, keys) => keys.map((k) => or.get(name)!.entry(k)),
    pendingOps: (after, limit) => ops.filter((o) => o.seq > after).slice(0, limit),
    lastSyncMillis: (kind, name) => lastSync.get(`${kind}:${name}`) ?? 0,
  };
  const engine = new SyncEngine(replica, { hasServer: true, hasToken: false, random: () => 0.5, ...options });
  return { engine, lww, or, ops, lastSync };
}

const ts = (millis: number, counter = 0, nodeId = 'n1') => ({ millis, counter, nodeId });
const op = (seq: number, key = `k${seq}`): StoredOp => ({
  seq,
  op: { id: String(seq), mapName: 'todos', key, opType: 'PUT', record: { value: seq, timestamp: ts(seq) } },
});
const send = (message: Record<string, unknown>): Effect => ({ kind: 'send', message: message as never });

/** Drive an engine with no maps through connect and a token-less handshake. */
function connected(f: ReturnType<typeof fixture>): Effect[] {
  f.engine.start(0);
  f.engine.socketOpened(10);
  return f.engine.message({ type: 'DEVICE_ACK' }, 20);
}

describe('connect and handshake', () => {
  it('local-only without a server', () => {
    const { engine } = fixture({ hasServer: false });
    expect(engine.start(0)).toEqual([{ kind: 'state', state: 'disconnected' }]);
    expect(engine.nextDeadline()).toBeUndefined();
  });

  it('token-less: DEVICE_HELLO, then DEVICE_ACK starts the session', () => {
    const f = fixture();
    f.ops.push(op(1), op(2));
    f.engine.addMap('lww', 'todos');
    expect(f.engine.start(0)).toEqual([{ kind: 'state', state: 'connecting' }, { kind: 'openSocket' }]);
    expect(f.engine.nextDeadline()).toBe(5000); // connect timeout
    expect(f.engine.socketOpened(10)).toEqual([
      { kind: 'state', state: 'authenticating' },
      send({ type: 'DEVICE_HELLO', deviceToken: undefined }),
    ]);
    expect(f.engine.message({ type: 'DEVICE_ACK', deviceId: 'd', deviceToken: 'tok' }, 20)).toEqual([
      { kind: 'deviceToken', token: 'tok' },
      { kind: 'authenticated', userId: undefined },
      { kind: 'state', state: 'syncing' },
      send({ type: 'OP_BATCH', payload: { ops: [op(1).op, op(2).op] } }),
      send({ type: 'SYNC_INIT', mapName: 'todos', lastSyncTimestamp: 0 }),
      { kind: 'ready' },
    ]);
  });

  it('token-less: proceeds after the 500 ms grace when the server says nothing', () => {
    const f = fixture();
    f.engine.start(0);
    f.engine.socketOpened(10);
    expect(f.engine.nextDeadline()).toBe(510);
    expect(f.engine.tick(509)).toEqual([]);
    expect(f.engine.tick(510)).toEqual([
      { kind: 'authenticated', userId: undefined },
      { kind: 'state', state: 'syncing' },
      { kind: 'ready' },
      { kind: 'state', state: 'connected' },
    ]);
  });

  it('token-less against an auth server: reports authRequired and waits', () => {
    const f = fixture();
    f.engine.start(0);
    f.engine.socketOpened(10);
    expect(f.engine.message({ type: 'AUTH_REQUIRED' }, 11)).toEqual([{ kind: 'authRequired' }]);
    expect(f.engine.tick(10_000).filter((e) => e.kind === 'authenticated')).toEqual([]);
  });

  it('with a token: AUTH on open, refresh before exp on the same connection', () => {
    const f = fixture({ hasToken: true, tokenRefreshMarginMs: 30_000 });
    f.engine.start(0);
    expect(f.engine.socketOpened(10)).toEqual([{ kind: 'state', state: 'authenticating' }, { kind: 'fetchToken' }]);
    const payload = Buffer.from(JSON.stringify({ sub: 'u1', exp: 100 })).toString('base64url');
    const token = `h.${payload}.s`;
    expect(f.engine.tokenReady(token, 20)).toEqual([send({ type: 'AUTH', token })]);
    expect(f.engine.message({ type: 'AUTH_ACK', userId: 'u1' }, 30)).toEqual([
      { kind: 'authenticated', userId: 'u1' },
      { kind: 'state', state: 'syncing' },
      { kind: 'ready' },
      { kind: 'state', state: 'connected' },
    ]);
    // exp 100 s, margin 30 s → refresh at 70,000 ms; the heartbeat fires first at 5,030.
    expect(f.engine.tick(69_999).some((e) => e.kind === 'fetchToken')).toBe(false);
    expect(f.engine.tick(70_000).filter((e) => e.kind === 'fetchToken')).toEqual([{ kind: 'fetchToken' }]);
    expect(f.engine.tokenReady('t2', 70_001)).toEqual([send({ type: 'AUTH', token: 't2' })]);
    // A second AUTH_ACK does not restart the session's sync.
    expect(f.engine.message({ type: 'AUTH_ACK', userId: 'u1' }, 70_002)).toEqual([{ kind: 'authenticated', userId: 'u1' }]);
  });

  it('AUTH_FAIL then the server close: backoff, and the next attempt fetches a fresh token', () => {
    const f = fixture({ hasToken: true });
    f.engine.start(0);
    f.engine.socketOpened(10);
    f.engine.tokenReady('expired', 11);
    expect(f.engine.message({ type: 'AUTH_FAIL', error: 'token expired' }, 12)).toEqual([{ kind: 'authFailed', error: 'token expired' }]);
    expect(f.engine.socketClosed(1008, 'auth', 13)).toEqual([
      { kind: 'disconnected', code: 1008, reason: 'auth' },
      { kind: 'state', state: 'backoff' },
    ]);
    expect(f.engine.nextDeadline()).toBe(1013); // 1000 ms × jitter factor 1.0 (random 0.5)
    expect(f.engine.tick(1013)).toEqual([{ kind: 'state', state: 'connecting' }, { kind: 'openSocket' }]);
    expect(f.engine.socketOpened(1020)).toEqual([{ kind: 'state', state: 'authenticating' }, { kind: 'fetchToken' }]);
  });
});

describe('repeated authentication failures', () => {
  /** One connection whose token the server refuses: open, AUTH, AUTH_FAIL. */
  function refused(f: ReturnType<typeof fixture>, now: number): Effect[] {
    f.engine.socketOpened(now);
    f.engine.tokenReady('bad', now + 1);
    return f.engine.message({ type: 'AUTH_FAIL', error: 'invalid signature' }, now + 2);
  }

  it('stops after maxAuthFailures refusals in a row: failed, socket closed, nothing scheduled', () => {
    const f = fixture({ hasToken: true, maxAuthFailures: 2 });
    f.engine.start(0);
    expect(refused(f, 10)).toEqual([{ kind: 'authFailed', error: 'invalid signature' }]);
    f.engine.socketClosed(1008, 'auth', 13);
    expect(f.engine.tick(1013)).toEqual([{ kind: 'state', state: 'connecting' }, { kind: 'openSocket' }]);
    expect(refused(f, 1020)).toEqual([
      { kind: 'closeSocket', code: 1000, reason: 'authentication failed' },
      { kind: 'disconnected', code: 1000, reason: 'authentication failed' },
      { kind: 'state', state: 'failed' },
      { kind: 'authStopped', error: 'invalid signature', failures: 2 },
    ]);
    expect(f.engine.state).toBe('failed');
    expect(f.engine.nextDeadline()).toBeUndefined();
    // The server's close of that socket, ticks and connectivity changes do not bring it back.
    expect(f.engine.socketClosed(1008, 'auth', 1023)).toEqual([]);
    expect(f.engine.tick(1_000_000)).toEqual([]);
    expect(f.engine.connectivity(false, 1_000_001)).toEqual([]);
    expect(f.engine.connectivity(true, 1_000_002)).toEqual([]);
    expect(f.engine.state).toBe('failed');
  });

  it('resume() (a new token, start()) connects at once and counts refusals from zero', () => {
    const f = fixture({ hasToken: true, maxAuthFailures: 2 });
    f.engine.start(0);
    refused(f, 10);
    f.engine.socketClosed(1008, 'auth', 13);
    f.engine.tick(1013);
    refused(f, 1020);
    expect(f.engine.resume(5000)).toEqual([{ kind: 'state', state: 'connecting' }, { kind: 'openSocket' }]);
    expect(refused(f, 5010)).toEqual([{ kind: 'authFailed', error: 'invalid signature' }]);
    expect(f.engine.resume(5020)).toEqual([]); // only out of `failed`
  });

  it('resume() while offline waits offline', () => {
    const f = fixture({ hasToken: true, maxAuthFailures: 1 });
    f.engine.start(0);
    refused(f, 10);
    f.engine.connectivity(false, 20);
    expect(f.engine.resume(30)).toEqual([{ kind: 'state', state: 'offline' }]);
    expect(f.engine.connectivity(true, 40)).toEqual([{ kind: 'state', state: 'connecting' }, { kind: 'openSocket' }]);
  });

  it('a successful authentication resets the count', () => {
    const f = fixture({ hasToken: true, maxAuthFailures: 2 });
    f.engine.start(0);
    refused(f, 10);
    f.engine.socketClosed(1008, 'auth', 13);
    f.engine.tick(1013);
    f.engine.socketOpened(1020);
    f.engine.tokenReady('good', 1021);
    f.engine.message({ type: 'AUTH_ACK', userId: 'u1' }, 1022);
    f.engine.socketClosed(1006, '', 2000);
    f.engine.tick(3000);
    expect(refused(f, 3010)).toEqual([{ kind: 'authFailed', error: 'invalid signature' }]);
    expect(f.engine.state).toBe('authenticating');
  });

  it('maxAuthFailures below 1 is refused', () => {
    expect(() => fixture({ maxAuthFailures: 0 })).toThrow(RangeError);
  });
});

describe('reconnect, heartbeat, connectivity', () => {
  it('backoff doubles per failed attempt and resets after a successful handshake', () => {
    const f = fixture();
    f.engine.start(0);
    f.engine.socketClosed(1006, '', 0);
    expect(f.engine.nextDeadline()).toBe(1000);
    f.engine.tick(1000);
    f.engine.socketClosed(1006, '', 1000);
    expect(f.engine.nextDeadline()).toBe(3000);
    f.engine.tick(3000);
    f.engine.socketClosed(1006, '', 3000);
    expect(f.engine.nextDeadline()).toBe(7000);
    f.engine.tick(7000);
    f.engine.socketOpened(7001);
    f.engine.message({ type: 'DEVICE_ACK' }, 7002);
    f.engine.socketClosed(1006, '', 8000);
    expect(f.engine.nextDeadline()).toBe(9000);
  });

  it('connect timeout closes the socket and backs off', () => {
    const f = fixture();
    f.engine.start(0);
    expect(f.engine.tick(5000)).toEqual([
      { kind: 'closeSocket', code: 4000, reason: 'connect timeout' },
      { kind: 'disconnected', code: 4000, reason: 'connect timeout' },
      { kind: 'state', state: 'backoff' },
    ]);
  });

  it('PING every interval; no answer within the timeout drops the connection', () => {
    const f = fixture();
    connected(f);
    expect(f.engine.tick(5020)).toEqual([send({ type: 'PING', timestamp: 5020 })]);
    expect(f.engine.message({ type: 'PONG', timestamp: 5020, serverTime: 5021 }, 5025)).toEqual([]);
    expect(f.engine.tick(10_020)).toEqual([send({ type: 'PING', timestamp: 10_020 })]);
    expect(f.engine.tick(15_020)).toEqual([send({ type: 'PING', timestamp: 15_020 })]);
    expect(f.engine.tick(25_020)).toEqual([
      { kind: 'closeSocket', code: 4000, reason: 'heartbeat timeout' },
      { kind: 'disconnected', code: 4000, reason: 'heartbeat timeout' },
      { kind: 'state', state: 'backoff' },
    ]);
  });

  it('offline closes and waits; online reconnects at once', () => {
    const f = fixture();
    connected(f);
    expect(f.engine.connectivity(false, 100)).toEqual([
      { kind: 'closeSocket', code: 1000, reason: 'offline' },
      { kind: 'disconnected', code: 1000, reason: 'offline' },
      { kind: 'state', state: 'offline' },
    ]);
    expect(f.engine.nextDeadline()).toBeUndefined();
    expect(f.engine.connectivity(true, 200)).toEqual([{ kind: 'state', state: 'connecting' }, { kind: 'openSocket' }]);
  });

  it('a slow-consumer kick (1013) reconnects after the shortest delay', () => {
    const f = fixture();
    connected(f);
    f.engine.socketClosed(1006, '', 100); // attempt 0 → 1000
    f.engine.tick(1100);
    f.engine.socketOpened(1101);
    f.engine.message({ type: 'DEVICE_ACK' }, 1102);
    f.engine.socketClosed(1013, 'slow consumer', 2000);
    expect(f.engine.nextDeadline()).toBe(3000);
  });

  it('re-subscribes queries and topics and re-syncs maps after every reconnect', () => {
    const f = fixture();
    f.engine.addMap('lww', 'todos');
    expect(f.engine.addQuery('q1', 'todos', { where: { done: false } })).toEqual([]);
    expect(f.engine.addTopic('chat')).toEqual([]);
    expect(f.engine.publish('chat', 'queued')).toEqual([]);
    const first = connected(f).filter((e) => e.kind === 'send');
    const expected = [
      send({ type: 'TOPIC_PUB', payload: { topic: 'chat', data: 'queued' } }),
      send({ type: 'SYNC_INIT', mapName: 'todos', lastSyncTimestamp: 0 }),
      send({ type: 'QUERY_SUB', payload: { queryId: 'q1', mapName: 'todos', query: { where: { done: false } } } }),
      send({ type: 'TOPIC_SUB', payload: { topic: 'chat' } }),
    ];
    expect(first).toEqual(expected);
    f.engine.socketClosed(1006, '', 100);
    f.engine.tick(1100);
    f.engine.socketOpened(1101);
    expect(f.engine.message({ type: 'DEVICE_ACK' }, 1102).filter((e) => e.kind === 'send')).toEqual(expected.slice(1));
  });

  it('publishes queued while offline are bounded (oldest dropped)', () => {
    const f = fixture({ maxQueuedPublishes: 2 });
    f.engine.publish('t', 1);
    f.engine.publish('t', 2);
    f.engine.publish('t', 3);
    const sends = connected(f).filter((e) => e.kind === 'send');
    expect(sends).toEqual([send({ type: 'TOPIC_PUB', payload: { topic: 't', data: 2 } }), send({ type: 'TOPIC_PUB', payload: { topic: 't', data: 3 } })]);
  });
});

describe('op log flush', () => {
  it('sends batches one at a time and advances on OP_ACK', () => {
    const f = fixture({ batchSize: 2 });
    f.ops.push(op(1), op(2), op(3));
    const out = connected(f).filter((e) => e.kind === 'send');
    expect(out).toEqual([send({ type: 'OP_BATCH', payload: { ops: [op(1).op, op(2).op] } })]);
    expect(f.engine.opsAdded(30)).toEqual([]); // one batch in flight
    f.ops.splice(0, 2); // the driver drops acknowledged ops
    expect(f.engine.message({ type: 'OP_ACK', payload: { lastId: '2', achievedLevel: 'PERSISTED' } }, 40)).toEqual([
      { kind: 'opsAcked', upToSeq: 2, achievedLevel: 'PERSISTED' },
      send({ type: 'OP_BATCH', payload: { ops: [op(3).op] } }),
    ]);
  });

  it('OP_REJECTED is reported; an ack that stops short resends the rest after a pause', () => {
    const f = fixture();
    f.ops.push(op(1), op(2), op(3));
    connected(f);
    expect(f.engine.message({ type: 'OP_REJECTED', payload: { opId: '2', reason: 'timestamp too far ahead', code: 400 } }, 30)).toEqual([
      { kind: 'opRejected', seq: 2, reason: 'timestamp too far ahead', code: 400 },
    ]);
    f.ops.splice(0, 1);
    expect(f.engine.message({ type: 'OP_ACK', payload: { lastId: '1' } }, 40)).toEqual([{ kind: 'opsAcked', upToSeq: 1, achievedLevel: undefined }]);
    expect(f.engine.nextDeadline()).toBe(1040);
    expect(f.engine.tick(1040)).toEqual([send({ type: 'OP_BATCH', payload: { ops: [op(2).op, op(3).op] } })]);
  });

  it('a batch without an ack is re-sent after the ack timeout', () => {
    const f = fixture({ ackTimeoutMs: 1000, heartbeatIntervalMs: 60_000 });
    f.ops.push(op(1));
    connected(f);
    expect(f.engine.tick(1020)).toEqual([send({ type: 'OP_BATCH', payload: { ops: [op(1).op] } })]);
  });

  it('after a reconnect the unacknowledged ops are sent again', () => {
    const f = fixture();
    f.ops.push(op(1));
    connected(f);
    f.engine.socketClosed(1006, '', 50);
    f.engine.tick(1050);
    f.engine.socketOpened(1051);
    expect(f.engine.message({ type: 'DEVICE_ACK' }, 1052).filter((e) => e.kind === 'send')).toEqual([
      send({ type: 'OP_BATCH', payload: { ops: [op(1).op] } }),
    ]);
  });
});

describe('Merkle sync (§6.3)', () => {
  it('equal roots: one round trip', () => {
    const f = fixture();
    f.engine.addMap('lww', 'todos');
    f.lww.set('todos', new LWWMap());
    f.lww.get('todos')!.merge('a', { value: 1, timestamp: ts(5) });
    connected(f);
    const root = f.lww.get('todos')!.merkle.rootHash;
    expect(f.engine.message({ type: 'SYNC_RESP_ROOT', payload: { mapName: 'todos', rootHash: root, timestamp: ts(99, 0, 'srv') } }, 30)).toEqual([
      { kind: 'observeTimestamp', timestamp: ts(99, 0, 'srv') },
      { kind: 'lastSync', mapKind: 'lww', mapName: 'todos', millis: 99 },
      { kind: 'mapSynced', mapKind: 'lww', mapName: 'todos' },
      { kind: 'state', state: 'connected' },
    ]);
  });

  it('different roots: walks only the differing buckets down to the leaves', () => {
    const f = fixture();
    f.engine.addMap('lww', 'todos');
    const server = new LWWMap();
    for (const [k, m] of [['alice', 1], ['bob', 2], ['carol', 3]] as const) server.merge(k, { value: m, timestamp: ts(m) });
    const local = new LWWMap();
    local.merge('alice', { value: 1, timestamp: ts(1) }); // same as the server's
    f.lww.set('todos', local);
    connected(f);
    const s = server.merkle;
    expect(f.engine.message({ type: 'SYNC_RESP_ROOT', payload: { mapName: 'todos', rootHash: s.rootHash, timestamp: ts(9) } }, 30).filter((e) => e.kind === 'send')).toEqual([
      send({ type: 'MERKLE_REQ_BUCKET', payload: { mapName: 'todos', path: '' } }),
    ]);
    // Paths: alice 872…, bob 86c…, carol 670…; integer-like object keys come in numeric order.
    expect(f.engine.message({ type: 'SYNC_RESP_BUCKETS', payload: { mapName: 'todos', path: '', buckets: s.getBuckets('') } }, 31)).toEqual([
      send({ type: 'MERKLE_REQ_BUCKET', payload: { mapName: 'todos', path: '6' } }),
      send({ type: 'MERKLE_REQ_BUCKET', payload: { mapName: 'todos', path: '8' } }),
    ]);
    const level2 = f.engine.message({ type: 'SYNC_RESP_BUCKETS', payload: { mapName: 'todos', path: '8', buckets: s.getBuckets('8') } }, 32);
    expect(level2).toEqual([send({ type: 'MERKLE_REQ_BUCKET', payload: { mapName: 'todos', path: '86' } })]); // '87' (alice) is equal
    expect(f.engine.message({ type: 'SYNC_RESP_BUCKETS', payload: { mapName: 'todos', path: '86', buckets: s.getBuckets('86') } }, 33)).toEqual([
      send({ type: 'MERKLE_REQ_BUCKET', payload: { mapName: 'todos', path: '86c' } }),
    ]);
    const bob = { key: 'bob', record: server.getRecord('bob')! };
    expect(f.engine.message({ type: 'SYNC_RESP_LEAF', payload: { mapName: 'todos', path: '86c', records: [bob] } }, 34)).toEqual([
      { kind: 'applyLww', mapName: 'todos', records: [bob] },
    ]);
    f.engine.message({ type: 'SYNC_RESP_BUCKETS', payload: { mapName: 'todos', path: '6', buckets: s.getBuckets('6') } }, 35);
    f.engine.message({ type: 'SYNC_RESP_BUCKETS', payload: { mapName: 'todos', path: '67', buckets: s.getBuckets('67') } }, 36);
    const carol = { key: 'carol', record: server.getRecord('carol')! };
    expect(f.engine.message({ type: 'SYNC_RESP_LEAF', payload: { mapName: 'todos', path: '670', records: [carol] } }, 37)).toEqual([
      { kind: 'applyLww', mapName: 'todos', records: [carol] },
      { kind: 'mapSynced', mapKind: 'lww', mapName: 'todos' },
      { kind: 'state', state: 'connected' },
    ]);
  });

  it('delta leaves sent before the root are applied without a request', () => {
    const f = fixture();
    f.lastSync.set('lww:todos', 1234);
    f.engine.addMap('lww', 'todos');
    const sends = connected(f).filter((e) => e.kind === 'send');
    expect(sends).toEqual([send({ type: 'SYNC_INIT', mapName: 'todos', lastSyncTimestamp: 1234 })]);
    const rec = { key: 'x', record: { value: 1, timestamp: ts(2000) } };
    expect(f.engine.message({ type: 'SYNC_RESP_LEAF', payload: { mapName: 'todos', path: 'abc', records: [rec] } }, 30)).toEqual([
      { kind: 'applyLww', mapName: 'todos', records: [rec] },
    ]);
  });

  it('OR sync: init carries root and buckets; leaves are merged and pushed back', () => {
    const f = fixture();
    const local = new ORMap();
    local.apply('list', { value: 'mine', timestamp: ts(1), tag: '1:0:n1' });
    f.or.set('todos', local);
    f.engine.addMap('or', 'todos');
    const init = connected(f).filter((e) => e.kind === 'send');
    expect(init).toEqual([
      send({ type: 'ORMAP_SYNC_INIT', mapName: 'todos', rootHash: local.merkle.rootHash, bucketHashes: local.merkle.getBuckets(''), lastSyncTimestamp: 0 }),
    ]);
    expect(f.engine.message({ type: 'ORMAP_SYNC_RESP_ROOT', payload: { mapName: 'todos', rootHash: 1, timestamp: ts(5) } }, 30).filter((e) => e.kind === 'send')).toEqual([
      send({ type: 'ORMAP_MERKLE_REQ_BUCKET', payload: { mapName: 'todos', path: '' } }),
    ]);
    // The server lists no bucket at all: our key is pushed.
    expect(f.engine.message({ type: 'ORMAP_SYNC_RESP_BUCKETS', payload: { mapName: 'todos', path: '', buckets: {} } }, 31)).toEqual([
      send({ type: 'ORMAP_PUSH_DIFF', payload: { mapName: 'todos', entries: [local.entry('list')] } }),
      { kind: 'mapSynced', mapKind: 'or', mapName: 'todos' },
      { kind: 'state', state: 'connected' },
    ]);
  });
});

describe('server events and other messages', () => {
  it('routes events, GC_PRUNE and feature messages', () => {
    const f = fixture();
    connected(f);
    const ev = { mapName: 'todos', eventType: 'PUT', key: 'a', record: { value: 1, timestamp: ts(1) } };
    expect(f.engine.message({ type: 'SERVER_EVENT', payload: ev }, 30)).toEqual([{ kind: 'applyEvents', events: [ev] }]);
    expect(f.engine.message({ type: 'SERVER_BATCH_EVENT', payload: { events: [ev, ev] } }, 31)).toEqual([{ kind: 'applyEvents', events: [ev, ev] }]);
    expect(f.engine.message({ type: 'GC_PRUNE', payload: { olderThan: ts(5) } }, 32)).toEqual([{ kind: 'prune', olderThan: ts(5) }]);
    const q = { type: 'QUERY_UPDATE', payload: { queryId: 'q', key: 'a', value: 1, changeType: 'ENTER' } };
    expect(f.engine.message(q, 33)).toEqual([{ kind: 'deliver', message: q }]);
  });

  it('nothing but the handshake (and GC_PRUNE) is handled before authentication', () => {
    const f = fixture({ hasToken: true });
    f.engine.start(0);
    f.engine.socketOpened(1);
    expect(f.engine.message({ type: 'SERVER_EVENT', payload: {} }, 2)).toEqual([]);
    // Our server in no-auth mode sends GC_PRUNE before it answers AUTH.
    expect(f.engine.message({ type: 'GC_PRUNE', payload: { olderThan: ts(5) } }, 3)).toEqual([{ kind: 'prune', olderThan: ts(5) }]);
  });
});
