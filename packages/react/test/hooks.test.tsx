// @vitest-environment jsdom
import { act, cleanup, render, screen } from '@testing-library/react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { MemoryStorage, TopGunClient } from '@topgun-rs/client';
import {
  TopGunProvider,
  useClient,
  useCounter,
  useLock,
  useMapEntries,
  useMutation,
  useORMapEntries,
  useQuery,
  useSyncStatus,
  useTopic,
} from '../src/index.js';

afterEach(cleanup);

const makeClient = () => new TopGunClient({ storage: new MemoryStorage(), nodeId: 'n1', watchConnectivity: false });

function Todos() {
  const { entries } = useMapEntries<{ title: string; done: boolean }>('todos');
  const { data } = useQuery<{ title: string; done: boolean }>('todos', { where: { done: false }, sort: { title: 'asc' } });
  const sync = useSyncStatus();
  return (
    <div>
      <span data-testid="count">{entries.length}</span>
      <span data-testid="open">{data.map((r) => r.title).join(',')}</span>
      <span data-testid="pending">{sync.pendingOps}</span>
    </div>
  );
}

describe('hooks', () => {
  it('useClient outside a provider fails clearly', () => {
    const Bad = () => {
      useClient();
      return null;
    };
    const quiet = vi.spyOn(console, 'error').mockImplementation(() => undefined); // React logs the throw
    expect(() => render(<Bad />)).toThrow(/TopGunProvider/);
    quiet.mockRestore();
  });

  it('useMapEntries, useQuery and useSyncStatus follow writes made through useMutation', async () => {
    const client = makeClient();
    let mutate!: ReturnType<typeof useMutation<{ title: string; done: boolean }>>;
    const Writer = () => {
      mutate = useMutation('todos');
      return null;
    };
    render(
      <TopGunProvider client={client}>
        <Todos />
        <Writer />
      </TopGunProvider>,
    );
    expect(screen.getByTestId('count').textContent).toBe('0');
    await act(async () => {
      mutate.set('b', { title: 'Bread', done: false });
      mutate.set('a', { title: 'Apples', done: false });
      mutate.set('c', { title: 'Cheese', done: true });
    });
    expect(screen.getByTestId('count').textContent).toBe('3');
    expect(screen.getByTestId('open').textContent).toBe('Apples,Bread');
    expect(screen.getByTestId('pending').textContent).toBe('3');
    await act(async () => mutate.remove('a'));
    expect(screen.getByTestId('count').textContent).toBe('2');
    expect(screen.getByTestId('open').textContent).toBe('Bread');
    await client.close();
  });

  it('useORMapEntries, useCounter, useLock and useTopic render their state', async () => {
    const client = makeClient();
    let api!: { add: () => void; inc: () => void; publish: (s: string) => void };
    const View = () => {
      const tags = useORMapEntries<string>('tags');
      const counter = useCounter('clicks');
      const lock = useLock('doc-1');
      const topic = useTopic<string>('news');
      api = { add: () => tags.map.add('k', 'v'), inc: () => counter.increment(2), publish: (m) => topic.publish(m) };
      return (
        <span data-testid="all">
          {tags.get('k').join()}|{counter.value}|{String(lock.isLocked)}
        </span>
      );
    };
    render(
      <TopGunProvider client={client}>
        <View />
      </TopGunProvider>,
    );
    expect(screen.getByTestId('all').textContent).toBe('|0|false');
    await act(async () => {
      api.add();
      api.inc();
      api.publish('queued while local-only');
    });
    expect(screen.getByTestId('all').textContent).toBe('v|2|false');
    await client.close();
  });

  it('useQuery reports a refused query as an error', async () => {
    const client = makeClient();
    const Q = () => {
      const { error } = useQuery('todos', { predicate: { op: 'regex', attribute: 'x', value: '(' } });
      return <span data-testid="err">{error ? error.name : 'none'}</span>;
    };
    render(
      <TopGunProvider client={client}>
        <Q />
      </TopGunProvider>,
    );
    await act(async () => undefined);
    expect(screen.getByTestId('err').textContent).toBe('PredicateError');
    await client.close();
  });
});
