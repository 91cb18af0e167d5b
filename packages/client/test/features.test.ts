import { describe, expect, it } from 'vitest';
import { LockManager, type LockBackend } from '../src/features/lock.js';
import { QueryHandle, type QuerySource } from '../src/features/query.js';
import { InvalidArgumentError } from '../src/errors.js';
import { Persister } from '../src/storage/persister.js';
import { MemoryStorage } from '../src/storage/memory.js';
import type { Commit } from '../src/storage/types.js';

/** A lock backend with a manual clock: timers fire only when the test says so. */
function lockFixture(ready = true) {
  const sent: unknown[] = [];
  const timers = new Map<number, () => void>();
  let id = 0;
  let req = 0;
  const backend: LockBackend = {
    isReady: () => ready,
    send: (m) => sent.push(m),
    newRequestId: () => `r${++req}`,
    setTimer: (fn) => {
      timers.set(++id, fn);
      return id;
    },
    clearTimer: (h) => timers.delete(h as number),
  };
  const fire = () => {
    for (const [k, fn] of [...timers]) {
      timers.delete(k);
      fn();
    }
  };
  return { manager: new LockManager(backend), sent, timers, fire, setReady: (r: boolean) => (ready = r) };
}

describe('LockManager', () => {
  it('grant → token; release → LOCK_RELEASE with that token', async () => {
    const f = lockFixture();
    const p = f.manager.acquire('doc', 1000);
    expect(f.sent).toEqual([{ type: 'LOCK_REQUEST', payload: { requestId: 'r1', name: 'doc', ttl: 1000 } }]);
    f.manager.message({ type: 'LOCK_GRANTED', payload: { requestId: 'r1', name: 'doc', fencingToken: 7 } });
    expect(await p).toBe(7);
    expect(f.manager.isHeld('doc')).toBe(true);
    const r = f.manager.release('doc');
    expect(f.sent[1]).toEqual({ type: 'LOCK_RELEASE', payload: { requestId: 'r2', name: 'doc', fencingToken: 7 } });
    f.manager.message({ type: 'LOCK_RELEASED', payload: { requestId: 'r2', name: 'doc', success: true } });
    expect(await r).toBe(true);
    expect(f.manager.isHeld('doc')).toBe(false);
  });

  it('times out to false; a late grant is handed straight back', async () => {
    const f = lockFixture();
    const p = f.manager.acquire('doc', 100);
    f.fire(); // max(ttl + 5 s, 5 s) elapsed
    expect(await p).toBe(false);
    f.manager.message({ type: 'LOCK_GRANTED', payload: { requestId: 'r1', name: 'doc', fencingToken: 9 } });
    expect(f.manager.isHeld('doc')).toBe(false);
    expect(f.sent[1]).toEqual({ type: 'LOCK_RELEASE', payload: { requestId: 'r1', name: 'doc', fencingToken: 9 } });
  });

  it('LOCK_RELEASED in answer to an acquire is a refusal, never a grant (PROTOCOL §9.6)', async () => {
    const f = lockFixture();
    const p = f.manager.acquire('doc', 100);
    f.manager.message({ type: 'LOCK_RELEASED', payload: { requestId: 'r1', name: 'doc', success: false } });
    expect(await p).toBe(false);
    expect(f.manager.isHeld('doc')).toBe(false);
  });

  it('waits for the connection; a disconnect loses held locks and fails sent requests', async () => {
    const f = lockFixture(false);
    const p = f.manager.acquire('a', 100);
    expect(f.sent).toEqual([]);
    f.setReady(true);
    f.manager.ready();
    expect(f.sent).toHaveLength(1);
    f.manager.message({ type: 'LOCK_GRANTED', payload: { requestId: 'r1', name: 'a', fencingToken: 1 } });
    await p;
    const q = f.manager.acquire('b', 100);
    f.manager.disconnected();
    expect(await q).toBe(false);
    expect(f.manager.isHeld('a')).toBe(false);
  });

  it('bad names are refused before anything is sent', () => {
    const f = lockFixture();
    expect(() => f.manager.acquire('has space', 100)).toThrow(InvalidArgumentError);
    expect(() => f.manager.acquire('', 100)).toThrow(InvalidArgumentError);
    expect(() => f.manager.acquire('x'.repeat(257), 100)).toThrow(InvalidArgumentError);
    expect(() => f.manager.acquire('ok', 0)).toThrow(RangeError);
    expect(f.sent).toEqual([]);
  });
});

describe('QueryHandle', () => {
  type V = { n: number; tag?: string };
  function source(local: Record<string, V | null>): QuerySource<V> {
    return {
      localRecord: (k) => (k in local ? { value: local[k]! } : undefined),
      localEntries: () => Object.entries(local).filter(([, v]) => v !== null) as [string, V][],
    };
  }

  it('merges server rows for keys the replica lacks; the replica wins for keys it holds', () => {
    const local: Record<string, V | null> = { a: { n: 1 }, gone: null };
    const q = new QueryHandle<V>('q', 'm', { sort: { n: 'asc' } }, source(local), () => undefined);
    expect(q.results.map((r) => r.key)).toEqual(['a']);
    q.serverResponse([
      { key: 'a', value: { n: 100 } }, // stale server view of a key we hold
      { key: 'gone', value: { n: 0 } }, // we removed it locally: stays out
      { key: 'remote', value: { n: 5 } },
    ]);
    q.recompute();
    expect(q.results).toEqual([{ key: 'a', value: { n: 1 } }, { key: 'remote', value: { n: 5 } }]);
    expect(q.isServerConfirmed).toBe(true);
    q.serverUpdate('remote', undefined, 'LEAVE');
    q.recompute();
    expect(q.results.map((r) => r.key)).toEqual(['a']);
  });

  it('applies the filter and the limit to server rows too', () => {
    const q = new QueryHandle<V>('q', 'm', { where: { tag: 'x' }, sort: [{ field: 'n', direction: 'desc' }], limit: 2 }, source({}), () => undefined);
    q.serverResponse([
      { key: 'a', value: { n: 1, tag: 'x' } },
      { key: 'b', value: { n: 3, tag: 'x' } },
      { key: 'c', value: { n: 2, tag: 'x' } },
      { key: 'd', value: { n: 9, tag: 'y' } },
    ]);
    q.recompute();
    expect(q.results.map((r) => r.key)).toEqual(['b', 'c']);
  });

  it('a row displaced from the window is removed, and added again when loadMore widens it', () => {
    // The frames a reader received when another client's offline batch (a, b, c) reached the
    // server: the server applies a batch shard by shard, and a and c's shard came first.
    type T = { rank: number; done: boolean };
    const local: Record<string, T | null> = {};
    const src: QuerySource<T> = {
      localRecord: (k) => (k in local ? { value: local[k]! } : undefined),
      localEntries: () => Object.entries(local).filter(([, v]) => v !== null) as [string, T][],
    };
    const resubscribed: (number | undefined)[] = [];
    const host = { close: () => undefined, resubscribe: (h: { wireQuery: { limit?: number } }) => void resubscribed.push(h.wireQuery.limit), hasServer: () => true };
    const q = new QueryHandle<T>('q', 'm', { where: { done: false }, sort: { rank: 'asc' }, limit: 2 }, src, host);
    const seen: string[][] = [];
    q.onChanges((cs) => seen.push(cs.map((c) => `${c.type} ${c.key}`)));
    const step = (f: () => void): void => {
      f();
      q.recompute();
    };
    step(() => q.serverResponse([]));
    step(() => {
      local.a = { rank: 1, done: false }; // SERVER_BATCH_EVENT [a, c]
      local.c = { rank: 3, done: false };
      q.serverUpdate('a', local.a, 'ENTER');
      q.serverUpdate('c', local.c, 'ENTER');
    });
    step(() => {
      local.b = { rank: 2, done: false }; // SERVER_EVENT b
      q.serverUpdate('b', local.b, 'ENTER');
      q.serverUpdate('c', null, 'LEAVE'); // displaced from the server's window of two
    });
    expect(q.results.map((r) => r.key)).toEqual(['a', 'b']);
    expect(q.getPaginationInfo().hasMore).toBe(true);
    void q.loadMore();
    expect(resubscribed).toEqual([4]);
    step(() => q.serverResponse(['a', 'b', 'c'].map((key) => ({ key, value: local[key] }))));
    step(() => {
      local.a = { rank: 1, done: true };
      q.serverUpdate('a', null, 'LEAVE');
    });
    step(() => {
      local.b = null;
      q.serverUpdate('b', null, 'LEAVE');
    });
    expect(q.results.map((r) => r.key)).toEqual(['c']);
    expect(seen).toEqual([['add a', 'add c'], ['add b', 'remove c'], ['add c'], ['remove a'], ['remove b']]);
  });

  it('close() unregisters once', () => {
    let closed = 0;
    const q = new QueryHandle<V>('q', 'm', {}, source({}), () => closed++);
    q.close();
    q.close();
    expect(closed).toBe(1);
  });
});

describe('Persister', () => {
  it('merges a burst into one commit; a later put cancels a queued delete', async () => {
    const commits: Commit[] = [];
    const storage = new MemoryStorage();
    const orig = storage.commit.bind(storage);
    storage.commit = async (c) => {
      commits.push(structuredClone(c));
      return orig(c);
    };
    const p = new Persister(storage, (e) => {
      throw e;
    });
    const ts = { millis: 1, counter: 0, nodeId: 'n' };
    p.enqueue({ records: [{ kind: 'lww', mapName: 'm', key: 'a', record: { value: 1, timestamp: ts } }] });
    p.enqueue({ deleteRecords: [['lww', 'm', 'b']] });
    p.enqueue({ records: [{ kind: 'lww', mapName: 'm', key: 'b', record: { value: 2, timestamp: ts } }] });
    p.enqueue({ records: [{ kind: 'lww', mapName: 'm', key: 'a', record: { value: 3, timestamp: ts } }] });
    await p.flush();
    expect(commits).toHaveLength(1);
    expect(commits[0]!.records!.map((r) => [r.key, r.kind === 'lww' ? r.record.value : null])).toEqual([['a', 3], ['b', 2]]);
    expect(commits[0]!.deleteRecords).toEqual([]);
    expect((await storage.load()).records).toHaveLength(2);
  });
});
