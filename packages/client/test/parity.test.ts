/**
 * The TopGun-named API against the real `topgun-server` binary: each test writes the way a
 * TopGun app does and checks what another client (or the same one) sees.
 */
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  MemoryStorage,
  NotSupportedError,
  Predicates,
  SyncState,
  TimeoutError,
  TopGunClient,
  WriteConcern,
  type ChangeEvent,
  type EventJournalEvent,
  type MergeRejection,
  type PaginationInfo,
  type QueryResultItem,
  type TopGunClientOptions,
  type WebSocketFactory,
} from '../src/index.js';
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

const connected = (c: TopGunClient) => waitFor('connected', () => c.getConnectionState() === SyncState.CONNECTED);
const settled = (c: TopGunClient) => c.whenSettled(10_000);

interface Todo {
  title: string;
  done: boolean;
  rank: number;
}

beforeAll(async () => {
  server = await startServer();
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await server?.stop();
});

describe('TopGun client API against topgun-server', () => {
  it('lifecycle: start(), connection-state history, isSettled/whenSettled', async () => {
    const a = client();
    const seen: string[] = [];
    a.onConnectionStateChange((e) => seen.push(`${e.from}>${e.to}`));
    await a.start();
    await connected(a);
    expect(a.getConnectionState()).toBe('CONNECTED');
    const history = a.getStateHistory();
    expect(history.at(-1)).toMatchObject({ to: SyncState.CONNECTED });
    expect(history.map((e) => e.to)).toContain(SyncState.CONNECTING);
    expect(a.getStateHistory(1)).toHaveLength(1);
    a.getMap<string, number>('life').set('k', 1);
    expect(a.isSettled()).toBe(false);
    await settled(a);
    expect(a.isSettled()).toBe(true);
    expect(a.getPendingOpsCount()).toBe(0);
    expect(a.getConnectedNodes()).toEqual([server.url]);
    expect(a.isCluster()).toBe(false);
    expect(seen.at(-1)).toBe('SYNCING>CONNECTED');
  });

  it('getMap<K, V>: set returns the record, acked() confirms at the write concern asked, subscribers get entries, TTL hides', async () => {
    const a = client();
    const b = client();
    await Promise.all([connected(a), connected(b)]);
    const am = a.getMap<string, Todo>('p-todos');
    const bm = b.getMap<string, Todo>('p-todos');
    const changes: number[] = [];
    bm.subscribe((c) => changes.push(c.entries.length));
    let ticks = 0;
    bm.onChange(() => ticks++);
    const rec = am.set('t1', { title: 'one', done: false, rank: 1 }, { writeConcern: WriteConcern.PERSISTED, timeout: 5000 });
    expect(rec.value).toEqual({ title: 'one', done: false, rank: 1 });
    expect(typeof rec.timestamp.millis).toBe('number');
    const ack = await rec.acked();
    expect(ack.achievedLevel).toBe('PERSISTED');
    await waitFor('b has t1', () => bm.get('t1')?.title === 'one');
    expect(changes.at(-1)).toBe(1);
    expect(ticks).toBeGreaterThan(0);
    // TopGun's TTL argument: a number of ms.
    const short = am.set('t2', { title: 'brief', done: false, rank: 2 }, 300);
    expect(short.ttlMs).toBe(300);
    await waitFor('b has t2', () => bm.get('t2') !== undefined);
    await waitFor('t2 expired on b', () => bm.get('t2') === undefined, 3000);
    expect(bm.allKeys()).toEqual(['t1']);
    const gone = am.remove('t1');
    expect(gone.value).toBeNull();
    await waitFor('b lost t1', () => bm.get('t1') === undefined);
  });

  it('getORMap<K, V>: add returns the record, remove returns the tags', async () => {
    const a = client();
    const b = client();
    await Promise.all([connected(a), connected(b)]);
    const ao = a.getORMap<string, string>('p-tags');
    const r = ao.add('post', 'red');
    expect(r.value).toBe('red');
    expect(typeof r.tag).toBe('string');
    ao.add('post', 'blue');
    await waitFor('b sees both', () => b.getORMap<string, string>('p-tags').get('post').length === 2);
    expect(ao.remove('post', 'red')).toEqual([r.tag]);
    await waitFor('b sees blue only', () => b.getORMap<string, string>('p-tags').get('post').join() === 'blue');
  });

  it('query(): T & {_key} rows, onChanges with previous values, Predicates, field selection', async () => {
    const a = client();
    const b = client();
    await Promise.all([connected(a), connected(b)]);
    const am = a.getMap<string, Todo>('p-q');
    am.set('x', { title: 'x', done: false, rank: 3 });
    am.set('y', { title: 'y', done: true, rank: 1 });
    am.set('z', { title: 'z', done: false, rank: 2 });
    await settled(a);
    const q = b.query<Todo>('p-q', { predicate: Predicates.and(Predicates.equal('done', false), Predicates.greaterThan('rank', 1)), sort: { rank: 'asc' } });
    let rows: QueryResultItem<Todo>[] = [];
    q.subscribe((r) => (rows = r));
    const changes: ChangeEvent<Todo>[] = [];
    q.onChanges((c) => changes.push(...c));
    await q.whenSettled(5000);
    await waitFor('rows', () => rows.length === 2);
    expect(q.isSettled()).toBe(true);
    expect(rows).toEqual([
      { _key: 'z', title: 'z', done: false, rank: 2 },
      { _key: 'x', title: 'x', done: false, rank: 3 },
    ]);
    am.set('x', { title: 'x', done: true, rank: 3 }); // leaves
    am.set('z', { title: 'z2', done: false, rank: 2 }); // updates
    await waitFor('x left', () => rows.map((r) => r._key).join() === 'z' && rows[0]!.title === 'z2');
    expect(changes.find((c) => c.type === 'remove')).toMatchObject({ key: 'x', previousValue: { title: 'x' } });
    expect(changes.find((c) => c.type === 'update')).toMatchObject({ key: 'z', value: { title: 'z2' }, previousValue: { title: 'z' } });
    expect(q.consumeChanges().length).toBeGreaterThanOrEqual(4); // 2 adds, 1 remove, 1 update
    expect(q.getPendingChanges()).toEqual([]);

    // Field selection: the server projects its rows, the client projects the local ones.
    const f = b.query<Partial<Todo>>('p-q', { where: { done: true }, fields: ['title'], sort: { title: 'asc' } });
    await f.whenSettled(5000);
    await waitFor('projected rows', () => f.results.length === 2);
    expect(f.results.map((r) => r.value)).toEqual([{ title: 'x' }, { title: 'y' }]);
    q.close();
    f.close();
  });

  it('pagination: hasMore, loadMore widens the window, a cursor page comes from the server', async () => {
    const a = client();
    const b = client();
    await Promise.all([connected(a), connected(b)]);
    const am = a.getMap<string, { n: number }>('p-pages');
    for (let i = 0; i < 7; i++) am.set(`k${i}`, { n: i });
    await settled(a);
    const q = b.query<{ n: number }>('p-pages', { sort: { n: 'asc' }, limit: 3 });
    const infos: PaginationInfo[] = [];
    q.onPaginationChange((p) => infos.push(p));
    await q.whenSettled(5000);
    await waitFor('first page', () => q.results.length === 3);
    expect(q.getPaginationInfo().hasMore).toBe(true);
    const cursor = q.getPaginationInfo().nextCursor;
    expect(typeof cursor).toBe('string');
    await q.loadMore();
    await waitFor('second page', () => q.results.length === 6);
    expect(q.results.map((r) => r.value.n)).toEqual([0, 1, 2, 3, 4, 5]);
    await q.loadMore();
    await waitFor('all', () => q.results.length === 7);
    await waitFor('no more', () => q.getPaginationInfo().hasMore === false);
    expect(infos.length).toBeGreaterThan(0);

    // The cursor of the first page, as TopGun apps pass it: the server's next page.
    const page2 = b.query<{ n: number }>('p-pages', { sort: { n: 'asc' }, limit: 3, cursor });
    await page2.whenSettled(5000);
    await waitFor('page 2', () => page2.results.length === 3);
    expect(page2.results.map((r) => r.value.n)).toEqual([3, 4, 5]);
    expect(page2.getPaginationInfo().cursorStatus).toBe('valid');
    q.close();
    page2.close();
  });

  it('queryOnce: the server-confirmed rows, then the query ends', async () => {
    const a = client();
    const b = client();
    await Promise.all([connected(a), connected(b)]);
    a.getMap<string, Todo>('p-once').set('only', { title: 'o', done: false, rank: 1 });
    await settled(a);
    const rows = await b.queryOnce<Todo>('p-once', { where: { done: false } });
    expect(rows).toEqual([{ _key: 'only', title: 'o', done: false, rank: 1 }]);
    // A local-only client answers from its replica at once.
    const local = new TopGunClient({ storage: new MemoryStorage(), watchConnectivity: false });
    clients.push(local);
    local.getMap<string, number>('m').set('k', 5);
    expect(await local.queryOnce<number>('m')).toEqual([{ _key: 'k', value: 5 }]);
  });

  it('getPNCounter: get, increment, addAndGet, subscribe, converging across clients', async () => {
    const a = client();
    const b = client();
    await Promise.all([connected(a), connected(b)]);
    const ca = a.getPNCounter('p-views');
    const cb = b.getPNCounter('p-views');
    const values: number[] = [];
    cb.subscribe((v) => values.push(v));
    expect(ca.increment()).toBe(1);
    expect(ca.addAndGet(4)).toBe(5);
    expect(ca.decrement()).toBe(4);
    await waitFor('b converged', () => cb.get() === 4);
    expect(values.at(-1)).toBe(4);
  });

  it('getLock: lock() resolves true with the fencing token beside it; a busy lock waits', async () => {
    const a = client();
    const b = client();
    await Promise.all([connected(a), connected(b)]);
    const la = a.getLock('p-lock');
    const lb = b.getLock('p-lock');
    expect(await la.lock(10_000)).toBe(true);
    expect(la.isLocked()).toBe(true);
    const t1 = la.fencingToken!;
    expect(typeof t1).toBe('number');
    const waiting = lb.lock(10_000);
    await new Promise((r) => setTimeout(r, 200));
    expect(lb.isLocked()).toBe(false);
    await la.unlock();
    expect(await waiting).toBe(true);
    expect(lb.fencingToken!).toBeGreaterThan(t1);
  });

  it('topic: subscribe(data, context) hears other clients', async () => {
    const a = client();
    const b = client();
    await Promise.all([connected(a), connected(b)]);
    const got: { data: unknown; publisherId?: string; timestamp: number }[] = [];
    const off = a.topic<{ text: string }>('p-chat').subscribe((data, ctx) => got.push({ data, publisherId: ctx.publisherId, timestamp: ctx.timestamp }));
    await new Promise((r) => setTimeout(r, 100));
    b.topic<{ text: string }>('p-chat').publish({ text: 'hi' });
    await waitFor('a got it', () => got.length === 1);
    expect(got[0]!.data).toEqual({ text: 'hi' });
    expect(typeof got[0]!.timestamp).toBe('number');
    off();
  });

  it('getEventJournal: readFrom, getLatestSequence, readLatest and subscribe with bigint sequences', async () => {
    const a = client();
    const b = client();
    await Promise.all([connected(a), connected(b)]);
    const journal = b.getEventJournal();
    const live: EventJournalEvent[] = [];
    const off = journal.subscribe((e) => live.push(e), { mapName: 'p-journal' });
    await new Promise((r) => setTimeout(r, 100));
    const am = a.getMap<string, number>('p-journal');
    am.set('a', 1);
    am.set('a', 2);
    am.remove('a');
    await settled(a);
    await waitFor('three live events', () => live.length === 3);
    expect(live.map((e) => e.type)).toEqual(['PUT', 'UPDATE', 'DELETE']);
    expect(typeof live[0]!.sequence).toBe('bigint');
    const latest = await journal.getLatestSequence();
    expect(latest).toBe(live[2]!.sequence);
    const read = await journal.readFrom(live[0]!.sequence, 10, 'p-journal');
    expect(read.map((e) => e.sequence)).toEqual(live.map((e) => e.sequence));
    const last = await journal.readLatest(2, 'p-journal');
    expect(last.map((e) => e.type)).toEqual(['UPDATE', 'DELETE']);
    off();
  });

  it('per-record sync state and merge rejections (a write the server refuses)', async () => {
    const a = client();
    await connected(a);
    const rejections: MergeRejection[] = [];
    a.getConflictResolvers().onRejection((r) => rejections.push(r));
    const m = a.getMap<string, number>('p-state');
    m.set('k', 1);
    expect(a.getRecordSyncState('p-state', 'k')).toBe('pending');
    await settled(a);
    expect(a.getRecordSyncState('p-state', 'k')).toBe('synced');
    // Reserved map names are refused by the server (403).
    a.getMap<string, number>('__topgun_secret').set('x', 7);
    await waitFor('rejection', () => rejections.length === 1);
    expect(rejections[0]).toMatchObject({ mapName: '__topgun_secret', key: 'x', attemptedValue: 7, code: 403 });
    expect(a.getRecordSyncState('__topgun_secret', 'x')).toBe('rejected');
    await expect(a.getConflictResolvers().register('m', { name: 'r', code: 'x' })).rejects.toBeInstanceOf(NotSupportedError);
  });

  it('backpressure: status, threshold events and drops', async () => {
    const c = new TopGunClient({ storage: new MemoryStorage(), watchConnectivity: false, backpressure: { maxPendingOps: 10, strategy: 'drop-oldest', highWaterMark: 0.5, lowWaterMark: 0.2 } });
    clients.push(c);
    const events: string[] = [];
    for (const e of ['backpressure:high', 'backpressure:low', 'operation:dropped'] as const) c.onBackpressure(e, () => events.push(e));
    const m = c.getMap<string, number>('bp');
    for (let i = 0; i < 12; i++) m.set(`k${i}`, i);
    expect(events).toEqual(['backpressure:high', 'operation:dropped', 'operation:dropped']);
    expect(c.getBackpressureStatus()).toMatchObject({ pending: 10, max: 10, percentage: 1, isPaused: false, strategy: 'drop-oldest' });
    expect(c.isBackpressurePaused()).toBe(false);
  });

  it('search and entry processors fail with a typed error', async () => {
    const a = client();
    await expect(a.search('docs', 'hello')).rejects.toMatchObject({ name: 'NotSupportedError', code: 'NOT_SUPPORTED' });
    await expect(a.executeOnKey('m', 'k', { name: 'inc', code: 'x' })).rejects.toBeInstanceOf(NotSupportedError);
  });

  it("transport 'auto': falls back to HTTP sync when the WebSocket never opens", async () => {
    const c = client({
      serverUrl: 'ws://127.0.0.1:1/ws', // nothing listens there
      httpUrl: `http://127.0.0.1:${server.port}/sync`,
      transport: 'auto',
      maxWsAttempts: 2,
      backoff: { initialMs: 20, maxMs: 40 },
      pollIntervalMs: 100,
    });
    const switched: string[] = [];
    c.on('transportChange', (e) => switched.push(e.transport));
    c.getMap<string, number>('p-fallback').set('k', 42);
    await waitFor('on http', () => c.getTransport() === 'http');
    expect(switched).toEqual(['http']);
    await waitFor('drained over http', () => c.getPendingOpsCount() === 0 && c.getConnectionState() === SyncState.CONNECTED);
    const b = client();
    await connected(b);
    expect(await b.queryOnce<number>('p-fallback')).toEqual([{ _key: 'k', value: 42 }]);
  });

  it('cluster seeds stand in for serverUrl', async () => {
    const c = new TopGunClient({ cluster: { seeds: [server.url] }, storage: new MemoryStorage(), WebSocket: WebSocket as unknown as WebSocketFactory, watchConnectivity: false });
    clients.push(c);
    await connected(c);
  });

  it('queryOnce with requireServer rejects with TimeoutError when no server answers', async () => {
    const c = client({ serverUrl: 'ws://127.0.0.1:1/ws', backoff: { initialMs: 50, maxMs: 100 } });
    await expect(c.queryOnce('m', {}, { timeoutMs: 200, requireServer: true })).rejects.toBeInstanceOf(TimeoutError);
    expect(await c.queryOnce('m', {}, { timeoutMs: 100 })).toEqual([]);
  });
});

describe('TopGun auth API against topgun-server with JWT', () => {
  let jwtServer: RunningServer;
  beforeAll(async () => {
    jwtServer = await startServer({ JWT_SECRET });
  });
  afterAll(async () => jwtServer?.stop());

  it('onAuthRequired supplies the token when the server asks; setAuthToken switches users', async () => {
    const now = Math.floor(Date.now() / 1000);
    let asked = 0;
    const c = new TopGunClient({
      serverUrl: jwtServer.url,
      storage: new MemoryStorage(),
      WebSocket: WebSocket as unknown as WebSocketFactory,
      watchConnectivity: false,
      onAuthRequired: () => {
        asked++;
        return signJwt({ sub: 'carol', exp: now + 3600 });
      },
    });
    clients.push(c);
    await waitFor('connected', () => c.getConnectionState() === SyncState.CONNECTED);
    expect(asked).toBe(1);
    expect(c.getSyncState().userId).toBe('carol');
    c.setAuthToken(signJwt({ sub: 'dave', exp: now + 3600 }));
    await waitFor('re-authenticated', () => c.getSyncState().userId === 'dave');
    c.setAuthTokenProvider(async () => signJwt({ sub: 'erin', exp: now + 3600 }));
    await waitFor('provider used', () => c.getSyncState().userId === 'erin');
  });
});
