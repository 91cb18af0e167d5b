/**
 * `TopGunClient` with `transport: 'http'` and an injected fetch: the exact requests it makes
 * (COMPAT §2.1) and what it does with answers. The same paths run against the real server in
 * http-integration.test.ts; here the server's answers are chosen to reach every branch.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { TopGunClient, type TopGunClientOptions } from '../src/client.js';
import { decodeMessage, encodeMessage } from '../src/codec.js';
import { OpRejectedError, SqlError } from '../src/errors.js';
import type { FetchLike } from '../src/http-transport.js';
import { httpSyncUrl } from '../src/http-transport.js';
import { MemoryStorage } from '../src/storage/memory.js';
import { waitFor } from './support/wait.js';

interface Call {
  url: string;
  method: string;
  headers: Record<string, string>;
  body: Record<string, unknown>;
}

type Answer = { status: number; body: unknown; contentType?: string };

/** A fetch that records each request and answers with `answer(body)`. */
function fakeFetch(answer: (body: Record<string, unknown>, call: Call) => Answer | Promise<Answer>) {
  const calls: Call[] = [];
  const fetch: FetchLike = async (url, init) => {
    const call = { url, method: init.method, headers: init.headers, body: decodeMessage(init.body) as Record<string, unknown> };
    calls.push(call);
    const a = await answer(call.body, call);
    const bytes = a.status === 200 ? encodeMessage(a.body) : new TextEncoder().encode(JSON.stringify(a.body));
    return {
      status: a.status,
      headers: { get: (n: string) => (n.toLowerCase() === 'content-type' ? (a.contentType ?? (a.status === 200 ? 'application/msgpack' : 'application/json')) : null) },
      arrayBuffer: async () => bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer,
      text: async () => new TextDecoder().decode(bytes),
    };
  };
  return { fetch, calls };
}

const serverHlc = { millis: 1_700_000_000_000, counter: 0, nodeId: 'server' };
/** Accept every op of a request, with a result each. */
const acceptAll = (body: Record<string, unknown>): Answer => {
  const ops = (body.operations ?? []) as { id: string }[];
  const reply: Record<string, unknown> = { serverHlc };
  if (ops.length > 0) reply.ack = { lastId: ops.at(-1)!.id, results: ops.map((o) => ({ opId: o.id, success: true, achievedLevel: 'APPLIED' })) };
  return { status: 200, body: reply };
};

const clients: TopGunClient[] = [];
function client(fetch: FetchLike, extra: Partial<TopGunClientOptions> = {}): TopGunClient {
  const c = new TopGunClient({
    serverUrl: 'ws://127.0.0.1:9/ws',
    transport: 'http',
    fetch,
    storage: new MemoryStorage(),
    nodeId: 'n1',
    watchConnectivity: false,
    pollIntervalMs: 60_000,
    ...extra,
  });
  clients.push(c);
  return c;
}

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
});

describe('HTTP transport of the client', () => {
  it('derives the endpoint from serverUrl', () => {
    expect(httpSyncUrl('ws://127.0.0.1:8080/ws')).toBe('http://127.0.0.1:8080/sync');
    expect(httpSyncUrl('wss://example.test/api/ws')).toBe('https://example.test/api/sync');
    expect(httpSyncUrl('http://example.test')).toBe('http://example.test/sync');
  });

  it('POSTs a MsgPack body shaped as COMPAT §2.1, with the ops, maps and queries', async () => {
    const { fetch, calls } = fakeFetch(acceptAll);
    const c = client(fetch);
    const todos = c.getMap<{ title: string }>('todos');
    c.getORMap('tags'); // not served over HTTP: absent from syncMaps
    const w = todos.set('t1', { title: 'milk' });
    c.query('todos', { where: { title: 'milk' } });
    await c.ready;
    await waitFor('first request', () => calls.length >= 1);
    const first = calls[0]!;
    expect(first.url).toBe('http://127.0.0.1:9/sync');
    expect(first.method).toBe('POST');
    expect(first.headers['content-type']).toBe('application/x-msgpack');
    expect(first.headers.authorization).toBeUndefined();
    expect(Object.keys(first.body).sort()).toEqual(['clientHlc', 'clientId', 'operations', 'queries', 'syncMaps']);
    expect(first.body.clientId).toBe('n1');
    expect(first.body.clientHlc).toMatchObject({ nodeId: 'n1', counter: expect.any(Number), millis: expect.any(Number) });
    expect(first.body.operations).toEqual([{ id: String(w.opId), mapName: 'todos', key: 't1', opType: 'PUT', record: w.record }]);
    expect(first.body.syncMaps).toEqual([{ mapName: 'todos', lastSyncTimestamp: { millis: 0, counter: 0, nodeId: '' } }]);
    expect(first.body.queries).toEqual([{ queryId: expect.stringMatching(/^q-/), mapName: 'todos', filter: { title: 'milk' } }]);
    await expect(w.acked()).resolves.toEqual({ opId: String(w.opId), achievedLevel: 'APPLIED' });
    expect(c.getSyncState()).toMatchObject({ state: 'connected', pendingOps: 0 });
  });

  it('a refused op rejects its write with OpRejectedError; the others are acknowledged', async () => {
    const { fetch } = fakeFetch((body) => {
      const ops = (body.operations ?? []) as { id: string; mapName: string }[];
      if (ops.length === 0) return { status: 200, body: { serverHlc } };
      const bad = ops.find((o) => o.mapName === 'secret')!;
      return {
        status: 200,
        body: {
          serverHlc,
          ack: { lastId: ops.at(-1)!.id, results: ops.map((o) => (o === bad ? { opId: o.id, success: false, achievedLevel: 'FIRE_AND_FORGET', error: 'denied' } : { opId: o.id, success: true, achievedLevel: 'PERSISTED' })) },
          errors: [{ code: 403, message: 'write access denied for map: secret', context: { opId: bad.id, mapName: 'secret' } }],
        },
      };
    });
    const c = client(fetch);
    const rejected: OpRejectedError[] = [];
    c.on('opRejected', (e) => rejected.push(e));
    const ok = c.getMap('open').set('a', 1);
    const bad = c.getMap('secret').set('b', 2);
    const badAck = bad.acked().catch((e: unknown) => e); // asked before the answer comes
    await expect(ok.acked()).resolves.toMatchObject({ achievedLevel: 'PERSISTED' });
    const err = await badAck;
    expect(err).toBeInstanceOf(OpRejectedError);
    expect(err).toMatchObject({ opId: String(bad.opId), code: 403, reason: 'write access denied for map: secret' });
    expect(rejected).toHaveLength(1);
    await waitFor('log drained', () => c.getSyncState().pendingOps === 0);
  });

  it('query rows from the server reach the query handle with their keys', async () => {
    const { fetch } = fakeFetch((body) => {
      const qs = (body.queries ?? []) as { queryId: string }[];
      return { status: 200, body: { serverHlc, queryResults: qs.map((q) => ({ queryId: q.queryId, results: [{ key: 'remote', value: { n: 1 } }] })) } };
    });
    const c = client(fetch);
    const h = c.query<{ n: number }>('items');
    await waitFor('server rows', () => h.isServerConfirmed);
    await waitFor('rows', () => h.results.length === 1);
    expect(h.results).toEqual([{ key: 'remote', value: { n: 1 } }]);
  });

  it('deltas merge into the replica and the next request starts at serverSyncTimestamp', async () => {
    const since = { millis: 1_700_000_000_500, counter: 0, nodeId: 'server' };
    let n = 0;
    const { fetch, calls } = fakeFetch(() => {
      n += 1;
      if (n > 1) return { status: 200, body: { serverHlc } };
      return {
        status: 200,
        body: {
          serverHlc,
          deltas: [
            {
              mapName: 'todos',
              records: [
                { key: 'a', record: { value: 'from server', timestamp: { millis: 1_700_000_000_100, counter: 0, nodeId: 'other' } }, eventType: 'PUT' },
                { key: 'gone', record: { value: null, timestamp: { millis: 1_700_000_000_200, counter: 0, nodeId: 'other' } }, eventType: 'REMOVE' },
              ],
              serverSyncTimestamp: since,
            },
          ],
        },
      };
    });
    const c = client(fetch, { pollIntervalMs: 50 });
    const todos = c.getMap<string>('todos');
    const synced: string[] = [];
    c.on('mapSynced', (s) => synced.push(s.mapName));
    await waitFor('delta merged', () => todos.get('a') === 'from server');
    expect(todos.getRecord('gone')?.value).toBeNull();
    expect(synced).toEqual(['todos']);
    await waitFor('second request', () => calls.length >= 2);
    expect(calls[1]!.body.syncMaps).toEqual([{ mapName: 'todos', lastSyncTimestamp: since }]);
    // The HLC moved past the server's clock.
    expect(c.hlc.now().millis).toBeGreaterThanOrEqual(since.millis);
  });

  it('a 401 without a token reports "authentication required" and keeps the ops', async () => {
    const { fetch, calls } = fakeFetch(() => ({ status: 401, body: { code: 401, message: 'authentication required' } }));
    const c = client(fetch, { backoff: { initialMs: 60_000 } });
    const errors: string[] = [];
    c.on('error', (e) => errors.push(e.message));
    c.getMap('m').set('k', 1);
    await waitFor('error', () => errors.length > 0);
    expect(errors).toEqual(['the server requires authentication and no token is configured']);
    expect(c.getSyncState()).toMatchObject({ state: 'backoff', pendingOps: 1, lastError: errors[0] });
    expect(calls).toHaveLength(1);
  });

  it('sends the provider token as Bearer; after a 401 the provider is asked again', async () => {
    const tokens = ['expired', 'good'];
    let asked = 0;
    const { fetch, calls } = fakeFetch((_body, call) =>
      call.headers.authorization === 'Bearer good'
        ? acceptAll(_body)
        : { status: 401, body: { code: 401, message: 'Authentication failed: token expired' } },
    );
    const c = client(fetch, { auth: { tokenProvider: () => tokens[asked++] }, backoff: { initialMs: 10, jitter: 0 } });
    const errors: string[] = [];
    c.on('error', (e) => errors.push(e.message));
    const w = c.getMap('m').set('k', 1);
    await w.acked();
    expect(calls.map((x) => x.headers.authorization)).toEqual(['Bearer expired', 'Bearer good']);
    expect(errors).toEqual(['authentication failed: Authentication failed: token expired']);
    expect(asked).toBe(2);
    expect(c.getSyncState().lastError).toBeUndefined(); // cleared by the accepted request
  });

  it('network errors back off and retry with the same ops', async () => {
    let fail = 2;
    const { fetch, calls } = fakeFetch(async (body) => {
      if (fail-- > 0) throw new TypeError('fetch failed');
      return acceptAll(body);
    });
    const c = client(fetch, { backoff: { initialMs: 10, jitter: 0 } });
    const states: string[] = [];
    c.onSyncState((s) => states.push(s.state));
    const w = c.getMap('m').set('k', 1);
    await w.acked();
    expect(calls).toHaveLength(3);
    expect(calls.map((x) => (x.body.operations as unknown[]).length)).toEqual([1, 1, 1]);
    expect(states).toContain('backoff');
  });

  it('sql() is refused at once over HTTP', async () => {
    const { fetch } = fakeFetch(acceptAll);
    const c = client(fetch);
    const err = await c.sql('SELECT 1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SqlError);
    expect((err as SqlError).code).toBe('NOT_SUPPORTED');
  });
});
