/**
 * React bindings for @topgun-rs/client. Every hook reads the client's in-memory replica through
 * `useSyncExternalStore`, so a render never waits for IndexedDB or the network, and a change
 * (local write, server event, query update) re-renders exactly the components that read it.
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
  LockHandle,
  QueryOptions,
  QueryRow,
  SyncStatus,
  TopGunClient,
  TopGunMap,
  TopGunORMap,
  TopicMessage,
  WriteOptions,
} from '@topgun-rs/client';

const ClientContext = createContext<TopGunClient | null>(null);

export function TopGunProvider({ client, children }: { client: TopGunClient; children?: ReactNode }) {
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

export interface UseMapResult<V> {
  map: TopGunMap<V>;
  /** Live entries, recomputed on change. */
  entries: [string, V][];
  get(key: string): V | undefined;
}

/** An LWW map and its live entries. */
export function useMap<V = unknown>(name: string): UseMapResult<V> {
  const client = useClient();
  const map = useMemo(() => client.getMap<V>(name), [client, name]);
  const subscribe = useCallback((cb: () => void) => map.subscribe(cb), [map]);
  const version = useVersion(subscribe);
  const entries = useMemo(() => map.entries(), [map, version]);
  return { map, entries, get: (key) => map.get(key) };
}

export interface UseORMapResult<V> {
  map: TopGunORMap<V>;
  entries: [string, V[]][];
  get(key: string): V[];
}

export function useORMap<V = unknown>(name: string): UseORMapResult<V> {
  const client = useClient();
  const map = useMemo(() => client.getORMap<V>(name), [client, name]);
  const subscribe = useCallback((cb: () => void) => map.subscribe(cb), [map]);
  const version = useVersion(subscribe);
  const entries = useMemo(() => map.entries(), [map, version]);
  return { map, entries, get: (key) => map.get(key) };
}

export interface UseQueryResult<V> {
  data: QueryRow<V>[];
  /** True until the server's first answer has been merged (local rows show meanwhile). */
  loading: boolean;
  error: Error | undefined;
}

/** A live query: local rows at once, then the server's, then every change. */
export function useQuery<V = unknown>(mapName: string, options: QueryOptions = {}): UseQueryResult<V> {
  const client = useClient();
  const key = useStableKey(options);
  const [state, setState] = useState<UseQueryResult<V>>({ data: [], loading: true, error: undefined });
  useEffect(() => {
    let handle;
    try {
      handle = client.query<V>(mapName, JSON.parse(key) as QueryOptions);
    } catch (e) {
      setState({ data: [], loading: false, error: e as Error });
      return undefined;
    }
    const h = handle;
    const off = h.subscribe((rows) => setState({ data: rows, loading: !h.isServerConfirmed, error: undefined }));
    return () => {
      off();
      h.close();
    };
  }, [client, mapName, key]);
  return state;
}

export interface Mutation<V> {
  set(key: string, value: V, options?: WriteOptions): void;
  remove(key: string, options?: WriteOptions): void;
}

/** Stable write functions for one LWW map. */
export function useMutation<V = unknown>(mapName: string): Mutation<V> {
  const client = useClient();
  return useMemo(() => {
    const map = client.getMap<V>(mapName);
    return {
      set: (key, value, options) => void map.set(key, value, options),
      remove: (key, options) => void map.remove(key, options),
    };
  }, [client, mapName]);
}

export interface UseTopicResult<T> {
  publish(data: T): void;
  /** The most recent message (undefined until one arrives). */
  lastMessage: TopicMessage<T> | undefined;
}

export function useTopic<T = unknown>(name: string, onMessage?: (message: TopicMessage<T>) => void): UseTopicResult<T> {
  const client = useClient();
  const topic = useMemo(() => client.topic<T>(name), [client, name]);
  const [lastMessage, setLast] = useState<TopicMessage<T>>();
  const handler = useRef(onMessage);
  handler.current = onMessage;
  useEffect(
    () =>
      topic.subscribe((m) => {
        setLast(m);
        handler.current?.(m);
      }),
    [topic],
  );
  const publish = useCallback((data: T) => topic.publish(data), [topic]);
  return { publish, lastMessage };
}

export interface UseLockResult {
  lock: (ttlMs?: number) => Promise<number | false>;
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
    unlock: useCallback(() => handle.unlock(), [handle]),
    isLocked: handle.isLocked(),
    fencingToken: handle.fencingToken,
    handle,
  };
}

export interface UseCounterResult {
  value: number;
  increment: (by?: number) => void;
  decrement: (by?: number) => void;
}

export function useCounter(name: string): UseCounterResult {
  const client = useClient();
  const counter = useMemo(() => client.counter(name), [client, name]);
  const value = useSyncExternalStore(
    useCallback((cb: () => void) => counter.subscribe(() => cb()), [counter]),
    () => counter.value,
    () => counter.value,
  );
  return {
    value,
    increment: useCallback((by?: number) => void counter.increment(by), [counter]),
    decrement: useCallback((by?: number) => void counter.decrement(by), [counter]),
  };
}

/** The sync state (connection state, online, pending ops, errors), live. */
export function useSyncState(): SyncStatus {
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
