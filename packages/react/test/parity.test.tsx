// @vitest-environment jsdom
/**
 * The TopGun-named hooks with React Testing Library, against the real `topgun-server`: one
 * client renders, another writes (or both render), and the screen must follow.
 */
import { act, cleanup, render, screen, waitFor } from '@testing-library/react';
import { useEffect } from 'react';
import WebSocket from 'ws';
import { afterAll, afterEach, beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import { MemoryStorage, SyncState, TopGunClient, type QueryResultItem, type TopGunMap, type TopicHandle, type WebSocketFactory } from '@topgun-rs/client';
import {
  TopGunProvider,
  useClient,
  useConnectionState,
  useEventJournal,
  useLock,
  useMap,
  useMergeRejections,
  useMutation,
  useORMap,
  usePNCounter,
  useQuery,
  useSyncState,
  useTopic,
  type UseQueryResult,
} from '../src/index.js';
import { startServer, type RunningServer } from '../../client/test/support/server.js';

let server: RunningServer;
const clients: TopGunClient[] = [];

function client(): TopGunClient {
  const c = new TopGunClient({
    serverUrl: server.url,
    storage: new MemoryStorage(),
    WebSocket: WebSocket as unknown as WebSocketFactory,
    watchConnectivity: false,
  });
  clients.push(c);
  return c;
}

const connected = (c: TopGunClient) => waitFor(() => expect(c.getConnectionState()).toBe(SyncState.CONNECTED), { timeout: 10_000 });
const text = (id: string) => screen.getByTestId(id).textContent;

beforeAll(async () => {
  server = await startServer();
});
afterEach(cleanup);
afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await server?.stop();
});

interface Todo {
  title: string;
  done: boolean;
  rank: number;
}

describe('TopGun hooks: signatures', () => {
  it('hold the TopGun shapes', () => {
    expectTypeOf(useMap<string, Todo>).returns.toEqualTypeOf<TopGunMap<Todo, string>>();
    expectTypeOf(useQuery<Todo>).returns.toEqualTypeOf<UseQueryResult<Todo>>();
    expectTypeOf<UseQueryResult<Todo>['data']>().toEqualTypeOf<QueryResultItem<Todo>[]>();
    expectTypeOf<UseQueryResult<Todo>>().toMatchTypeOf<{
      loading: boolean;
      error: Error | null;
      hasMore: boolean;
      nextCursor?: string;
      changes: unknown[];
      clearChanges: () => void;
      loadMore: () => Promise<void>;
    }>();
    expectTypeOf(useMutation<Todo>).returns.toMatchTypeOf<{
      create: (key: string, value: Todo) => void;
      update: (key: string, value: Todo) => void;
      remove: (key: string) => void;
      map: TopGunMap<Todo, string>;
    }>();
    expectTypeOf(useTopic<string>).returns.toEqualTypeOf<TopicHandle<string>>();
    expectTypeOf(usePNCounter).returns.toMatchTypeOf<{ value: number; increment: () => void; decrement: () => void; add: (d: number) => void; loading: boolean }>();
    expectTypeOf(useLock).returns.toMatchTypeOf<{ lock: (ttl?: number) => Promise<boolean>; unlock: () => Promise<unknown>; isLocked: boolean; fencingToken: number | undefined }>();
    expectTypeOf(useSyncState).parameters.toEqualTypeOf<[string, string]>();
    expectTypeOf(useSyncState).returns.toEqualTypeOf<'synced' | 'pending' | 'rejected'>();
    expectTypeOf(useConnectionState).returns.toEqualTypeOf<SyncState>();
    expectTypeOf(useEventJournal).returns.toMatchTypeOf<{ events: unknown[]; isSubscribed: boolean; getLatestSequence: () => Promise<bigint> }>();
    expectTypeOf(useMergeRejections).returns.toMatchTypeOf<{ rejections: unknown[]; lastRejection: unknown; clear: () => void }>();
    expectTypeOf(useClient).returns.toEqualTypeOf<TopGunClient>();
  });
});

describe('TopGun hooks against topgun-server', () => {
  it('useQuery (rows, changes, loadMore), useMutation, useMap, useSyncState and useConnectionState', async () => {
    const reader = client();
    const writer = client();
    await Promise.all([connected(reader), connected(writer)]);
    let mutate!: ReturnType<typeof useMutation<Todo>>;
    let query!: UseQueryResult<Todo>;
    const removed: string[] = [];
    const syncStates: string[] = [];
    const View = () => {
      query = useQuery<Todo>('r-todos', { where: { done: false }, sort: { rank: 'asc' }, limit: 2 }, { onRemove: (key) => removed.push(key) });
      const map = useMap<string, Todo>('r-todos');
      const state = useConnectionState();
      return (
        <div>
          <span data-testid="rows">{query.data.map((t) => `${t._key}:${t.title}`).join(',')}</span>
          <span data-testid="more">{String(query.hasMore)}</span>
          <span data-testid="loading">{String(query.loading)}</span>
          <span data-testid="size">{map.size}</span>
          <span data-testid="conn">{state}</span>
        </div>
      );
    };
    const Writer = () => {
      mutate = useMutation<Todo>('r-todos');
      const sync = useSyncState('r-todos', 'a');
      if (syncStates.at(-1) !== sync) syncStates.push(sync);
      return <span data-testid="sync-a">{sync}</span>;
    };
    render(
      <TopGunProvider client={reader}>
        <View />
      </TopGunProvider>,
    );
    render(
      <TopGunProvider client={writer}>
        <Writer />
      </TopGunProvider>,
    );
    // Rendering subscribed a new map: SYNCING, then CONNECTED again.
    await waitFor(() => expect(text('conn')).toBe('CONNECTED'), { timeout: 5000 });
    await waitFor(() => expect(text('loading')).toBe('false'));
    act(() => writer.setOnline(false)); // the writes wait: their records show as pending
    await act(async () => {
      mutate.create('a', { title: 'A', done: false, rank: 1 });
      mutate.create('b', { title: 'B', done: false, rank: 2 });
      mutate.create('c', { title: 'C', done: false, rank: 3 });
    });
    expect(text('sync-a')).toBe('pending');
    act(() => writer.setOnline(true));
    await waitFor(() => expect(text('sync-a')).toBe('synced'), { timeout: 5000 });
    expect(syncStates).toEqual(['synced', 'pending', 'synced']); // no write yet, written, acknowledged
    await waitFor(() => expect(text('rows')).toBe('a:A,b:B'), { timeout: 5000 });
    expect(text('more')).toBe('true');
    await act(() => query.loadMore());
    await waitFor(() => expect(text('rows')).toBe('a:A,b:B,c:C'));
    await waitFor(() => expect(text('size')).toBe('3'), { timeout: 5000 });
    // The server applies a batch shard by shard, so the reader may have seen a and c before b:
    // c was then in the window of two until b displaced it, a real removal (loadMore brought it
    // back). Nothing else may have left before the writes below.
    expect(['', 'c']).toContain(removed.join());
    removed.length = 0;
    await act(async () => {
      mutate.update('a', { title: 'A', done: true, rank: 1 });
      mutate.remove('b');
    });
    await waitFor(() => expect(text('rows')).toBe('c:C'), { timeout: 5000 });
    expect(removed.sort()).toEqual(['a', 'b']); // c, inside the window of four, stays
    expect(query.changes.map((c) => c.type)).toContain('remove');
    act(() => query.clearChanges());
    expect(query.changes).toEqual([]);
  });

  it('useORMap, usePNCounter, useTopic and useLock', async () => {
    const a = client();
    const b = client();
    await Promise.all([connected(a), connected(b)]);
    const heard: string[] = [];
    let topicB!: TopicHandle<string>;
    let lockA!: ReturnType<typeof useLock>;
    let counterB!: ReturnType<typeof usePNCounter>;
    const A = () => {
      const tags = useORMap<string, string>('r-tags');
      const counter = usePNCounter('r-clicks');
      useTopic<string>('r-news', (data) => heard.push(data));
      lockA = useLock('r-doc');
      return (
        <span data-testid="a">
          {tags.get('post').sort().join('+')}|{counter.value}|{String(lockA.isLocked)}|{lockA.fencingToken === undefined ? '-' : 'token'}
        </span>
      );
    };
    const B = () => {
      const tags = useORMap<string, string>('r-tags');
      counterB = usePNCounter('r-clicks');
      topicB = useTopic<string>('r-news');
      useEffect(() => {
        tags.add('post', 'red');
        tags.add('post', 'blue');
      }, [tags]);
      return null;
    };
    render(
      <TopGunProvider client={a}>
        <A />
      </TopGunProvider>,
    );
    await new Promise((r) => setTimeout(r, 100)); // A's topic subscription reaches the server
    render(
      <TopGunProvider client={b}>
        <B />
      </TopGunProvider>,
    );
    await waitFor(() => expect(text('a')).toBe('blue+red|0|false|-'), { timeout: 5000 });
    await act(async () => {
      counterB.increment();
      counterB.add(4);
      topicB.publish('hello');
    });
    await waitFor(() => expect(text('a')).toBe('blue+red|5|false|-'), { timeout: 5000 });
    await waitFor(() => expect(heard).toEqual(['hello']), { timeout: 5000 });
    let granted = false;
    await act(async () => {
      granted = await lockA.lock(10_000);
    });
    expect(granted).toBe(true);
    expect(text('a')).toBe('blue+red|5|true|token');
    await act(async () => void (await lockA.unlock()));
    expect(text('a')).toBe('blue+red|5|false|-');
  });

  it('useEventJournal and useMergeRejections', async () => {
    const a = client();
    await connected(a);
    let journal!: ReturnType<typeof useEventJournal>;
    const View = () => {
      journal = useEventJournal({ mapName: 'r-journal' });
      const { rejections, lastRejection } = useMergeRejections();
      return (
        <span data-testid="j">
          {journal.events.map((e) => `${e.type}:${e.key}`).join(',')}|{rejections.length}|{lastRejection?.mapName ?? '-'}
        </span>
      );
    };
    render(
      <TopGunProvider client={a}>
        <View />
      </TopGunProvider>,
    );
    await waitFor(() => expect(journal.isSubscribed).toBe(true));
    await new Promise((r) => setTimeout(r, 100));
    await act(async () => {
      a.getMap<string, number>('r-journal').set('k', 1);
      a.getMap<string, number>('__topgun_denied').set('k', 1); // refused by the server
    });
    await waitFor(() => expect(text('j')).toBe('PUT:k|1|__topgun_denied'), { timeout: 5000 });
    const latest = await journal.getLatestSequence();
    expect(latest).toBe(journal.lastEvent!.sequence);
  });
});
