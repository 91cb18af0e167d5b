/**
 * The HTTP side of the driver: performs the `POST /sync` requests the HTTP engine asks for
 * (MsgPack bodies with the same msgpackr encoding as WebSocket frames) and reports each
 * outcome under its request id. A request it was told to abort is aborted and never reported.
 */
import { decodeMessage, encodeMessage } from './codec.js';

/** The subset of `fetch` the client uses (globalThis.fetch, or one injected for tests). */
export type FetchLike = (
  url: string,
  init: { method: string; headers: Record<string, string>; body: Uint8Array; signal: AbortSignal },
) => Promise<{
  status: number;
  statusText?: string;
  headers: { get(name: string): string | null };
  arrayBuffer(): Promise<ArrayBuffer>;
  text(): Promise<string>;
}>;

export interface HttpTransportEvents {
  responded(requestId: number, body: unknown): void;
  refused(requestId: number, status: number, message: string): void;
  failed(requestId: number, error: Error): void;
}

/** A JSON error body's `message` (COMPAT §2.4), else the text, else the status line. */
function errorMessage(status: number, statusText: string | undefined, text: string): string {
  try {
    const j = JSON.parse(text) as { message?: unknown };
    if (typeof j?.message === 'string') return j.message;
  } catch {
    /* not JSON */
  }
  return text.trim().slice(0, 500) || `HTTP ${status}${statusText ? ` ${statusText}` : ''}`;
}

/**
 * `ws://host:port/ws` → `http://host:port/sync` (`wss` → `https`); an `http(s)` URL ending in
 * `/ws` likewise. Another path gets `/sync` appended.
 */
export function httpSyncUrl(serverUrl: string): string {
  const u = new URL(serverUrl);
  if (u.protocol === 'ws:') u.protocol = 'http:';
  else if (u.protocol === 'wss:') u.protocol = 'https:';
  u.pathname = `${u.pathname.replace(/\/ws\/?$/, '').replace(/\/$/, '')}/sync`;
  u.search = '';
  u.hash = '';
  return u.toString();
}

export class HttpTransport {
  private readonly requests = new Map<number, AbortController>();

  constructor(
    private readonly url: string,
    private readonly fetchFn: FetchLike | undefined,
    private readonly on: HttpTransportEvents,
  ) {}

  post(requestId: number, body: unknown, token: string | null): void {
    const f = this.fetchFn ?? (globalThis as { fetch?: FetchLike }).fetch?.bind(globalThis);
    if (!f) {
      queueMicrotask(() => this.on.failed(requestId, new Error('no fetch implementation: pass options.fetch')));
      return;
    }
    const controller = new AbortController();
    this.requests.set(requestId, controller);
    const headers: Record<string, string> = { 'content-type': 'application/x-msgpack', accept: 'application/msgpack' };
    if (token) headers.authorization = `Bearer ${token}`;
    void this.perform(f, requestId, controller, headers, encodeMessage(body));
  }

  /** Stop waiting for a request: abort it and never report it. */
  abort(requestId: number): void {
    const c = this.requests.get(requestId);
    this.requests.delete(requestId);
    c?.abort();
  }

  /** Abort every request (the client is closing). */
  abortAll(): void {
    for (const id of [...this.requests.keys()]) this.abort(id);
  }

  private async perform(f: FetchLike, id: number, c: AbortController, headers: Record<string, string>, body: Uint8Array): Promise<void> {
    let outcome: () => void;
    try {
      const res = await f(this.url, { method: 'POST', headers, body, signal: c.signal });
      if (res.status === 200) {
        const bytes = new Uint8Array(await res.arrayBuffer());
        const decoded = decodeMessage(bytes);
        outcome = () => this.on.responded(id, decoded);
      } else {
        const message = errorMessage(res.status, res.statusText, await res.text().catch(() => ''));
        outcome = () => this.on.refused(id, res.status, message);
      }
    } catch (e) {
      outcome = () => this.on.failed(id, e instanceof Error ? e : new Error(String(e)));
    }
    if (this.requests.get(id) !== c) return; // aborted meanwhile
    this.requests.delete(id);
    outcome();
  }
}
