/**
 * Type-level checks that the TopGun client API's names and signatures hold on ours (checked by
 * `npm run typecheck`; at run time these are no-ops). Code written against TopGun's client
 * should compile against @topgun-rs/client by changing its imports.
 */
import { afterAll, describe, expectTypeOf, it } from 'vitest';
import {
  MemoryStorage,
  NotSupportedError,
  Predicates,
  SyncState,
  TopGunClient,
  WriteConcern,
  type BackpressureStatus,
  type ChangeEvent,
  type DistributedLock,
  type EventJournalEvent,
  type EventJournalReader,
  type LWWRecord,
  type MergeRejection,
  type ORMapRecord,
  type PaginationInfo,
  type PNCounterHandle,
  type PredicateNode,
  type QueryFilter,
  type QueryHandle,
  type QueryResultItem,
  type RecordSyncState,
  type StateChangeEvent,
  type TopGunClientConfig,
  type TopicHandle,
  type WriteAck,
} from '../src/index.js';

interface Todo {
  title: string;
  done: boolean;
}

// A local-only client: the expressions below also run (they only touch memory).
const client = new TopGunClient({ storage: new MemoryStorage(), watchConnectivity: false });

describe('TopGun client API: types', () => {
  afterAll(() => client.close());

  it('TopGunClient options and lifecycle', () => {
    expectTypeOf<TopGunClientConfig>().toHaveProperty('serverUrl');
    expectTypeOf<TopGunClientConfig>().toHaveProperty('storage');
    expectTypeOf<TopGunClientConfig>().toHaveProperty('nodeId');
    expectTypeOf<TopGunClientConfig>().toHaveProperty('cluster');
    expectTypeOf<TopGunClientConfig>().toHaveProperty('backpressure');
    expectTypeOf<TopGunClientConfig>().toHaveProperty('backoff');
    expectTypeOf<TopGunClientConfig>().toHaveProperty('onAuthRequired');
    expectTypeOf<TopGunClient['start']>().returns.toEqualTypeOf<Promise<void>>();
    expectTypeOf<TopGunClient['close']>().returns.toEqualTypeOf<Promise<void>>();
    expectTypeOf<TopGunClient['setAuthToken']>().parameters.toEqualTypeOf<[string]>();
    expectTypeOf<TopGunClient['setAuthTokenProvider']>().parameter(0).returns.toMatchTypeOf<Promise<string | null | undefined> | string | null | undefined>();
    // Cluster seeds instead of a server URL.
    expectTypeOf<{ cluster: { seeds: string[] }; storage: MemoryStorage }>().toMatchTypeOf<TopGunClientConfig>();
  });

  it('getMap<K, V> and getORMap<K, V>: typed keys and values, records returned, TTL as a number', () => {
    const map = client.getMap<string, Todo>('todos');
    expectTypeOf(map.get).returns.toEqualTypeOf<Todo | undefined>();
    expectTypeOf(map.set).parameter(1).toEqualTypeOf<Todo>();
    expectTypeOf(map.set('k', { title: 't', done: false }, 5000)).toMatchTypeOf<LWWRecord<Todo>>();
    expectTypeOf(map.set('k', { title: 't', done: false }).acked).returns.toEqualTypeOf<Promise<WriteAck>>();
    expectTypeOf(map.remove('k')).toMatchTypeOf<LWWRecord<Todo>>();
    expectTypeOf(map.getRecord).returns.toEqualTypeOf<LWWRecord<Todo> | undefined>();
    expectTypeOf(map.onChange).parameter(0).toEqualTypeOf<() => void>();
    expectTypeOf(map.allKeys).returns.toEqualTypeOf<string[]>();
    expectTypeOf(map.entries()).toMatchTypeOf<Iterable<[string, Todo]>>();
    expectTypeOf(map.size).toEqualTypeOf<number>();
    // Literal key types narrow what may be written.
    const narrow = client.getMap<'a' | 'b', number>('n');
    expectTypeOf(narrow.set).parameter(0).toEqualTypeOf<'a' | 'b'>();
    // Ours, one type argument, still works.
    expectTypeOf(client.getMap<Todo>('todos').get('k')).toEqualTypeOf<Todo | undefined>();

    const or = client.getORMap<string, string>('tags');
    expectTypeOf(or.get).returns.toEqualTypeOf<string[]>();
    expectTypeOf(or.add('k', 'v', 1000)).toMatchTypeOf<ORMapRecord<string>>();
    expectTypeOf(or.remove).returns.toEqualTypeOf<string[]>();
    expectTypeOf(or.getRecords).returns.toEqualTypeOf<ORMapRecord<string>[]>();
    expectTypeOf(or.onChange).parameter(0).toEqualTypeOf<() => void>();
  });

  it('query(): filter, T & {_key} rows, changes, pagination, settling; queryOnce', () => {
    expectTypeOf<QueryFilter>().toMatchTypeOf<{
      where?: Record<string, unknown>;
      predicate?: PredicateNode;
      sort?: Record<string, 'asc' | 'desc'> | { field: string; direction: 'asc' | 'desc' }[];
      limit?: number;
      cursor?: string;
      fields?: string[];
    }>();
    const q = client.query<Todo>('todos', { where: { done: false }, sort: { title: 'asc' }, limit: 10 });
    expectTypeOf(q).toEqualTypeOf<QueryHandle<Todo>>();
    expectTypeOf(q.subscribe).parameter(0).parameter(0).toEqualTypeOf<QueryResultItem<Todo>[]>();
    expectTypeOf<QueryResultItem<Todo>>().toEqualTypeOf<Todo & { _key: string }>();
    expectTypeOf(q.subscribe).returns.toEqualTypeOf<() => void>();
    expectTypeOf(q.onChanges).parameter(0).parameter(0).toEqualTypeOf<ChangeEvent<Todo>[]>();
    expectTypeOf<ChangeEvent<Todo>['type']>().toEqualTypeOf<'add' | 'update' | 'remove'>();
    expectTypeOf(q.getPaginationInfo).returns.toEqualTypeOf<PaginationInfo>();
    expectTypeOf<PaginationInfo>().toEqualTypeOf<{ nextCursor?: string; hasMore: boolean; cursorStatus: 'valid' | 'expired' | 'invalid' | 'none' }>();
    expectTypeOf(q.onPaginationChange).parameter(0).parameter(0).toEqualTypeOf<PaginationInfo>();
    expectTypeOf(q.loadMore).returns.toEqualTypeOf<Promise<void>>();
    expectTypeOf(q.isSettled).returns.toEqualTypeOf<boolean>();
    expectTypeOf(q.whenSettled).returns.toEqualTypeOf<Promise<void>>();
    expectTypeOf(q.getPendingChanges).returns.toEqualTypeOf<ChangeEvent<Todo>[]>();
    expectTypeOf(q.consumeChanges).returns.toEqualTypeOf<ChangeEvent<Todo>[]>();
    expectTypeOf(q.getFilter).returns.toEqualTypeOf<QueryFilter>();
    expectTypeOf(q.getMapName).returns.toEqualTypeOf<string>();
    expectTypeOf(q.onDelta).parameter(0).toBeFunction();
    expectTypeOf(client.queryOnce<Todo>).returns.toEqualTypeOf<Promise<QueryResultItem<Todo>[]>>();
    expectTypeOf(client.isSettled).returns.toEqualTypeOf<boolean>();
    expectTypeOf(client.whenSettled).returns.toEqualTypeOf<Promise<void>>();
  });

  it('Predicates builds predicate nodes', () => {
    expectTypeOf(Predicates.equal).toEqualTypeOf<(attribute: string, value: unknown) => PredicateNode>();
    expectTypeOf(Predicates.and).parameters.toEqualTypeOf<PredicateNode[]>();
    expectTypeOf(Predicates.or).returns.toEqualTypeOf<PredicateNode>();
    expectTypeOf(Predicates.not).parameters.toEqualTypeOf<[PredicateNode]>();
    for (const name of ['greaterThan', 'greaterThanOrEqual', 'lessThan', 'lessThanOrEqual', 'notEqual', 'like', 'regex', 'between'] as const) {
      expectTypeOf(Predicates[name]).returns.toEqualTypeOf<PredicateNode>();
    }
  });

  it('counters, locks, topics, the journal', () => {
    const counter = client.getPNCounter('views');
    expectTypeOf(counter).toEqualTypeOf<PNCounterHandle>();
    expectTypeOf(counter.get).returns.toEqualTypeOf<number>();
    expectTypeOf(counter.increment).returns.toEqualTypeOf<number>();
    expectTypeOf(counter.decrement).returns.toEqualTypeOf<number>();
    expectTypeOf(counter.addAndGet).toEqualTypeOf<(delta: number) => number>();
    expectTypeOf(counter.subscribe).parameter(0).toEqualTypeOf<(value: number) => void>();

    const lock = client.getLock('orders');
    expectTypeOf(lock).toEqualTypeOf<DistributedLock>();
    expectTypeOf(lock.lock).returns.toEqualTypeOf<Promise<boolean>>();
    expectTypeOf(lock.isLocked).returns.toEqualTypeOf<boolean>();
    expectTypeOf(lock.fencingToken).toEqualTypeOf<number | undefined>();
    expectTypeOf(lock.acquire).returns.toEqualTypeOf<Promise<number | false>>();

    const topic = client.topic<{ text: string }>('chat');
    expectTypeOf(topic).toEqualTypeOf<TopicHandle<{ text: string }>>();
    expectTypeOf(topic.publish).parameters.toEqualTypeOf<[{ text: string }]>();
    expectTypeOf(topic.subscribe).parameter(0).parameters.toMatchTypeOf<[{ text: string }, { timestamp: number; publisherId?: string }]>();
    expectTypeOf(topic.subscribe).returns.toEqualTypeOf<() => void>();
    expectTypeOf(topic.id).toEqualTypeOf<string>();

    const journal = client.getEventJournal();
    expectTypeOf(journal).toEqualTypeOf<EventJournalReader>();
    expectTypeOf(journal.getLatestSequence).returns.toEqualTypeOf<Promise<bigint>>();
    expectTypeOf(journal.readFrom).returns.toEqualTypeOf<Promise<EventJournalEvent[]>>();
    expectTypeOf<EventJournalEvent['sequence']>().toEqualTypeOf<bigint>();
    expectTypeOf<EventJournalEvent['type']>().toEqualTypeOf<'PUT' | 'UPDATE' | 'DELETE'>();
    expectTypeOf(journal.subscribe).returns.toEqualTypeOf<() => void>();
  });

  it('connection state, backpressure, write concern, record sync state, rejections', () => {
    expectTypeOf(client.getConnectionState).returns.toEqualTypeOf<SyncState>();
    expectTypeOf(SyncState.CONNECTED).toEqualTypeOf<'CONNECTED'>();
    expectTypeOf(client.onConnectionStateChange).parameter(0).parameter(0).toEqualTypeOf<StateChangeEvent>();
    expectTypeOf<StateChangeEvent>().toEqualTypeOf<{ from: SyncState; to: SyncState; timestamp: number }>();
    expectTypeOf(client.getStateHistory).returns.toEqualTypeOf<StateChangeEvent[]>();
    expectTypeOf(client.resetConnection).returns.toEqualTypeOf<void>();
    expectTypeOf(client.getPendingOpsCount).returns.toEqualTypeOf<number>();
    expectTypeOf(client.getBackpressureStatus).returns.toEqualTypeOf<BackpressureStatus>();
    expectTypeOf(client.isBackpressurePaused).returns.toEqualTypeOf<boolean>();
    expectTypeOf(client.onBackpressure).parameter(0).toEqualTypeOf<
      'backpressure:high' | 'backpressure:low' | 'backpressure:paused' | 'backpressure:resumed' | 'operation:dropped'
    >();
    expectTypeOf<TopGunClientConfig['backpressure']>().toMatchTypeOf<
      { maxPendingOps?: number; strategy?: 'pause' | 'throw' | 'drop-oldest'; highWaterMark?: number; lowWaterMark?: number } | undefined
    >();
    expectTypeOf(WriteConcern.PERSISTED).toEqualTypeOf<'PERSISTED'>();
    expectTypeOf(client.getRecordSyncState).returns.toEqualTypeOf<RecordSyncState>();
    expectTypeOf(client.getConflictResolvers().onRejection).parameter(0).parameter(0).toEqualTypeOf<MergeRejection>();
    expectTypeOf<MergeRejection>().toMatchTypeOf<{ mapName: string; key: string; attemptedValue: unknown; reason: string }>();
  });

  it('what this server lacks fails with a typed error', () => {
    expectTypeOf(client.search).returns.toMatchTypeOf<Promise<unknown>>();
    expectTypeOf(client.executeOnKey).returns.toEqualTypeOf<Promise<never>>();
    expectTypeOf<NotSupportedError['code']>().toEqualTypeOf<'NOT_SUPPORTED'>();
  });
});
