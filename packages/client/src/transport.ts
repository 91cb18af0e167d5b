/**
 * The WebSocket side of the driver: opens one socket at a time, decodes frames, and ignores
 * every event of a socket it already let go (the engine has moved on by then).
 */
import { decodeMessage, encodeMessage } from './codec.js';

/** The subset of the WebSocket API the client uses (browser WebSocket or the `ws` package). */
export interface WebSocketLike {
  binaryType: string;
  readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
}
export type WebSocketFactory = new (url: string) => WebSocketLike;

export interface TransportEvents {
  open(): void;
  close(code: number, reason: string): void;
  message(message: unknown): void;
  error(error: Error): void;
}

const OPEN = 1;

/**
 * The WebSocket implementation to use: the one passed in the options, else the global one, else
 * none (Node before 22, some serverless runtimes). The client checks this once, when it is
 * constructed, and fails fast (`NoWebSocketError`) or, with `transport: 'auto'`, uses HTTP.
 */
export function resolveWebSocket(factory: WebSocketFactory | undefined): WebSocketFactory | undefined {
  if (factory) return factory;
  const global = (globalThis as { WebSocket?: unknown }).WebSocket;
  return typeof global === 'function' ? (global as WebSocketFactory) : undefined;
}

export class Transport {
  private socket: WebSocketLike | undefined;

  constructor(
    private readonly url: string | undefined,
    private readonly factory: WebSocketFactory | undefined,
    private readonly on: TransportEvents,
  ) {}

  open(): void {
    const Ctor = resolveWebSocket(this.factory);
    if (!Ctor || !this.url) {
      // The client refuses to be built without one; this only guards a global removed later.
      this.on.error(new Error('no WebSocket implementation: pass options.WebSocket (e.g. the ws package)'));
      queueMicrotask(() => this.on.close(1006, 'no WebSocket implementation'));
      return;
    }
    let ws: WebSocketLike;
    try {
      ws = new Ctor(this.url);
    } catch (e) {
      this.on.error(e as Error);
      queueMicrotask(() => this.on.close(1006, 'could not open'));
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.socket = ws;
    ws.onopen = () => this.socket === ws && this.on.open();
    ws.onclose = (ev) => {
      if (this.socket !== ws) return;
      this.socket = undefined;
      this.on.close(ev.code, ev.reason);
    };
    ws.onerror = () => undefined; // a close event follows
    ws.onmessage = (ev) => {
      if (this.socket !== ws) return;
      let msg: unknown;
      try {
        const data = ev.data;
        msg = typeof data === 'string' ? JSON.parse(data) : decodeMessage(data as ArrayBuffer | Uint8Array);
      } catch (e) {
        this.on.error(new Error(`undecodable frame from the server: ${(e as Error).message}`));
        return;
      }
      this.on.message(msg);
    };
  }

  /** Let go of the socket on our own initiative: its later events are not reported. */
  close(code: number, reason: string): void {
    const ws = this.socket;
    this.socket = undefined;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    // Keep a no-op error listener: closing a socket that is still connecting reports an error
    // (the `ws` package throws it if nobody listens).
    ws.onerror = () => undefined;
    try {
      ws.close(code >= 4000 || code === 1000 ? code : 1000, reason);
    } catch {
      /* already closed */
    }
  }

  /** Send if open; frames for a closed socket are dropped (the engine resends what matters). */
  send(message: unknown): void {
    this.sendBytes(encodeMessage(message));
  }

  private sendBytes(bytes: Uint8Array): void {
    const ws = this.socket;
    if (!ws || ws.readyState !== OPEN) return;
    try {
      ws.send(bytes);
    } catch (e) {
      this.on.error(e as Error);
    }
  }
}
