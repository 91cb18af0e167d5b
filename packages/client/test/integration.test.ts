/**
 * The client against the real `topgun-server` binary over real WebSockets (the `ws` package).
 * Nothing is mocked: each test drives two or more clients and checks what the other sees.
 */
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TopGunClient, type TopGunClientOptions, type WebSocketFactory } from '../src/client.js';
import { AuthFailedError } from '../src/errors.js';
import { SyncState } from '../src/sync/state.js';
import { MemoryStorage } from '../src/storage/memory.js';
import { JWT_SECRET, signJwt, startServer, type RunningServer } from './support/server.js';
import { waitFor } from './support/wait.js';

let server: RunningServer;
const clients: TopGunClient[] = [];

function client(extra: Partial<TopGunClientOptions> = {}): TopGunClient {
  const c = new TopGunClient({
    serverUrl: server.url,
    storage: new MemoryStorage(),
    WebSocket: WebSocket as unknown as WebSocketFactory,
    watchConnectivity: false,
    ...extra,
  });
  clients.push(c);
  return c;
}

const connected = (c: TopGunClient) => waitFor('connected', () => c.getSyncState().state === 'connected');
const drained = (c: TopGunClient) => waitFor('op log drained', () => c.getSyncState().pendingOps === 0);

beforeAll(async () => {
  server = await startServer();
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await server?.stop();
});

describe('against topgun-server', () => {
  it('a write on one client reaches another live, removes too', async () => {
    const a = client();
    const b = client();
    const am = a.getMap<{ t: string }>('live');
    const bm = b.getMap<{ t: string }>('live');
    await Promise.all([connected(a), connected(b)]);
    am.set('k1', { t: 'from a' });
    await waitFor('b sees k1', () => bm.get('k1')?.t === 'from a');
    am.remove('k1');
    await waitFor('b sees the remove', () => bm.get('k1') === undefined && bm.getRecord('k1')?.value === null);
    expect(bm.rootHash).toBe(am.rootHash);
    await drained(a);
    // And the server reports that same root to a new client.
    const c = client();
    const roots: number[] = [];
    c.on('message', (m) => {
      const p = m.payload as { mapName?: string; rootHash?: number };
      if (m.type === 'SYNC_RESP_ROOT' && p.mapName === 'live') roots.push(p.rootHash!);
    });
    c.getMap('live');
    await connected(c);
    expect(roots).toEqual([am.rootHash]);
  });

  it('Merkle sync fills an empty client; an unchanged map then syncs in one round trip', async () => {
    const a = client();
    const am = a.getMap<number>('bulk');
    for (let i = 0; i < 300; i++) am.set(`key-${i}`, i);
    am.remove('key-7');
    await connected(a);
    await drained(a);
    const storage = new MemoryStorage();
    const c = client({ storage });
    const cTypes: string[] = [];
    c.on('message', (m) => cTypes.push(m.type));
    const cm = c.getMap<number>('bulk');
    await connected(c);
    expect(cTypes).toContain('SYNC_RESP_LEAF'); // the empty client really walked the tree
    expect(cm.size).toBe(299);
    expect(cm.get('key-299')).toBe(299);
    expect(cm.getRecord('key-7')?.value).toBeNull();
    expect(cm.rootHash).toBe(am.rootHash);
    await c.flush();
    await c.close();
    // Same storage, new session: the roots are equal, so no bucket walk happens.
    const c2 = client({ storage });
    const types: string[] = [];
    c2.on('message', (m) => types.push(m.type));
    c2.getMap('bulk');
    const walked: string[] = [];
    c2.on('mapSynced', (s) => walked.push(s.mapName));
    await connected(c2);
    await waitFor('bulk synced', () => walked.includes('bulk'));
    expect(c2.getMap('bulk').size).toBe(299);
    expect(types).toContain('SYNC_RESP_ROOT');
    expect(types.filter((t) => t === 'SYNC_RESP_BUCKETS' || t === 'SYNC_RESP_LEAF')).toEqual([]);
  });

  it('offline edits on both sides converge after reconnecting', async () => {
    const a = client();
    const b = client();
    const am = a.getMap<string>('conv');
    const bm = b.getMap<string>('conv');
    await Promise.all([connected(a), connected(b)]);
    a.setOnline(false);
    expect(a.getSyncState().state).toBe('offline');
    am.set('x', 'a-offline');
    am.set('only-a', 'a');
    bm.set('only-b', 'b');
    await drained(b);
    bm.set('x', 'b-later'); // stamped after a's edit: newer wins everywhere
    await drained(b);
    a.setOnline(true);
    await connected(a);
    await drained(a);
    await waitFor('converged', () => am.get('only-b') === 'b' && bm.get('only-a') === 'a' && am.get('x') === bm.get('x'));
    expect(am.get('x')).toBe('b-later');
    expect(am.rootHash).toBe(bm.rootHash);
  });

  it('OR-Map adds and removes reach the other client', async () => {
    const a = client();
    const b = client();
    const ao = a.getORMap<unknown>('tags');
    const bo = b.getORMap<unknown>('tags');
    await Promise.all([connected(a), connected(b)]);
    ao.add('post', 'red');
    ao.add('post', 'blue');
    await waitFor('b sees two tags', () => bo.get('post').length === 2);
    ao.remove('post', 'red');
    ao.add('post', { nested: { b: 1, a: [1, 'x'] }, ttl: null });
    await waitFor('b sees the remove and the object', () => bo.get('post').length === 2 && !bo.get('post').includes('red'));
    expect(bo.rootHash).toBe(ao.rootHash);
    await drained(a);
    // The server's own OR root equals the one this client computes for the same data.
    const c = client();
    const roots: number[] = [];
    c.on('message', (m) => {
      const p = m.payload as { mapName?: string; rootHash?: number };
      if (m.type === 'ORMAP_SYNC_RESP_ROOT' && p.mapName === 'tags') roots.push(p.rootHash!);
    });
    const co = c.getORMap('tags');
    await connected(c);
    expect(roots).toEqual([ao.rootHash]);
    expect(co.rootHash).toBe(ao.rootHash);
  });

  it('a live query: local answer, server confirmation, then other clients writes', async () => {
    const a = client();
    const b = client();
    const am = a.getMap<{ done: boolean; n: number }>('qtodos');
    am.set('t1', { done: false, n: 1 });
    am.set('t2', { done: true, n: 2 });
    await connected(a);
    await drained(a);
    await connected(b);
    const q = b.query<{ done: boolean; n: number }>('qtodos', { predicate: { op: 'eq', attribute: 'done', value: false }, sort: { n: 'asc' } });
    await waitFor('server confirmed', () => q.isServerConfirmed);
    expect(q.results.map((r) => r.key)).toEqual(['t1']);
    am.set('t3', { done: false, n: 0 });
    await waitFor('t3 entered', () => q.results.map((r) => r.key).join() === 't3,t1');
    am.set('t1', { done: true, n: 1 });
    await waitFor('t1 left', () => q.results.map((r) => r.key).join() === 't3');
    // After a reconnect the query is subscribed again and keeps following other clients.
    const subs: string[] = [];
    b.on('message', (m) => subs.push(m.type));
    b.setOnline(false);
    b.setOnline(true);
    await connected(b);
    await waitFor('re-subscribed', () => subs.includes('QUERY_RESP'));
    am.set('t4', { done: false, n: 5 });
    await waitFor('t4 entered after reconnect', () => q.results.map((r) => r.key).join() === 't3,t4');
  });

  it('ops written before a restart are sent by the next session', async () => {
    const storage = new MemoryStorage();
    const a = client({ storage });
    await a.ready;
    a.setOnline(false);
    a.getMap('restart').set('k', 'written offline');
    await a.flush();
    await a.close();
    const a2 = client({ storage });
    await connected(a2);
    await drained(a2);
    const b = client();
    const bm = b.getMap('restart');
    await waitFor('b got the op of the earlier session', () => bm.get('k') === 'written offline');
  });

  it('topics: subscribers receive, the publisher does not', async () => {
    const a = client();
    const b = client();
    const got: unknown[] = [];
    const own: unknown[] = [];
    a.topic('chat.room-1').onMessage((m) => got.push(m.data));
    b.topic('chat.room-1').onMessage((m) => own.push(m.data));
    await Promise.all([connected(a), connected(b)]);
    await new Promise((r) => setTimeout(r, 100)); // let TOPIC_SUB reach the server
    b.topic('chat.room-1').publish({ text: 'hi' });
    await waitFor('a got the message', () => got.length === 1);
    expect(got).toEqual([{ text: 'hi' }]);
    expect(own).toEqual([]);
  });

  it('locks: a held lock queues the other client until released; tokens increase', async () => {
    const a = client();
    const b = client();
    await Promise.all([connected(a), connected(b)]);
    const la = a.getLock('orders/checkout');
    const lb = b.getLock('orders/checkout');
    const t1 = await la.acquire(10_000);
    expect(typeof t1).toBe('number');
    expect(la.isLocked()).toBe(true);
    const waiting = lb.acquire(10_000);
    await new Promise((r) => setTimeout(r, 300));
    expect(lb.isLocked()).toBe(false);
    expect(await la.unlock()).toBe(true);
    const t2 = await waiting;
    expect(typeof t2).toBe('number');
    expect(t2 as number).toBeGreaterThan(t1 as number);
    expect(lb.isLocked()).toBe(true);
  });

  it('locks: a request for a busy lock returns false after max(ttl + 5 s, 5 s)', async () => {
    const a = client();
    const b = client();
    await Promise.all([connected(a), connected(b)]);
    expect(typeof (await a.getLock('busy').acquire(20_000))).toBe('number');
    const started = Date.now();
    expect(await b.getLock('busy').lock(100)).toBe(false);
    expect(Date.now() - started).toBeGreaterThanOrEqual(5000);
    expect(b.getLock('busy').isLocked()).toBe(false);
  }, 15_000);

  it('counters converge across clients', async () => {
    const a = client();
    const b = client();
    const ca = a.counter('page-views');
    const cb = b.counter('page-views');
    await Promise.all([connected(a), connected(b)]);
    ca.increment(3);
    cb.increment(2);
    cb.decrement(1);
    await waitFor('both at 4', () => ca.value === 4 && cb.value === 4);
  });

  it('write concern: acked() resolves with the level the server reached', async () => {
    const a = client();
    await connected(a);
    const w = a.getMap('wc').set('k', 1, { writeConcern: 'PERSISTED', timeoutMs: 5000 });
    const ack = await w.acked();
    expect(ack.opId).toBe(w.opId);
    expect(ack.achievedLevel).toBe('PERSISTED');
  });

  it('refused ops reject their ack promise (reserved map name)', async () => {
    const a = client();
    await connected(a);
    const w = a.getMap('__topgun_secret').set('k', 1);
    await expect(w.acked()).rejects.toMatchObject({ name: 'OpRejectedError', code: 403 });
    await drained(a); // covered by the ack, so it is not resent forever
  });
});

describe('against topgun-server with JWT auth', () => {
  let jwtServer: RunningServer;
  const sign = (claims: Record<string, unknown>): string => signJwt(claims);

  beforeAll(async () => {
    jwtServer = await startServer({ JWT_SECRET });
  });
  afterAll(async () => jwtServer?.stop());

  it('an expired token fails; the provider is asked again and the next token works', async () => {
    const now = Math.floor(Date.now() / 1000);
    const tokens = [sign({ sub: 'alice', exp: now - 3600 }), sign({ sub: 'alice', roles: ['user'], exp: now + 3600 })];
    let calls = 0;
    const errors: string[] = [];
    const c = new TopGunClient({
      serverUrl: jwtServer.url,
      storage: new MemoryStorage(),
      WebSocket: WebSocket as unknown as WebSocketFactory,
      watchConnectivity: false,
      backoff: { initialMs: 50, maxMs: 100 },
      auth: { tokenProvider: () => tokens[Math.min(calls++, 1)] },
    });
    clients.push(c);
    c.on('error', (e) => errors.push(e.message));
    await connected(c);
    expect(calls).toBe(2);
    expect(errors.some((e) => /authentication failed/.test(e))).toBe(true);
    expect(c.getSyncState().userId).toBe('alice');
  });

  it('stops after maxAuthFailures refused tokens, reports once, and a new token brings it back', async () => {
    const now = Math.floor(Date.now() / 1000);
    const forged = signJwt({ sub: 'mallory', exp: now + 3600 }, 'not-the-server-secret-0123456789');
    const c = new TopGunClient({
      serverUrl: jwtServer.url,
      storage: new MemoryStorage(),
      WebSocket: WebSocket as unknown as WebSocketFactory,
      watchConnectivity: false,
      backoff: { initialMs: 20, maxMs: 40 },
      maxAuthFailures: 2,
      auth: { token: forged },
    });
    clients.push(c);
    let refusals = 0;
    c.on('message', (m) => void (m.type === 'AUTH_FAIL' && refusals++));
    const stopped: AuthFailedError[] = [];
    c.on('error', (e) => e instanceof AuthFailedError && stopped.push(e));
    await waitFor('stopped', () => c.getConnectionState() === SyncState.ERROR);
    await new Promise((r) => setTimeout(r, 300)); // many backoff periods: no further attempt
    expect(refusals).toBe(2);
    expect(stopped).toHaveLength(1);
    expect(stopped[0]).toMatchObject({ code: 'AUTH_FAILED', failures: 2 });
    expect(c.getSyncState().state).toBe('failed');
    c.getMap('jwt-stopped').set('k', 'written while stopped');
    c.setAuthToken(sign({ sub: 'alice', roles: ['user'], exp: now + 3600 }));
    await connected(c);
    await drained(c);
    expect(c.getSyncState().userId).toBe('alice');
  });

  it('refreshes the token before it expires without dropping the connection', async () => {
    const now = Math.floor(Date.now() / 1000);
    let calls = 0;
    const c = new TopGunClient({
      serverUrl: jwtServer.url,
      storage: new MemoryStorage(),
      WebSocket: WebSocket as unknown as WebSocketFactory,
      watchConnectivity: false,
      // exp 31 s ahead and a 30 s refresh margin: the first refresh is due after about 1 s.
      auth: { tokenProvider: () => sign({ sub: `bob-${++calls}`, exp: now + 31 }) },
    });
    clients.push(c);
    const states: string[] = [];
    c.onSyncState((s) => states.push(s.state));
    await connected(c);
    await waitFor('refreshed', () => c.getSyncState().userId === 'bob-2', 5000);
    expect(states.filter((s) => s === 'backoff')).toEqual([]);
  });
});

describe('event journal against topgun-server', () => {
  it('reads past writes and streams new ones, resuming after a reconnect without gaps', async () => {
    const a = client();
    const b = client();
    await Promise.all([connected(a), connected(b)]);
    const am = a.getMap<number>('journaled');
    am.set('x', 1);
    am.set('x', 2);
    am.remove('x');
    await drained(a);
    const page = await b.journal.read({ mapName: 'journaled' });
    expect(page.events.map((e) => [e.type, e.key, e.value ?? null, e.previousValue ?? null])).toEqual([
      ['PUT', 'x', 1, null],
      ['UPDATE', 'x', 2, 1],
      ['DELETE', 'x', null, 2],
    ]);
    const seen: string[] = [];
    b.journal.subscribe({ mapName: 'journaled', types: ['PUT'] }, (e) => seen.push(`${e.key}=${String(e.value)}`));
    await new Promise((r) => setTimeout(r, 100));
    am.set('y', 10);
    await waitFor('live event', () => seen.length === 1);
    b.setOnline(false);
    am.set('z', 20); // written while b is away: replayed on resubscription
    await drained(a);
    b.setOnline(true);
    await waitFor('replayed after reconnect', () => seen.length === 2);
    am.set('w', 30);
    await waitFor('live again', () => seen.length === 3);
    expect(seen).toEqual(['y=10', 'z=20', 'w=30']);
  });
});
