/**
 * The HTTP sync machine's exact outputs: what each request carries, what each answer does to
 * the op log, the replica and the query handles, and when the next request is due.
 */
import { describe, expect, it } from 'vitest';
import type { Timestamp } from '../src/crdt/hlc.js';
import type { StoredOp } from '../src/storage/types.js';
import { HttpSyncEngine, NEVER_SYNCED, QUERIES_PER_REQUEST, toHttpQuery, type HttpEngineOptions } from '../src/sync/http-engine.js';
import type { HttpEffect } from '../src/sync/machine.js';

function fixture(options: Partial<HttpEngineOptions> = {}) {
  const ops: StoredOp[] = [];
  const since = new Map<string, Timestamp>();
  const engine = new HttpSyncEngine(
    {
      pendingOps: (after, limit) => ops.filter((o) => o.seq > after).slice(0, limit),
      syncTimestamp: (name) => since.get(name) ?? NEVER_SYNCED,
    },
    { hasServer: true, hasToken: false, random: () => 0.5, ...options },
  );
  /** What the driver does with `opsAcked`: drop the ops from the log. */
  const ackInto = (effects: HttpEffect[]): HttpEffect[] => {
    for (const e of effects) if (e.kind === 'opsAcked') ops.splice(0, ops.filter((o) => o.seq <= e.upToSeq).length);
    return effects;
  };
  return { engine, ops, since, ackInto };
}

const ts = (millis: number, counter = 0, nodeId = 'n1'): Timestamp => ({ millis, counter, nodeId });
const op = (seq: number, mapName = 'todos'): StoredOp => ({
  seq,
  op: { id: String(seq), mapName, key: `k${seq}`, opType: 'PUT', record: { value: seq, timestamp: ts(seq) } },
});
const serverHlc = ts(1000, 0, 'server');
const post = (requestId: number, body: Record<string, unknown>, token: string | null = null): HttpEffect => ({ kind: 'post', requestId, body, token });

describe('HTTP sync: requests', () => {
  it('local-only without a server', () => {
    const { engine } = fixture({ hasServer: false });
    expect(engine.start(0)).toEqual([{ kind: 'state', state: 'disconnected' }]);
    expect(engine.nextDeadline()).toBeUndefined();
  });

  it('the first request carries pending ops, every LWW map from the beginning, and live queries', () => {
    const f = fixture();
    f.ops.push(op(1), op(2));
    f.engine.addMap('lww', 'todos');
    f.engine.addMap('or', 'tags'); // OR maps are not served over HTTP
    f.engine.addQuery('q1', 'todos', { where: { done: false }, limit: 10 });
    expect(f.engine.start(0)).toEqual([
      { kind: 'state', state: 'connecting' },
      post(1, {
        operations: [f.ops[0]!.op, f.ops[1]!.op],
        syncMaps: [{ mapName: 'todos', lastSyncTimestamp: { millis: 0, counter: 0, nodeId: '' } }],
        queries: [{ queryId: 'q1', mapName: 'todos', filter: { done: false }, limit: 10 }],
      }),
    ]);
    expect(f.engine.nextDeadline()).toBe(30_000); // the request timeout
  });

  it('an empty request when there is nothing to say (it still fetches the server clock)', () => {
    const f = fixture();
    expect(f.engine.start(0)).toEqual([{ kind: 'state', state: 'connecting' }, post(1, {})]);
  });

  it('a map syncs from its last serverSyncTimestamp', () => {
    const f = fixture();
    f.since.set('todos', ts(5000, 0, 'server'));
    f.engine.addMap('lww', 'todos');
    expect(f.engine.start(0)[1]).toEqual(post(1, { syncMaps: [{ mapName: 'todos', lastSyncTimestamp: ts(5000, 0, 'server') }] }));
  });

  it('ops go in batches of batchSize; a full batch brings the next request at once', () => {
    const f = fixture({ batchSize: 2 });
    f.ops.push(op(1), op(2), op(3));
    expect(f.engine.start(0)[1]).toEqual(post(1, { operations: [f.ops[0]!.op, f.ops[1]!.op] }));
    f.ackInto(f.engine.responded(1, { serverHlc, ack: { lastId: '2' } }, 100));
    expect(f.engine.nextDeadline()).toBe(100);
    expect(f.engine.tick(100)).toEqual([post(2, { operations: [op(3).op] })]);
  });

  it('sends queries in turns of 64 when there are more', () => {
    const f = fixture();
    for (let i = 0; i < QUERIES_PER_REQUEST + 6; i++) f.engine.addQuery(`q${i}`, 'm', {});
    const ids = (e: HttpEffect | undefined) => ((e as { body: { queries: { queryId: string }[] } }).body.queries ?? []).map((q) => q.queryId);
    const first = ids(f.engine.start(0)[1]);
    expect(first).toHaveLength(QUERIES_PER_REQUEST);
    expect(first[0]).toBe('q0');
    f.engine.responded(1, { serverHlc }, 10);
    const second = ids(f.engine.tick(5010)[0]);
    expect(second).toHaveLength(QUERIES_PER_REQUEST);
    expect(second.slice(0, 6)).toEqual(['q64', 'q65', 'q66', 'q67', 'q68', 'q69']);
  });

  it('a query becomes a filter: where → filter; limit only when the key order is the order', () => {
    expect(toHttpQuery('q', 'm', { where: { a: 1 }, limit: 5 })).toEqual({ queryId: 'q', mapName: 'm', filter: { a: 1 }, limit: 5 });
    expect(toHttpQuery('q', 'm', { sort: [{ field: 'a', direction: 'asc' }], limit: 5 })).toEqual({ queryId: 'q', mapName: 'm' });
    expect(toHttpQuery('q', 'm', { predicate: { op: 'gt', attribute: 'a', value: 1 }, limit: 5 })).toEqual({ queryId: 'q', mapName: 'm' });
  });
});

describe('HTTP sync: answers', () => {
  it('acks: refused ops are rejected first, then each accepted op leaves with its level', () => {
    const f = fixture();
    f.ops.push(op(5), op(6), op(7));
    f.engine.start(0);
    const out = f.engine.responded(
      1,
      {
        serverHlc,
        ack: {
          lastId: '7',
          results: [
            { opId: '5', success: true, achievedLevel: 'APPLIED' },
            { opId: '6', success: false, achievedLevel: 'FIRE_AND_FORGET', error: 'map "_topgun_x" is reserved for the server' },
            { opId: '7', success: true, achievedLevel: 'PERSISTED' },
          ],
        },
        errors: [{ code: 403, message: 'map "_topgun_x" is reserved', context: { opId: '6', mapName: '_topgun_x' } }],
      },
      50,
    );
    expect(out).toEqual([
      { kind: 'observeTimestamp', timestamp: serverHlc },
      { kind: 'opRejected', seq: 6, reason: 'map "_topgun_x" is reserved', code: 403 },
      { kind: 'opsAcked', upToSeq: 5, achievedLevel: 'APPLIED' },
      { kind: 'opsAcked', upToSeq: 7, achievedLevel: 'PERSISTED' },
      { kind: 'authenticated', userId: undefined },
      { kind: 'state', state: 'connected' },
    ]);
    expect(f.engine.nextDeadline()).toBe(50 + 5000); // the next poll
  });

  it('an ack that stops short (retryable refusal) resends the rest after retryDelayMs', () => {
    const f = fixture();
    f.ops.push(op(1), op(2));
    f.engine.start(0);
    const out = f.ackInto(
      f.engine.responded(
        1,
        {
          serverHlc,
          ack: { lastId: '1', results: [{ opId: '1', success: true, achievedLevel: 'APPLIED' }, { opId: '2', success: false, error: 'rate limit' }] },
          errors: [{ code: 429, message: 'rate limit exceeded', context: { opId: '2', mapName: 'todos' } }],
        },
        10,
      ),
    );
    expect(out).toContainEqual({ kind: 'opRejected', seq: 2, reason: 'rate limit exceeded', code: 429 });
    expect(f.engine.nextDeadline()).toBe(1010);
    expect(f.engine.tick(1010)).toEqual([post(2, { operations: [op(2).op] })]);
  });

  it('deltas merge into the replica, move the map on, and report the map synced once', () => {
    const f = fixture();
    f.engine.addMap('lww', 'todos');
    f.engine.start(0);
    const record = { value: { t: 1 }, timestamp: ts(900, 0, 'other') };
    const tomb = { value: null, timestamp: ts(901, 0, 'other') };
    const delta = {
      mapName: 'todos',
      records: [
        { key: 'a', record, eventType: 'PUT' },
        { key: 'b', record: tomb, eventType: 'REMOVE' },
      ],
      serverSyncTimestamp: ts(1000, 0, 'server'),
    };
    expect(f.engine.responded(1, { serverHlc, deltas: [delta, { ...delta, mapName: 'unknown' }] }, 10)).toEqual([
      { kind: 'observeTimestamp', timestamp: serverHlc },
      { kind: 'applyLww', mapName: 'todos', records: [{ key: 'a', record }, { key: 'b', record: tomb }] },
      { kind: 'observeTimestamp', timestamp: ts(1000, 0, 'server') },
      { kind: 'syncTimestamp', mapName: 'todos', timestamp: ts(1000, 0, 'server') },
      { kind: 'mapSynced', mapKind: 'lww', mapName: 'todos' },
      { kind: 'authenticated', userId: undefined },
      { kind: 'state', state: 'connected' },
    ]);
    f.engine.tick(5010);
    const again = f.engine.responded(2, { serverHlc, deltas: [{ mapName: 'todos', records: [], serverSyncTimestamp: ts(1001, 0, 'server') }] }, 5020);
    expect(again.map((e) => e.kind)).toEqual(['observeTimestamp', 'observeTimestamp', 'syncTimestamp']);
  });

  it('query results become QUERY_RESP deliveries; closed queries and other errors are handled', () => {
    const f = fixture();
    f.engine.addQuery('q1', 'todos', {});
    f.engine.addQuery('q2', 'todos', {});
    f.engine.start(0);
    f.engine.removeQuery('q2');
    const rows = [{ key: 'a', value: { t: 1 } }];
    expect(
      f.engine.responded(
        1,
        {
          serverHlc,
          queryResults: [
            { queryId: 'q1', results: rows, hasMore: false },
            { queryId: 'q2', results: rows },
          ],
          errors: [{ code: 501, message: 'search is not served', context: { searchId: 's', mapName: 'm' } }],
        },
        10,
      ),
    ).toEqual([
      { kind: 'observeTimestamp', timestamp: serverHlc },
      { kind: 'deliver', message: { type: 'ERROR', payload: { code: 501, message: 'search is not served', details: { searchId: 's', mapName: 'm' } } } },
      { kind: 'deliver', message: { type: 'QUERY_RESP', payload: { queryId: 'q1', results: rows, hasMore: false } } },
      { kind: 'authenticated', userId: undefined },
      { kind: 'state', state: 'connected' },
    ]);
  });

  it('writes while connected and idle are sent at once, coalesced into one request', () => {
    const f = fixture();
    f.engine.start(0);
    f.engine.responded(1, { serverHlc }, 10);
    f.ops.push(op(1));
    f.engine.opsAdded(20);
    f.ops.push(op(2));
    f.engine.opsAdded(20);
    expect(f.engine.nextDeadline()).toBeLessThanOrEqual(20);
    expect(f.engine.tick(20)).toEqual([post(2, { operations: [op(1).op, op(2).op] })]);
  });

  it('writes during a request go with the next one, right after the answer', () => {
    const f = fixture();
    f.engine.start(0);
    f.ops.push(op(1));
    expect(f.engine.opsAdded(5)).toEqual([]);
    f.engine.responded(1, { serverHlc }, 10);
    expect(f.engine.nextDeadline()).toBe(10);
    expect(f.engine.tick(10)).toEqual([post(2, { operations: [op(1).op] })]);
  });

  it('an answer to an abandoned request is ignored', () => {
    const f = fixture();
    f.engine.start(0);
    expect(f.engine.tick(30_000)).toEqual([{ kind: 'abortRequest', requestId: 1 }, { kind: 'state', state: 'backoff' }]);
    expect(f.engine.responded(1, { serverHlc }, 30_001)).toEqual([]);
    expect(f.engine.state).toBe('backoff');
  });

  it('a reply without serverHlc is a server error and a retry', () => {
    const f = fixture();
    f.engine.start(0);
    expect(f.engine.responded(1, { hello: 1 }, 10)).toEqual([
      { kind: 'deliver', message: { type: 'ERROR', payload: { code: 502, message: 'POST /sync answered 200 without a serverHlc: not a TopGun sync reply' } } },
      { kind: 'state', state: 'backoff' },
    ]);
  });
});

describe('HTTP sync: failures, auth, connectivity', () => {
  it('network errors back off exponentially; an answer resets the backoff', () => {
    const f = fixture(); // random 0.5: no jitter
    f.engine.start(0);
    expect(f.engine.failed(1, 10)).toEqual([{ kind: 'state', state: 'backoff' }]);
    expect(f.engine.nextDeadline()).toBe(1010);
    expect(f.engine.tick(1010)).toEqual([{ kind: 'state', state: 'connecting' }, post(2, {})]);
    f.engine.failed(2, 1020);
    expect(f.engine.nextDeadline()).toBe(1020 + 2000);
    f.engine.tick(3020);
    f.engine.responded(3, { serverHlc }, 3030);
    f.engine.tick(8030);
    f.engine.failed(4, 8040);
    expect(f.engine.nextDeadline()).toBe(8040 + 1000);
  });

  it('the token goes with every request; a 401 asks the provider again', () => {
    const f = fixture({ hasToken: true });
    expect(f.engine.start(0)).toEqual([{ kind: 'state', state: 'connecting' }, { kind: 'fetchToken' }]);
    expect(f.engine.tokenReady('t1', 1)).toEqual([post(1, {}, 't1')]);
    expect(f.engine.refused(1, 401, 'Authentication failed: expired', 5)).toEqual([
      { kind: 'authFailed', error: 'Authentication failed: expired' },
      { kind: 'state', state: 'backoff' },
    ]);
    expect(f.engine.tick(1005)).toEqual([{ kind: 'state', state: 'connecting' }, { kind: 'fetchToken' }]);
    expect(f.engine.tokenReady('t2', 1006)).toEqual([post(2, {}, 't2')]);
    f.engine.responded(2, { serverHlc }, 1010);
    expect(f.engine.tick(6010)).toEqual([post(3, {}, 't2')]); // cached, no provider call
  });

  it('stops after maxAuthFailures 401s in a row to a token; resume() asks the provider again', () => {
    const f = fixture({ hasToken: true, maxAuthFailures: 2 });
    f.engine.start(0);
    f.engine.tokenReady('bad', 1);
    f.engine.refused(1, 401, 'invalid signature', 5);
    f.engine.tick(1005);
    f.engine.tokenReady('bad', 1006);
    expect(f.engine.refused(2, 401, 'invalid signature', 1010)).toEqual([
      { kind: 'state', state: 'failed' },
      { kind: 'authStopped', error: 'invalid signature', failures: 2 },
    ]);
    expect(f.engine.nextDeadline()).toBeUndefined();
    f.ops.push(op(1));
    expect(f.engine.opsAdded(1020)).toEqual([]); // nothing is sent while failed
    expect(f.engine.connectivity(false, 1030)).toEqual([]);
    expect(f.engine.connectivity(true, 1040)).toEqual([]);
    expect(f.engine.resume(2000)).toEqual([{ kind: 'state', state: 'connecting' }, { kind: 'fetchToken' }]);
    expect(f.engine.tokenReady('good', 2001)).toEqual([post(3, { operations: [f.ops[0]!.op] }, 'good')]);
  });

  it('a 200 resets the count of 401s', () => {
    const f = fixture({ hasToken: true, maxAuthFailures: 2 });
    f.engine.start(0);
    f.engine.tokenReady('t1', 1);
    f.engine.refused(1, 401, 'expired', 5);
    f.engine.tick(1005);
    f.engine.tokenReady('t2', 1006);
    f.engine.responded(2, { serverHlc }, 1010);
    f.engine.tick(6010);
    expect(f.engine.refused(3, 401, 'expired', 6020)).toEqual([{ kind: 'authFailed', error: 'expired' }, { kind: 'state', state: 'backoff' }]);
  });

  it('a 401 without a token is "authentication required"', () => {
    const f = fixture();
    f.engine.start(0);
    expect(f.engine.refused(1, 401, 'authentication required', 5)).toEqual([{ kind: 'authRequired' }, { kind: 'state', state: 'backoff' }]);
  });

  it('a token is fetched again shortly before its exp', () => {
    const f = fixture({ hasToken: true });
    const jwt = (exp: number) => `x.${btoa(JSON.stringify({ exp })).replace(/=+$/, '')}.y`;
    f.engine.start(0);
    f.engine.tokenReady(jwt(100), 1); // exp 100 s: refresh from 70 s on
    f.engine.responded(1, { serverHlc }, 10);
    expect(f.engine.tick(5010)).toEqual([post(2, {}, jwt(100))]);
    f.engine.responded(2, { serverHlc }, 69_000);
    expect(f.engine.tick(74_000)).toEqual([{ kind: 'fetchToken' }]);
  });

  it('other refusals are reported as server errors and retried', () => {
    const f = fixture();
    f.engine.start(0);
    expect(f.engine.refused(1, 503, 'no partition table yet', 5)).toEqual([
      { kind: 'deliver', message: { type: 'ERROR', payload: { code: 503, message: 'no partition table yet' } } },
      { kind: 'state', state: 'backoff' },
    ]);
  });

  it('going offline abandons the request; coming back sends at once', () => {
    const f = fixture();
    f.engine.start(0);
    expect(f.engine.connectivity(false, 5)).toEqual([{ kind: 'abortRequest', requestId: 1 }, { kind: 'state', state: 'offline' }]);
    expect(f.engine.nextDeadline()).toBeUndefined();
    expect(f.engine.connectivity(true, 10)).toEqual([{ kind: 'state', state: 'connecting' }, post(2, {})]);
  });

  it('stop abandons the request and schedules nothing', () => {
    const f = fixture();
    f.engine.start(0);
    expect(f.engine.stop()).toEqual([{ kind: 'abortRequest', requestId: 1 }, { kind: 'state', state: 'stopped' }]);
    expect(f.engine.nextDeadline()).toBeUndefined();
  });
});
