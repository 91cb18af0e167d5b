/**
 * What the driver (client.ts) asks of a sync machine, whichever way it talks to the server:
 * `SyncEngine` over a WebSocket, `HttpSyncEngine` over `POST /sync`. Every call takes the
 * current time where it needs one and returns the effects to carry out, in order.
 */
import type { WireQuery, AnyMessage } from '../protocol.js';
import type { MapKind, SyncState } from './engine.js';
import type { HttpEffect } from './http-engine.js';

export interface SyncMachine {
  readonly state: SyncState;
  /** A live WebSocket session that one-off requests (locks, journal, SQL) can use. */
  readonly isAuthenticated: boolean;
  nextDeadline(): number | undefined;
  start(now: number, online?: boolean): HttpEffect[];
  stop(): HttpEffect[];
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
