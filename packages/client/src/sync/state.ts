/**
 * TopGun's connection states (`SyncState.CONNECTED`, …) and how the engine's own states map to
 * them. The engine keeps finer states (`offline`, `stopped`); `client.getSyncState().state`
 * still reports those. `ERROR` is the engine's `failed`: stopped after `maxAuthFailures` refused
 * tokens, until a new token or `start()`.
 */
import type { EngineState } from './engine.js';

export const SyncState = {
  INITIAL: 'INITIAL',
  CONNECTING: 'CONNECTING',
  AUTHENTICATING: 'AUTHENTICATING',
  SYNCING: 'SYNCING',
  CONNECTED: 'CONNECTED',
  DISCONNECTED: 'DISCONNECTED',
  BACKOFF: 'BACKOFF',
  ERROR: 'ERROR',
} as const;
export type SyncState = (typeof SyncState)[keyof typeof SyncState];

export interface StateChangeEvent {
  from: SyncState;
  to: SyncState;
  timestamp: number;
}

export function toSyncState(state: EngineState): SyncState {
  switch (state) {
    case 'stopped': return SyncState.INITIAL;
    case 'disconnected':
    case 'offline': return SyncState.DISCONNECTED;
    case 'connecting': return SyncState.CONNECTING;
    case 'authenticating': return SyncState.AUTHENTICATING;
    case 'syncing': return SyncState.SYNCING;
    case 'connected': return SyncState.CONNECTED;
    case 'backoff': return SyncState.BACKOFF;
    case 'failed': return SyncState.ERROR;
  }
}

/** Where one record stands with the server (`useSyncState(map, key)`). */
export type RecordSyncState = 'synced' | 'pending' | 'rejected';
