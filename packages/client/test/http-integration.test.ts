/**
 * HTTP sync (`transport: 'http'`) and `sql()` against the real `topgun-server` binary. Nothing
 * is mocked: HTTP clients use Node's fetch, WebSocket clients the `ws` package.
 */
import { pack, unpack } from 'msgpackr';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TopGunClient, type TopGunClientOptions, type WebSocketFactory } from '../src/client.js';
import { OpRejectedError, SqlError } from '../src/errors.js';
import { MemoryStorage } from '../src/storage/memory.js';
import { JWT_SECRET, signJwt, startServer, type RunningServer } from './support/server.js';
import { waitFor } from './support/wait.js';

let server: RunningServer;
const clients: TopGunClient[] = [];

function client(extra: Partial<TopGunClientOptions> = {}, on: RunningServer = server): TopGunClient {
  const c = new TopGunClient({
    serverUrl: on.url,
    storage: new MemoryStorage(),
    WebSocket: WebSocket as unknown as WebSocketFactory,
    watchConnectivity: false,
    ...extra,
  });
  clients.push(c);
  return c;
}
const httpClient = (extra: Partial<TopGunClientOptions> = {}, on: RunningServer = server) =>
  client({ transport: 'http', pollIntervalMs: 200, ...extra }, on);
const syncUrl = (on: RunningServer = server) => `http://127.0.0.1:${on.port}/sync`;

beforeAll(async () => {
  server = await startServer();
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await server?.stop();
});

describe('HTTP sync against topgun-server', () => {
  it('a POST /sync body written by msgpackr is read by the server, and its reply by msgpackr', async () => {
    const ts = { millis: Date.now(), counter: 0, nodeId: 'raw' };
    const body = {
      clientId: 'raw',
      clientHlc: ts,
      operations: [{ id: '1', mapName: 'raw', key: 'k', opType: 'PUT', record: { value: { n: 1, s: 'x', f: 1.5, a: [true, null] }, timestamp: ts } }],
      syncMaps: [{ mapName: 'raw', lastSyncTimestamp: { millis: 0, counter: 0, nodeId: '' } }],
      queries: [{ queryId: 'q', mapName: 'raw' }],
    };
    const res = await fetch(syncUrl(), { method: 'POST', headers: { 'content-type': 'application/x-msgpack' }, body: new Uint8Array(pack(body)) });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/msgpack');
    const reply = unpack(new Uint8Array(await res.arrayBuffer())) as Record<string, unknown>;
    expect(Number((reply.serverHlc as { millis: number | bigint }).millis)).toBeGreaterThan(0);
    expect(reply.ack).toEqual({ lastId: '1', results: [{ opId: '1', success: true, achievedLevel: expect.any(String) }] });
    expect(reply.queryResults).toEqual([{ queryId: 'q', results: [{ key: 'k', value: { n: 1, s: 'x', f: 1.5, a: [true, null] } }] }]);
    expect(reply.errors).toBeUndefined();
  });

  it('writes through HTTP are acknowledged and readable by a WebSocket client', async () => {
    const h = httpClient();
    const states: string[] = [];
    h.onSyncState((s) => states.push(s.state));
    const hm = h.getMap<{ t: string }>('http-writes');
    const a = hm.set('a', { t: 'over http' });
    const b = hm.set('b', { t: 'to be removed' });
    hm.remove('b');
    await expect(a.acked()).resolves.toMatchObject({ opId: a.opId });
    await b.acked();
    await waitFor('op log drained', () => h.getSyncState().pendingOps === 0);
    expect(h.getSyncState().state).toBe('connected');
    expect(states).not.toContain('authenticating'); // no WebSocket handshake happened
    const w = client();
    const wm = w.getMap<{ t: string }>('http-writes');
    await waitFor('ws client synced', () => wm.get('a')?.t === 'over http' && wm.getRecord('b')?.value === null);
    expect(wm.rootHash).toBe(hm.rootHash);
  });

  it('a one-shot query through HTTP returns the server rows with their keys', async () => {
    const w = client();
    const wm = w.getMap<{ kind: string; n: number }>('http-query');
    wm.set('x1', { kind: 'x', n: 1 });
    wm.set('x2', { kind: 'x', n: 2 });
    wm.set('y1', { kind: 'y', n: 3 });
    await waitFor('ws writes acknowledged', () => w.getSyncState().state === 'connected' && w.getSyncState().pendingOps === 0);
    const h = httpClient();
    const q = h.query<{ kind: string; n: number }>('http-query', { where: { kind: 'x' } });
    await waitFor('server answered', () => q.isServerConfirmed);
    await waitFor('rows', () => q.results.length === 2);
    expect(q.results).toEqual([
      { key: 'x1', value: { kind: 'x', n: 1 } },
      { key: 'x2', value: { kind: 'x', n: 2 } },
    ]);
    // A later write by someone else shows up at a later poll (each poll re-runs the query).
    wm.set('x3', { kind: 'x', n: 4 });
    await waitFor('new row at a later poll', () => q.results.some((r) => r.key === 'x3'));
  });

  it("another client's writes reach an HTTP client through deltas", async () => {
    const h = httpClient();
    const hm = h.getMap<{ t: string }>('http-deltas');
    await waitFor('first poll answered', () => h.getSyncState().state === 'connected');
    const w = client();
    const wm = w.getMap<{ t: string }>('http-deltas');
    wm.set('from-ws', { t: 'hello' });
    await waitFor('ws write acknowledged', () => w.getSyncState().state === 'connected' && w.getSyncState().pendingOps === 0);
    await waitFor('the write arrived in a delta', () => hm.get('from-ws')?.t === 'hello');
    wm.remove('from-ws');
    await waitFor('the removal arrived in a delta', () => hm.getRecord('from-ws')?.value === null);
    expect(hm.rootHash).toBe(wm.rootHash);
  });

  it('a refused op rejects its write with OpRejectedError and leaves the log', async () => {
    const h = httpClient();
    const w = h.getMap('__topgun_secret').set('k', 1);
    const err = await w.acked().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpRejectedError);
    expect(err).toMatchObject({ opId: w.opId, code: 403 });
    await waitFor('op log drained', () => h.getSyncState().pendingOps === 0);
  });
});

describe('sql() against topgun-server', () => {
  it('SQL off (the default): rejects with SqlError FEATURE_DISABLED in under a second', async () => {
    const c = client();
    await waitFor('connected', () => c.getSyncState().state === 'connected');
    const started = Date.now();
    const err = await c.sql('SELECT 1').catch((e: unknown) => e);
    expect(Date.now() - started).toBeLessThan(1000);
    expect(err).toBeInstanceOf(SqlError);
    expect((err as SqlError).code).toBe('FEATURE_DISABLED');
    expect((err as SqlError).message).toMatch(/sql is not available/i);
  });

  it('a query made before the connection is sent once it is up', async () => {
    const c = client();
    const err = await c.sql('SELECT * FROM todos').catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'SqlError', code: 'FEATURE_DISABLED' });
  });
});

describe('HTTP sync against topgun-server with JWT auth', () => {
  let jwtServer: RunningServer;
  const sign = (claims: Record<string, unknown>): string => signJwt(claims);

  beforeAll(async () => {
    jwtServer = await startServer({ JWT_SECRET });
  });
  afterAll(async () => jwtServer?.stop());

  it('without a token: 401, reported as authentication required; the write stays queued', async () => {
    const h = httpClient({ backoff: { initialMs: 60_000 } }, jwtServer);
    const errors: string[] = [];
    h.on('error', (e) => errors.push(e.message));
    h.getMap('m').set('k', 1);
    await waitFor('auth error', () => errors.length > 0);
    expect(errors[0]).toBe('the server requires authentication and no token is configured');
    expect(h.getSyncState()).toMatchObject({ state: 'backoff', pendingOps: 1 });
  });

  it('an expired token is refused; the provider is asked again and the next token works', async () => {
    const now = Math.floor(Date.now() / 1000);
    const tokens = [sign({ sub: 'alice', exp: now - 3600 }), sign({ sub: 'alice', roles: ['user'], exp: now + 3600 })];
    let calls = 0;
    const errors: string[] = [];
    const h = httpClient({ auth: { tokenProvider: () => tokens[Math.min(calls++, 1)] }, backoff: { initialMs: 50, maxMs: 100 } }, jwtServer);
    h.on('error', (e) => errors.push(e.message));
    const w = h.getMap('jwt-http').set('k', 'v');
    await w.acked();
    expect(calls).toBe(2);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/^authentication failed: Authentication failed/);
    // Readable over the WebSocket by another user.
    const reader = client({ auth: { token: sign({ sub: 'bob', roles: ['user'], exp: now + 3600 }) } }, jwtServer);
    const rm = reader.getMap('jwt-http');
    await waitFor('reader synced', () => rm.get('k') === 'v');
  });
});
