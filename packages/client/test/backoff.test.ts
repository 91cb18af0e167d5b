import { describe, expect, it } from 'vitest';
import { backoffDelay, DEFAULT_BACKOFF } from '../src/sync/backoff.js';

describe('backoffDelay', () => {
  it('doubles from 1 s and caps at 30 s (no jitter when random = 0.5)', () => {
    const delays = Array.from({ length: 8 }, (_, i) => backoffDelay(i, DEFAULT_BACKOFF, () => 0.5));
    expect(delays).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  });

  it('jitter spans ×[0.5, 1.5)', () => {
    expect(backoffDelay(2, DEFAULT_BACKOFF, () => 0)).toBe(2000);
    expect(backoffDelay(2, DEFAULT_BACKOFF, () => 0.999999)).toBe(6000);
    expect(backoffDelay(100, DEFAULT_BACKOFF, () => 0)).toBe(15000);
  });

  it('spreads a crowd: 1,000 clients do not reconnect at the same moment', () => {
    let seed = 1;
    const random = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    const delays = new Set(Array.from({ length: 1000 }, () => backoffDelay(3, DEFAULT_BACKOFF, random)));
    expect(delays.size).toBeGreaterThan(900);
    for (const d of delays) expect(d >= 4000 && d < 12000).toBe(true);
  });
});
