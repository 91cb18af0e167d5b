/** Reconnect delays: exponential with a cap and multiplicative jitter (PROTOCOL.md §6.5). */

export interface BackoffOptions {
  /** First delay (ms). */
  initialMs: number;
  /** Cap (ms) before jitter. */
  maxMs: number;
  /** Growth per attempt. */
  multiplier: number;
  /** Jitter factor range: the delay is scaled by a factor in [1 - jitter, 1 + jitter). */
  jitter: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 1000, maxMs: 30_000, multiplier: 2, jitter: 0.5 };

/**
 * Delay before reconnect attempt `attempt` (0-based). Jitter spreads clients that lost the same
 * server at the same moment, so they do not all come back in the same millisecond.
 */
export function backoffDelay(attempt: number, options: BackoffOptions, random: () => number): number {
  const base = Math.min(options.maxMs, options.initialMs * options.multiplier ** Math.min(attempt, 64));
  const factor = 1 - options.jitter + 2 * options.jitter * random();
  return Math.max(0, Math.round(base * factor));
}
