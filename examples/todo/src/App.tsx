import { useEffect, useState, type FormEvent } from 'react';
import { useLock, useMutation, useQuery, useSyncStatus } from '@topgun-rs/react';
import './app.css';

interface Todo {
  title: string;
  done: boolean;
  createdAt: number;
}

const LOCK = 'todo-list-admin';
/** Lease of the admin lock; renewed every half lease while held. */
const LOCK_TTL_MS = 3000;

function newId(): string {
  return crypto.randomUUID();
}

function SyncBadge() {
  const s = useSyncStatus();
  return (
    <div className="sync">
      <span data-testid="sync-state" className={`badge ${s.state}`}>{s.state}</span>
      <span data-testid="online">{s.online ? 'online' : 'offline'}</span>
      <span data-testid="pending">{s.pendingOps} pending</span>
      {s.lastError && <span className="error" title={s.lastError}>⚠</span>}
    </div>
  );
}

function AdminLock() {
  const lock = useLock(LOCK);
  const [status, setStatus] = useState('free');
  // A lease that is not renewed expires and the server hands the lock to the next waiter;
  // re-requesting as the holder renews it with the same fencing token.
  useEffect(() => {
    if (!lock.isLocked) return undefined;
    const timer = setInterval(() => void lock.acquire(LOCK_TTL_MS), LOCK_TTL_MS / 2);
    return () => clearInterval(timer);
  }, [lock.isLocked, lock.acquire]);
  const acquire = async () => {
    setStatus('waiting…');
    const token = await lock.acquire(LOCK_TTL_MS);
    setStatus(token === false ? 'refused' : `held (token ${token})`);
  };
  const release = async () => {
    await lock.unlock();
    setStatus('released');
  };
  return (
    <div className="lock">
      <button data-testid="lock" onClick={acquire} disabled={lock.isLocked}>Take admin lock</button>
      <button data-testid="unlock" onClick={release} disabled={!lock.isLocked}>Release</button>
      <span data-testid="lock-status">{status}</span>
    </div>
  );
}

export function App() {
  const { data, loading } = useQuery<Todo>('todos', { sort: { createdAt: 'asc' } });
  const todos = useMutation<Todo>('todos');
  const [title, setTitle] = useState('');

  const add = (e: FormEvent) => {
    e.preventDefault();
    const t = title.trim();
    if (!t) return;
    todos.create(newId(), { title: t, done: false, createdAt: Date.now() });
    setTitle('');
  };

  return (
    <main>
      <h1>Shared todos</h1>
      <SyncBadge />
      <form onSubmit={add}>
        <input data-testid="new-title" value={title} onChange={(e) => setTitle(e.target.value)} placeholder="What needs doing?" />
        <button data-testid="add" type="submit">Add</button>
      </form>
      <ul data-testid="list" aria-busy={loading}>
        {data.map(({ _key: key, ...value }) => (
          <li key={key} data-testid="todo" className={value.done ? 'done' : ''}>
            <label>
              <input type="checkbox" checked={value.done} onChange={() => todos.update(key, { ...value, done: !value.done })} />
              <span data-testid="todo-title">{value.title}</span>
            </label>
            <button aria-label={`delete ${value.title}`} onClick={() => todos.remove(key)}>✕</button>
          </li>
        ))}
      </ul>
      <AdminLock />
    </main>
  );
}
