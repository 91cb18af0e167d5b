import 'fake-indexeddb/auto';
import { describe, expect, it } from 'vitest';
import { TopGunClient } from '../src/client.js';
import { BackpressureError, SqlError } from '../src/errors.js';
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
