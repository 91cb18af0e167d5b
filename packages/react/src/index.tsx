/**
 * React bindings for @topgun-rs/client, with the hook names and shapes of TopGun's own React
 * package (so an app ports by changing its imports) and our earlier hooks kept beside them
 * under their own names (`useMapEntries`, `useORMapEntries`, `useCounter`, `useSyncStatus`).
 *
 * Every hook reads the client's in-memory replica, so a render never waits for IndexedDB or the
 * network, and a change (local write, server event, query update) re-renders exactly the
 * components that read it.
 */
import {
  createContext,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useRef,
  useState,
  useSyncExternalStore,
  type ReactNode,
} from 'react';
import type {
  ChangeEvent,
  CounterHandle,
  CursorStatus,
  EventJournalEvent,
  JournalEventType,
  LockHandle,
  MergeRejection,
  QueryFilter,
  QueryHandle,
  QueryResultItem,
  RecordSyncState,
  SyncState,
  SyncStatus,
  TopGunClient,
  TopGunMap,
  TopGunORMap,
  TopicCallback,
  TopicHandle,
  WriteOptions,
} from '@topgun-rs/client';

const ClientContext = createContext<TopGunClient | null>(null);

export interface TopGunProviderProps {
  client: TopGunClient;
  children?: ReactNode;
}

export function TopGunProvider({ client, children }: TopGunProviderProps) {
  return <ClientContext.Provider value={client}>{children}</ClientContext.Provider>;
}

export function useClient(): TopGunClient {
  const client = useContext(ClientContext);
  if (!client) throw new Error('useClient: no TopGunClient; wrap the tree in <TopGunProvider client={...}>');
  return client;
}

/** A value that changes identity only when its JSON form does (options objects in renders). */
function useStableKey(value: unknown): string {
  return JSON.stringify(value ?? null);
}

/** Re-render on every change of a store; `version` is the snapshot (a counter). */
function useVersion(subscribe: (onChange: () => void) => () => void): number {
  const version = useRef(0);
  const sub = useCallback(
    (onChange: () => void) =>
      subscribe(() => {
        version.current += 1;
        onChange();
      }),
    [subscribe],
  );
  return useSyncExternalStore(sub, () => version.current, () => version.current);
}

/** The latest value of a callback, for effects that must not re-run when it changes. */
function useLatest<T>(value: T): { current: T } {
  const ref = useRef(value);
  ref.current = value;
  return ref;
}

// ---- maps ------------------------------------------------------------------------------------

/**
 * TopGun's `useMap`: the LWW map itself; the component re-renders on every change of it (local
 * writes and the server's).
 */
export function useMap<K extends string = string, V = unknown>(mapName: string): TopGunMap<V, K> {
  const client = useClient();
  const map = useMemo(() => client.getMap<K, V>(mapName), [client, mapName]);
  const subscribe = useCallback((cb: () => void) => map.onChange(cb), [map]);
  useVersion(subscribe);
  return map;
}

/** TopGun's `useORMap`: the OR map itself, re-rendering on change. */
export function useORMap<K extends string = string, V = unknown>(mapName: string): TopGunORMap<V, K> {
  const client = useClient();
  const map = useMemo(() => client.getORMap<K, V>(mapName), [client, mapName]);
  const subscribe = useCallback((cb: () => void) => map.onChange(cb), [map]);
  useVersion(subscribe);
  return map;
}

export interface UseMapEntriesResult<V> {
  map: TopGunMap<V>;
  /** Live entries, recomputed on change. */
  entries: [string, V][];
  get(key: string): V | undefined;
}

/** Our map hook: the map, its live entries and a getter. */
export function useMapEntries<V = unknown>(name: string): UseMapEntriesResult<V> {
  const client = useClient();
  const map = useMemo(() => client.getMap<V>(name), [client, name]);
  const subscribe = useCallback((cb: () => void) => map.onChange(cb), [map]);
  const version = useVersion(subscribe);
  const entries = useMemo(() => map.entries(), [map, version]);
  return { map, entries, get: (key) => map.get(key) };
}

export interface UseORMapEntriesResult<V> {
  map: TopGunORMap<V>;
  entries: [string, V[]][];
  get(key: string): V[];
}

export function useORMapEntries<V = unknown>(name: string): UseORMapEntriesResult<V> {
  const client = useClient();
  const map = useMemo(() => client.getORMap<V>(name), [client, name]);
  const subscribe = useCallback((cb: () => void) => map.onChange(cb), [map]);
  const version = useVersion(subscribe);
  const entries = useMemo(() => map.entries(), [map, version]);
  return { map, entries, get: (key) => map.get(key) };
}

// ---- queries ---------------------------------------------------------------------------------

export interface UseQueryOptions<T> {
  /** Every change (add, update, remove), as it happens. */
  onChange?: (change: ChangeEvent<T>) => void;
  onAdd?: (key: string, value: T) => void;
  onUpdate?: (key: string, value: T, previousValue?: T) => void;
  onRemove?: (key: string, previousValue?: T) => void;
  /** Changes kept in `changes` (default 1,000; the oldest go first). */
  maxChanges?: number;
}

export interface UseQueryResult<T> {
  /** Rows as TopGun shapes them: the value's fields and `_key`. */
  data: QueryResultItem<T>[];
  /** True until the server's first answer has been merged (local rows show meanwhile). */
  loading: boolean;
  error: Error | null;
  lastChange: ChangeEvent<T> | null;
  changes: ChangeEvent<T>[];
  clearChanges: () => void;
  nextCursor?: string;
  hasMore: boolean;
  cursorStatus: CursorStatus;
  /** Widen the window by one page (`limit`); resolves once the server answered it. */
  loadMore: () => Promise<void>;
  /** The query handle (undefined before the first effect ran or after an error). */
  handle: QueryHandle<T> | undefined;
}

interface QueryState<T> {
  data: QueryResultItem<T>[];
  loading: boolean;
  error: Error | null;
  lastChange: ChangeEvent<T> | null;
  changes: ChangeEvent<T>[];
  nextCursor?: string;
  hasMore: boolean;
  cursorStatus: CursorStatus;
}

/** TopGun's `useQuery`: a live query with its changes and pagination. */
export function useQuery<T = unknown>(mapName: string, query: QueryFilter = {}, options: UseQueryOptions<T> = {}): UseQueryResult<T> {
  const client = useClient();
  const key = useStableKey(query);
  const opts = useLatest(options);
  const [handle, setHandle] = useState<QueryHandle<T>>();
  const [state, setState] = useState<QueryState<T>>({ data: [], loading: true, error: null, lastChange: null, changes: [], hasMore: false, cursorStatus: 'none' });
  useEffect(() => {
    let h: QueryHandle<T>;
    try {
      h = client.query<T>(mapName, JSON.parse(key) as QueryFilter);
    } catch (e) {
      setState((s) => ({ ...s, data: [], loading: false, error: e as Error }));
      setHandle(undefined);
      return undefined;
    }
    const q = h;
    setHandle(q);
    const offRows = q.subscribe((rows) =>
      setState((s) => ({ ...s, data: rows, loading: !q.isSettled(), error: null })),
    );
    const offChanges = q.onChanges((changes) => {
      const o = opts.current;
      for (const c of changes) {
        o.onChange?.(c);
        if (c.type === 'add') o.onAdd?.(c.key, c.value as T);
        else if (c.type === 'update') o.onUpdate?.(c.key, c.value as T, c.previousValue);
        else o.onRemove?.(c.key, c.previousValue);
      }
      const max = o.maxChanges ?? 1000;
      setState((s) => {
        const all = [...s.changes, ...changes];
        return { ...s, changes: all.length > max ? all.slice(all.length - max) : all, lastChange: changes[changes.length - 1] ?? s.lastChange };
      });
    });
    const page = (): void => {
      const p = q.getPaginationInfo();
      setState((s) => ({ ...s, nextCursor: p.nextCursor, hasMore: p.hasMore, cursorStatus: p.cursorStatus, loading: !q.isSettled() }));
    };
    page();
    const offPage = q.onPaginationChange(page);
    // The server's answer may change no row (it agrees with the replica): still end `loading`.
    void q.whenSettled().then(page, () => undefined);
    return () => {
      offRows();
      offChanges();
      offPage();
      q.close();
    };
  }, [client, mapName, key]);
  const clearChanges = useCallback(() => setState((s) => ({ ...s, changes: [], lastChange: null })), []);
  const loadMore = useCallback(() => handle?.loadMore() ?? Promise.resolve(), [handle]);
  return { ...state, clearChanges, loadMore, handle };
}

// ---- writes ----------------------------------------------------------------------------------

export interface UseMutationResult<T, K extends string = string> {
  /** Write a new record. */
  create: (key: K, value: T) => void;
  /** Replace a record. */
  update: (key: K, value: T) => void;
  remove: (key: K) => void;
  /** The map, for anything else. */
  map: TopGunMap<T, K>;
  /** Ours: a write with options (TTL, write concern). */
  set: (key: K, value: T, options?: WriteOptions) => void;
}

/** TopGun's `useMutation`: stable write functions for one LWW map. */
export function useMutation<T = unknown, K extends string = string>(mapName: string): UseMutationResult<T, K> {
  const client = useClient();
  return useMemo(() => {
    const map = client.getMap<K, T>(mapName);
    return {
      create: (key, value) => void map.set(key, value),
      update: (key, value) => void map.set(key, value),
      remove: (key) => void map.remove(key),
      map,
      set: (key, value, options) => void map.set(key, value, options),
    };
  }, [client, mapName]);
}

// ---- topics, counters, locks -------------------------------------------------------------------

/** TopGun's `useTopic`: the topic handle; `callback(data, context)` hears every message. */
export function useTopic<T = unknown>(topicName: string, callback?: TopicCallback<T>): TopicHandle<T> {
  const client = useClient();
  const topic = useMemo(() => client.topic<T>(topicName), [client, topicName]);
  const cb = useLatest(callback);
  const listening = callback !== undefined;
  useEffect(() => {
    if (!listening) return undefined;
    return topic.subscribe((data, ctx) => cb.current?.(data, ctx));
  }, [topic, listening]);
  return topic;
}

export interface UsePNCounterResult {
  value: number;
  increment: () => void;
  decrement: () => void;
  add: (delta: number) => void;
  /** True until the server's state has been merged once (local increments show meanwhile). */
  loading: boolean;
  counter: CounterHandle;
}

/** TopGun's `usePNCounter`. */
export function usePNCounter(name: string): UsePNCounterResult {
  const client = useClient();
  const counter = useMemo(() => client.getPNCounter(name), [client, name]);
  const [loading, setLoading] = useState(true);
  const value = useSyncExternalStore(
    useCallback((cb: () => void) => counter.subscribe(() => cb()), [counter]),
    () => counter.value,
    () => counter.value,
  );
  useEffect(() => {
    const sync = (): void => {
      if (client.getSyncState().state === 'connected' || client.getSyncState().state === 'disconnected') setLoading(false);
    };
    sync();
    return client.onSyncState(sync);
  }, [client]);
  return {
    value,
    increment: useCallback(() => void counter.increment(), [counter]),
    decrement: useCallback(() => void counter.decrement(), [counter]),
    add: useCallback((delta: number) => void counter.add(delta), [counter]),
    loading,
    counter,
  };
}

export interface UseCounterResult {
  value: number;
  increment: (by?: number) => void;
  decrement: (by?: number) => void;
}

/** Our counter hook (`increment(by)`); TopGun's is `usePNCounter`. */
export function useCounter(name: string): UseCounterResult {
  const { value, counter } = usePNCounter(name);
  return {
    value,
    increment: useCallback((by?: number) => void counter.increment(by), [counter]),
    decrement: useCallback((by?: number) => void counter.decrement(by), [counter]),
  };
}

export interface UseLockResult {
  /** Resolves true once granted (TopGun's shape); the token is then `fencingToken`. */
  lock: (ttl?: number) => Promise<boolean>;
  /** Ours: resolves to the fencing token, or false. */
  acquire: (ttl?: number) => Promise<number | false>;
  unlock: () => Promise<boolean>;
  isLocked: boolean;
  fencingToken: number | undefined;
  handle: LockHandle;
}

export function useLock(name: string): UseLockResult {
  const client = useClient();
  const handle = useMemo(() => client.getLock(name), [client, name]);
  const subscribe = useCallback((cb: () => void) => handle.subscribe(cb), [handle]);
  useVersion(subscribe);
  return {
    lock: useCallback((ttl?: number) => handle.lock(ttl), [handle]),
    acquire: useCallback((ttl?: number) => handle.acquire(ttl), [handle]),
    unlock: useCallback(() => handle.unlock(), [handle]),
    isLocked: handle.isLocked(),
    fencingToken: handle.fencingToken,
    handle,
  };
}

// ---- the event journal -----------------------------------------------------------------------

export interface UseEventJournalOptions {
  mapName?: string;
  types?: JournalEventType[];
  /** Replay from this sequence before going live. */
  fromSequence?: bigint;
  /** Events kept in `events` (default 100). */
  maxEvents?: number;
  onEvent?: (event: EventJournalEvent) => void;
  /** While true, no subscription. */
  paused?: boolean;
}

export interface UseEventJournalResult {
  events: EventJournalEvent[];
  lastEvent: EventJournalEvent | null;
  isSubscribed: boolean;
  clearEvents: () => void;
  readFrom: (sequence: bigint, limit?: number) => Promise<EventJournalEvent[]>;
  getLatestSequence: () => Promise<bigint>;
}

/** TopGun's `useEventJournal`: live journal events (optionally replayed), kept in state. */
export function useEventJournal(options: UseEventJournalOptions = {}): UseEventJournalResult {
  const client = useClient();
  const reader = useMemo(() => client.getEventJournal(), [client]);
  const [events, setEvents] = useState<EventJournalEvent[]>([]);
  const [isSubscribed, setSubscribed] = useState(false);
  const onEvent = useLatest(options.onEvent);
  const max = options.maxEvents ?? 100;
  const key = useStableKey({ m: options.mapName, t: options.types, f: options.fromSequence?.toString(), p: options.paused });
  useEffect(() => {
    if (options.paused) return undefined;
    const off = reader.subscribe(
      (e) => {
        onEvent.current?.(e);
        setEvents((all) => {
          const next = [...all, e];
          return next.length > max ? next.slice(next.length - max) : next;
        });
      },
      { mapName: options.mapName, types: options.types, fromSequence: options.fromSequence },
    );
    setSubscribed(true);
    return () => {
      off();
      setSubscribed(false);
    };
  }, [reader, key, max]);
  return {
    events,
    lastEvent: events[events.length - 1] ?? null,
    isSubscribed,
    clearEvents: useCallback(() => setEvents([]), []),
    readFrom: useCallback((sequence: bigint, limit?: number) => reader.readFrom(sequence, limit, options.mapName), [reader, options.mapName]),
    getLatestSequence: useCallback(() => reader.getLatestSequence(options.mapName), [reader, options.mapName]),
  };
}

// ---- sync and connection state -----------------------------------------------------------------

/** TopGun's `useSyncState(map, key)`: where one record stands with the server. */
export function useSyncState(mapName: string, key: string): RecordSyncState {
  const client = useClient();
  const subscribe = useCallback((cb: () => void) => client.onSyncState(() => cb()), [client]);
  const get = useCallback(() => client.getRecordSyncState(mapName, key), [client, mapName, key]);
  return useSyncExternalStore(subscribe, get, get);
}

/** The connection state in TopGun's terms (`SyncState.CONNECTED`, …), live. */
export function useConnectionState(): SyncState {
  const client = useClient();
  const subscribe = useCallback((cb: () => void) => client.onConnectionStateChange(() => cb()), [client]);
  const get = useCallback(() => client.getConnectionState(), [client]);
  return useSyncExternalStore(subscribe, get, get);
}

/** Ours: the whole sync status (engine state, online, pending ops, errors), live. */
export function useSyncStatus(): SyncStatus {
  const client = useClient();
  const snapshot = useRef<SyncStatus>(client.getSyncState());
  const subscribe = useCallback(
    (cb: () => void) =>
      client.onSyncState((s) => {
        snapshot.current = s;
        cb();
      }),
    [client],
  );
  return useSyncExternalStore(subscribe, () => snapshot.current, () => snapshot.current);
}

export interface UseMergeRejectionsOptions {
  /** Only this map's rejections. */
  mapName?: string;
  /** Rejections kept (default 100). */
  maxHistory?: number;
}

export interface UseMergeRejectionsResult {
  rejections: MergeRejection[];
  lastRejection: MergeRejection | null;
  clear: () => void;
}

/** TopGun's `useMergeRejections`: the writes the server refused, newest last. */
export function useMergeRejections(options: UseMergeRejectionsOptions = {}): UseMergeRejectionsResult {
  const client = useClient();
  const [rejections, setRejections] = useState<MergeRejection[]>([]);
  const max = options.maxHistory ?? 100;
  useEffect(
    () =>
      client.onMergeRejected((r) => {
        if (options.mapName !== undefined && r.mapName !== options.mapName) return;
        setRejections((all) => {
          const next = [...all, r];
          return next.length > max ? next.slice(next.length - max) : next;
        });
      }),
    [client, options.mapName, max],
  );
  return { rejections, lastRejection: rejections[rejections.length - 1] ?? null, clear: useCallback(() => setRejections([]), []) };
}
