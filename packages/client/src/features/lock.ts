/**
 * Distributed locks with fencing tokens. The server queues a request for a busy lock and never
 * answers it with a refusal; it drops it silently just before max(ttl + 5 s, 5 s). So `lock()`
 * times out by itself and returns false; a grant that still arrives afterwards is released at
 * once, so a lock is never held by a client that gave up on it.
 */
import { checkName } from './names.js';

export interface LockBackend {
  isReady(): boolean;
  send(message: { type: string; payload: Record<string, unknown> }): void;
  newRequestId(): string;
  setTimer(fn: () => void, ms: number): unknown;
  clearTimer(handle: unknown): void;
}

interface Pending {
  requestId: string;
  name: string;
  ttl: number;
  sent: boolean;
  timer: unknown;
  resolve: (token: number | false) => void;
}

/** Lock requests waiting for an answer, across all names: beyond it `lock()` throws. */
export const MAX_PENDING_LOCK_REQUESTS = 1024;

export class LockManager {
  private readonly pending = new Map<string, Pending>();
  private readonly held = new Map<string, { token: number; requestId: string }>();
  private readonly releases = new Map<string, (ok: boolean) => void>();
  private readonly listeners = new Set<() => void>();

  constructor(private readonly backend: LockBackend) {}

  acquire(name: string, ttl: number): Promise<number | false> {
    checkName('lock', name);
    if (!Number.isInteger(ttl) || ttl <= 0) throw new RangeError('lock ttl must be a positive integer (ms)');
    if (this.pending.size >= MAX_PENDING_LOCK_REQUESTS) {
      throw new RangeError(`${MAX_PENDING_LOCK_REQUESTS} lock requests already wait for an answer; nothing was sent`);
    }
    const requestId = this.backend.newRequestId();
    return new Promise((resolve) => {
      const p: Pending = { requestId, name, ttl, sent: false, timer: undefined, resolve };
      // The server gives up on a queued request just before this; so do we.
      p.timer = this.backend.setTimer(() => this.finish(requestId, false), Math.max(ttl + 5000, 5000));
      this.pending.set(requestId, p);
      this.sendPending(p);
    });
  }

  release(name: string): Promise<boolean> {
    const h = this.held.get(name);
    if (!h) return Promise.resolve(false);
    this.held.delete(name);
    this.changed();
    if (!this.backend.isReady()) return Promise.resolve(false); // a dropped connection freed it already
    const requestId = this.backend.newRequestId();
    return new Promise((resolve) => {
      const timer = this.backend.setTimer(() => {
        this.releases.delete(requestId);
        resolve(false);
      }, 5000);
      this.releases.set(requestId, (ok) => {
        this.backend.clearTimer(timer);
        resolve(ok);
      });
      this.backend.send({ type: 'LOCK_RELEASE', payload: { requestId, name, fencingToken: h.token } });
    });
  }

  isHeld(name: string): boolean {
    return this.held.has(name);
  }

  fencingToken(name: string): number | undefined {
    return this.held.get(name)?.token;
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The connection is (again) authenticated: send requests that waited for it. */
  ready(): void {
    for (const p of this.pending.values()) this.sendPending(p);
  }

  /** The connection dropped: the server freed our locks and forgot our queued requests. */
  disconnected(): void {
    for (const p of [...this.pending.values()]) if (p.sent) this.finish(p.requestId, false);
    if (this.held.size > 0) {
      this.held.clear();
      this.changed();
    }
    for (const [id, done] of this.releases) {
      this.releases.delete(id);
      done(false);
    }
  }

  message(msg: { type: string; payload?: Record<string, unknown> }): void {
    const p = msg.payload ?? {};
    const requestId = String(p.requestId ?? '');
    if (msg.type === 'LOCK_GRANTED') {
      const token = Number(p.fencingToken);
      const pending = this.pending.get(requestId);
      if (!pending) {
        // A grant for a request we gave up on: hand the lock straight back.
        this.backend.send({ type: 'LOCK_RELEASE', payload: { requestId, name: String(p.name), fencingToken: token } });
        return;
      }
      this.held.set(pending.name, { token, requestId });
      this.finish(requestId, token);
      this.changed();
    } else if (msg.type === 'LOCK_RELEASED') {
      const done = this.releases.get(requestId);
      if (done) {
        this.releases.delete(requestId);
        done(p.success === true);
      }
      // A LOCK_RELEASED for an acquire is never a grant (PROTOCOL §9.6): treat it as a refusal.
      else if (this.pending.has(requestId)) this.finish(requestId, false);
    }
  }

  private sendPending(p: Pending): void {
    if (p.sent || !this.backend.isReady()) return;
    p.sent = true;
    this.backend.send({ type: 'LOCK_REQUEST', payload: { requestId: p.requestId, name: p.name, ttl: p.ttl } });
  }

  private finish(requestId: string, result: number | false): void {
    const p = this.pending.get(requestId);
    if (!p) return;
    this.pending.delete(requestId);
    this.backend.clearTimer(p.timer);
    p.resolve(result);
  }

  private changed(): void {
    for (const l of [...this.listeners]) l();
  }
}

/** The handle `client.getLock(name)` returns. */
export class LockHandle {
  constructor(
    readonly name: string,
    private readonly manager: LockManager,
  ) {
    checkName('lock', name);
  }

  /**
   * TopGun's shape: resolves true once granted, false if not granted in time. The fencing
   * token of the grant is then `fencingToken`; `acquire()` resolves to it directly.
   */
  async lock(ttl = 10_000): Promise<boolean> {
    return (await this.manager.acquire(this.name, ttl)) !== false;
  }

  /** Resolves to the fencing token, or false if not granted in time. */
  acquire(ttl = 10_000): Promise<number | false> {
    return this.manager.acquire(this.name, ttl);
  }

  /** Release; resolves true if the server released it (false if it was not held). */
  unlock(): Promise<boolean> {
    return this.manager.release(this.name);
  }

  isLocked(): boolean {
    return this.manager.isHeld(this.name);
  }

  /** The fencing token of the held lock (undefined while not held). */
  get fencingToken(): number | undefined {
    return this.manager.fencingToken(this.name);
  }

  subscribe(listener: () => void): () => void {
    return this.manager.onChange(listener);
  }
}
