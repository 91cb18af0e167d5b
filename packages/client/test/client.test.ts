import 'fake-indexeddb/auto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { TopGunClient } from '../src/client.js';
import { decodeMessage } from '../src/codec.js';
import { AuthFailedError, BackpressureError, NoWebSocketError, SqlError } from '../src/errors.js';
import { SyncState } from '../src/sync/state.js';
import type { WebSocketFactory, WebSocketLike } from '../src/transport.js';
import { waitFor } from './support/wait.js';
import { IndexedDBStorage } from '../src/storage/indexeddb.js';
import { MemoryStorage } from '../src/storage/memory.js';

const local = (storage = new MemoryStorage(), extra = {}) => new TopGunClient({ storage, nodeId: 'n1', watchConnectivity: false, ...extra });
const pendingOps = (c: TopGunClient) => c.getSyncState().pendingOps;

describe('local-only client', () => {
  it('reads its own writes synchronously', async () => {
    const c = local();
    const todos = c.getMap<{ title: string }>('todos');
    todos.set('a', { title: 'A' });
    expect(todos.get('a')).toEqual({ title: 'A' });
    todos.remove('a');
    expect(todos.get('a')).toBeUndefined();
    expect(todos.getRecord('a')?.value).toBeNull(); // a tombstone, not a deletion
    expect(c.getSyncState().state).toBe('stopped'); // before ready
    await c.ready;
    expect(c.getSyncState().state).toBe('disconnected');
    await c.close();
  });

  it('sql() without a server is refused at once', async () => {
    const c = local();
    const err = await c.sql('SELECT 1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SqlError);
    expect(err).toMatchObject({ code: 'NOT_SUPPORTED', message: 'sql() needs a server: this client is local-only' });
    await c.close();
  });

  it('notifies subscribers of local changes', async () => {
    const c = local();
    const seen: string[][] = [];
    c.getMap('m').subscribe((ch) => seen.push(ch.keys));
    c.getMap('m').set('x', 1);
    expect(seen).toEqual([['x']]);
    await c.close();
  });

  it('OR-Map add/remove by value', async () => {
    const c = local();
    const tags = c.getORMap<string>('tags');
    tags.add('post', 'red');
    tags.add('post', 'blue');
    tags.add('post', 'red');
    expect(tags.get('post').sort()).toEqual(['blue', 'red', 'red']);
    expect(tags.remove('post', 'red')).toHaveLength(2);
    expect(tags.get('post')).toEqual(['blue']);
    await c.close();
  });

  it('survives a reload from IndexedDB: records and unsent ops', async () => {
    const name = `reload-${Math.random()}`;
    const a = local(new IndexedDBStorage({ name }) as never);
    await a.ready;
    a.getMap('todos').set('t1', { title: 'offline edit' });
    a.getORMap('tags').add('t1', 'x');
    await a.flush();
    await a.close();
    const b = local(new IndexedDBStorage({ name }) as never);
    await b.ready;
    expect(b.getMap('todos').get('t1')).toEqual({ title: 'offline edit' });
    expect(b.getORMap('tags').get('t1')).toEqual(['x']);
    expect(pendingOps(b)).toBe(2);
    // New ops continue above the stored ones.
    const r = b.getMap('todos').set('t2', 1);
    expect(Number(r.opId)).toBeGreaterThan(0);
    await b.close();
  });

  it('a query answers immediately from local data, and reports deltas', async () => {
    const c = local();
    const todos = c.getMap<{ title: string; done: boolean; n: number }>('todos');
    todos.set('a', { title: 'A', done: false, n: 2 });
    todos.set('b', { title: 'B', done: true, n: 1 });
    todos.set('c', { title: 'C', done: false, n: 3 });
    const q = c.query<{ title: string; done: boolean; n: number }>('todos', { where: { done: false }, sort: { n: 'desc' } });
    expect(q.results.map((r) => r.key)).toEqual(['c', 'a']);
    const deltas: unknown[] = [];
    q.onDelta((d) => deltas.push(...d));
    todos.set('b', { title: 'B', done: false, n: 9 });
    todos.remove('c');
    q.recompute();
    expect(q.results.map((r) => r.key)).toEqual(['b', 'a']);
    expect(deltas).toEqual([
      { type: 'ENTER', key: 'b', value: { title: 'B', done: false, n: 9 } },
      { type: 'LEAVE', key: 'c', value: undefined },
    ]);
    q.close();
    await c.close();
  });
});

describe('backpressure', () => {
  it('throw: refuses the write and changes nothing', async () => {
    const c = local(new MemoryStorage(), { backpressure: { maxPendingOps: 2, strategy: 'throw' } });
    const m = c.getMap('m');
    m.set('a', 1);
    m.set('b', 2);
    expect(() => m.set('c', 3)).toThrow(BackpressureError);
    expect(m.get('c')).toBeUndefined();
    expect(pendingOps(c)).toBe(2);
    await c.close();
  });

  it('drop-oldest: keeps the newest ops, reports the dropped ones, removes them from storage', async () => {
    const storage = new MemoryStorage();
    const c = local(storage, { backpressure: { maxPendingOps: 2, strategy: 'drop-oldest' } });
    await c.ready;
    const dropped: string[] = [];
    c.on('opsDropped', (d) => dropped.push(...d.opIds));
    const m = c.getMap('m');
    const first = m.set('a', 1);
    m.set('b', 2);
    const third = m.set('c', 3);
    expect(m.get('a')).toBe(1); // the value stays local
    expect(dropped).toEqual([first.opId]);
    await c.flush();
    const ops = (await storage.load()).ops.map((o) => o.op.key);
    expect(ops).toEqual(['b', 'c']);
    expect(pendingOps(c)).toBe(2);
    await expect(first.acked()).resolves.toBeDefined(); // no longer pending
    expect(third.opId).not.toBe(first.opId);
    await c.close();
  });

  it('pause: accepts writes, reports paused, waitForCapacity waits; hard limit at 2×', async () => {
    const c = local(new MemoryStorage(), { backpressure: { maxPendingOps: 2, strategy: 'pause' } });
    const m = c.getMap('m');
    m.set('a', 1);
    expect(c.getSyncState().paused).toBe(false);
    m.set('b', 2);
    expect(c.getSyncState().paused).toBe(true);
    let resolved = false;
    void c.waitForCapacity().then(() => (resolved = true));
    m.set('c', 3);
    m.set('d', 4);
    expect(() => m.set('e', 5)).toThrow(BackpressureError);
    await Promise.resolve();
    expect(resolved).toBe(false);
    await c.close();
  });
});

describe('where no WebSocket implementation exists', () => {
  afterEach(() => vi.unstubAllGlobals());
  const serverUrl = 'ws://127.0.0.1:9/ws';

  it('a WebSocket client with a serverUrl throws NoWebSocketError, saying how to fix it', () => {
    vi.stubGlobal('WebSocket', undefined);
    for (const transport of [undefined, 'websocket'] as const) {
      const err = (() => {
        try {
          local(new MemoryStorage(), { serverUrl, transport });
        } catch (e) {
          return e;
        }
      })();
      expect(err).toBeInstanceOf(NoWebSocketError);
      expect(err).toMatchObject({ name: 'NoWebSocketError', code: 'NO_WEBSOCKET', serverUrl });
      expect((err as Error).message).toMatch(/Pass one in the options .*'ws'.*transport: 'http'/);
    }
  });

  it("local-only, 'http' and 'auto' clients are built as before ('auto' uses HTTP)", async () => {
    vi.stubGlobal('WebSocket', undefined);
    const fetch = () => new Promise<never>(() => undefined); // never answers
    const c1 = local();
    const c2 = local(new MemoryStorage(), { serverUrl, transport: 'http', fetch });
    const c3 = local(new MemoryStorage(), { serverUrl, transport: 'auto', fetch });
    expect(c3.getTransport()).toBe('http');
    await Promise.all([c1, c2, c3].map((c) => c.close()));
  });

  it('an implementation in the options is enough', async () => {
    vi.stubGlobal('WebSocket', undefined);
    const c = local(new MemoryStorage(), { serverUrl, WebSocket: authServer(() => false).Socket });
    expect(c.getTransport()).toBe('websocket');
    await c.close();
  });
});

/**
 * A fake WebSocket whose "server" requires a token: AUTH_ACK for tokens `accept` likes, else
 * AUTH_FAIL and a close, as topgun-server does. Keeps the AUTH tokens and frame types it got.
 */
function authServer(accept: (token: string) => boolean): { Socket: WebSocketFactory; auths: string[]; received: string[] } {
  const auths: string[] = [];
  const received: string[] = [];
  class FakeSocket implements WebSocketLike {
    binaryType = 'arraybuffer';
    readyState = 0;
    onopen: WebSocketLike['onopen'] = null;
    onclose: WebSocketLike['onclose'] = null;
    onerror: WebSocketLike['onerror'] = null;
    onmessage: WebSocketLike['onmessage'] = null;
    constructor(readonly url: string) {
      setTimeout(() => {
        this.readyState = 1;
        this.onopen?.({});
      }, 0);
    }
    send(data: Uint8Array): void {
      const msg = decodeMessage(data) as { type: string; token?: string };
      received.push(msg.type);
      if (msg.type !== 'AUTH') return;
      auths.push(msg.token!);
      const ok = accept(msg.token!);
      const reply = ok ? { type: 'AUTH_ACK', userId: msg.token } : { type: 'AUTH_FAIL', error: 'invalid token' };
      setTimeout(() => {
        this.onmessage?.({ data: JSON.stringify(reply) });
        if (!ok) this.close(1008, 'authentication failed');
      }, 0);
    }
    close(code = 1000, reason = ''): void {
      if (this.readyState === 3) return;
      this.readyState = 3;
      setTimeout(() => this.onclose?.({ code, reason }), 0);
    }
  }
  return { Socket: FakeSocket, auths, received };
}

describe('repeated authentication failures', () => {
  const remote = (extra: Record<string, unknown>) =>
    local(new MemoryStorage(), { serverUrl: 'ws://fake/ws', backoff: { initialMs: 1, maxMs: 2 }, ...extra });

  it('stops after maxAuthFailures, reports once (error event, onAuthRequired) and says ERROR', async () => {
    const server = authServer((t) => t === 'good');
    const asked: { error?: string; stopped?: boolean }[] = [];
    const c = remote({ WebSocket: server.Socket, auth: { token: 'bad' }, maxAuthFailures: 3, onAuthRequired: (r: { error?: string; stopped?: boolean }) => void asked.push(r) });
    const stops: AuthFailedError[] = [];
    c.on('error', (e) => e instanceof AuthFailedError && stops.push(e));
    await waitFor('failed', () => c.getConnectionState() === SyncState.ERROR);
    await new Promise((r) => setTimeout(r, 50)); // it stays stopped: no further attempts
    expect(server.auths).toEqual(['bad', 'bad', 'bad']);
    expect(c.getSyncState().state).toBe('failed');
    expect(stops).toHaveLength(1);
    expect(stops[0]).toMatchObject({ code: 'AUTH_FAILED', failures: 3, reason: 'invalid token' });
    expect(asked).toEqual([{ error: 'invalid token' }, { error: 'invalid token' }, { error: 'invalid token', stopped: true }]);
    expect(c.getStateHistory().at(-1)?.to).toBe(SyncState.ERROR);
    // Local writes go on while stopped; a new token brings it back and they are sent.
    c.getMap('m').set('k', 1);
    expect(server.received).not.toContain('OP_BATCH');
    c.setAuthToken('good');
    await waitFor('authenticated', () => c.getSyncState().userId === 'good');
    expect(c.getConnectionState()).toBe(SyncState.SYNCING); // the fake answers no SYNC_INIT
    expect(c.getSyncState().lastError).toBeUndefined();
    await waitFor('ops sent', () => server.received.includes('OP_BATCH'));
    await c.close();
  });

  it('start() tries again (the count starts over); a token from onAuthRequired does too', async () => {
    let good = false;
    const server = authServer(() => good);
    const c = remote({ WebSocket: server.Socket, auth: { tokenProvider: () => 'tok' }, maxAuthFailures: 1 });
    await waitFor('failed', () => c.getConnectionState() === SyncState.ERROR);
    expect(server.auths).toHaveLength(1);
    await c.start();
    await waitFor('failed again', () => server.auths.length === 2 && c.getConnectionState() === SyncState.ERROR);
    good = true;
    await c.start();
    await waitFor('connected', () => c.getConnectionState() === SyncState.CONNECTED);
    await c.close();

    const d = remote({ WebSocket: authServer((t) => t === 'fresh').Socket, auth: { token: 'stale' }, maxAuthFailures: 1, onAuthRequired: () => 'fresh' });
    await waitFor('connected with the token onAuthRequired returned', () => d.getConnectionState() === SyncState.CONNECTED);
    await d.close();
  });
});
