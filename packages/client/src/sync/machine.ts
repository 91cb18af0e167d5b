/**
 * What the driver (client.ts) asks of a sync machine, whichever way it talks to the server:
 * `SyncEngine` over a WebSocket, `HttpSyncEngine` over `POST /sync`. Every call takes the
 * current time where it needs one and returns the effects to carry out, in order.
 */
import type { Timestamp } from '../crdt/hlc.js';
import type { AnyMessage, HttpSyncRequest, WireQuery } from '../protocol.js';
import type { Effect, MapKind, EngineState } from './engine.js';

/** The effects of the WebSocket engine plus HTTP's own. */
export type HttpEffect =
  | Effect
  /** POST this body (the driver adds `clientId` and `clientHlc`), with this bearer token. */
  | { kind: 'post'; requestId: number; body: Omit<HttpSyncRequest, 'clientId' | 'clientHlc'>; token: string | null }
  /** Stop waiting for this request; whatever it answers is ignored. */
  | { kind: 'abortRequest'; requestId: number }
  /** A map's delta is merged up to this server time: the next `syncMaps` starts there. */
  | { kind: 'syncTimestamp'; mapName: string; timestamp: Timestamp };

export interface SyncMachine {
  readonly state: EngineState;
  /** A live WebSocket session that one-off requests (locks, journal, SQL) can use. */
  readonly isAuthenticated: boolean;
  nextDeadline(): number | undefined;
  start(now: number, online?: boolean): HttpEffect[];
  stop(): HttpEffect[];
  /** Out of `failed` (too many refused tokens): try again now; nothing in any other state. */
  resume(now: number): HttpEffect[];
  connectivity(online: boolean, now: number): HttpEffect[];
  tick(now: number): HttpEffect[];
  tokenReady(token: string | null, now: number): HttpEffect[];
  addMap(kind: MapKind, name: string): HttpEffect[];
  opsAdded(now: number): HttpEffect[];
  addQuery(queryId: string, mapName: string, query: WireQuery): HttpEffect[];
  removeQuery(queryId: string): HttpEffect[];
  addTopic(topic: string): HttpEffect[];
  removeTopic(topic: string): HttpEffect[];
  publish(topic: string, data: unknown): HttpEffect[];
  addCounter(name: string): HttpEffect[];
  request(message: AnyMessage): HttpEffect[];
}
