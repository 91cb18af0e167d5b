/** TopGun's write-concern levels, as a value (`WriteConcern.PERSISTED`) and a type. */
import type { WriteConcern as WireWriteConcern } from './protocol.js';

export const WriteConcern = {
  FIRE_AND_FORGET: 'FIRE_AND_FORGET',
  MEMORY: 'MEMORY',
  APPLIED: 'APPLIED',
  REPLICATED: 'REPLICATED',
  PERSISTED: 'PERSISTED',
} as const satisfies Record<WireWriteConcern, WireWriteConcern>;
export type WriteConcern = WireWriteConcern;
