import { describe, expect, it } from 'vitest';
import { combine, fnv1a, mix, partitionId } from '../src/crdt/hash.js';

// PROTOCOL.md §3.1-§3.2: computed by two implementations; the Rust core pins the same values.
describe('fnv1a over UTF-16 code units', () => {
  const cases: [string, number, number][] = [
    ['', 2166136261, 199],
    ['hello', 1335831723, 95],
    ['foo', 2851307223, 235],
    ['key1', 927623783, 268],
    ['user:alice', 927278352, 91],
    ['a', 3826002220, 101],
    ['key1:100:0:test', 3988528110, 245],
    ['€', 2839424075, 166],
    ['😀', 3409036472, 102],
  ];
  for (const [input, hash, partition] of cases) {
    it(`${JSON.stringify(input)} → ${hash}, partition ${partition}`, () => {
      expect(fnv1a(input)).toBe(hash);
      expect(partitionId(input)).toBe(partition);
    });
  }
});

describe('mix and combine', () => {
  it('matches the pinned vectors', () => {
    expect(mix(0)).toBe(0);
    expect(mix(1)).toBe(1364076727);
    expect(mix(5)).toBe(3423425485);
    expect(combine([100, 200])).toBe(0xbc1dab1c);
    expect(combine([0xffffffff, 0xffffffff, 0xffffffff])).toBe(0x85d44dab);
    expect(combine([])).toBe(0);
  });

  it('is order-independent and additive', () => {
    expect(combine([1, 2, 3])).toBe(combine([3, 1, 2]));
    expect((combine([1, 2]) + combine([3])) >>> 0).toBe(combine([1, 2, 3]));
  });
});
