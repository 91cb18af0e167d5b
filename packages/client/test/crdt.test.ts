import { describe, expect, it } from 'vitest';
import { HLC, compareTimestamps, parseTimestamp, timestampToString } from '../src/crdt/hlc.js';
import { LWWMap, type LWWRecord } from '../src/crdt/lww-map.js';
import { ORMap, type ORMapEntry } from '../src/crdt/or-map.js';
import { PNCounter, readCounterState } from '../src/crdt/pn-counter.js';
import { rng } from './support/rng.js';

const ts = (millis: number, counter = 0, nodeId = 'n1') => ({ millis, counter, nodeId });


describe('HLC (PROTOCOL §2.1)', () => {
  it('now(): wall clock ahead resets the counter; otherwise the counter grows', () => {
    let wall = 1000;
    const h = new HLC('a', () => wall);
    expect(h.now()).toEqual(ts(1000, 0, 'a'));
    expect(h.now()).toEqual(ts(1000, 1, 'a'));
    wall = 999; // clock went back: still monotonic
    expect(h.now()).toEqual(ts(1000, 2, 'a'));
    wall = 1001;
    expect(h.now()).toEqual(ts(1001, 0, 'a'));
  });

  it('update(remote): the four cases of the counter rule', () => {
    let wall = 100;
    const h = new HLC('a', () => wall);
    h.now(); // (100, 0)
    h.update(ts(100, 5, 'b')); // shared max → max(0, 5) + 1
    expect(h.now()).toEqual(ts(100, 7, 'a'));
    h.update(ts(50, 9, 'b')); // local alone holds the max → local + 1
    expect(h.now()).toEqual(ts(100, 9, 'a'));
    h.update(ts(200, 3, 'b')); // remote alone → remote + 1
    expect(h.now()).toEqual(ts(200, 5, 'a'));
    wall = 300;
    h.update(ts(250, 3, 'b')); // wall strictly ahead → 0
    expect(h.now()).toEqual(ts(300, 1, 'a'));
  });

  it('refuses node ids with a colon; strings round-trip', () => {
    expect(() => new HLC('a:b')).toThrow();
    expect(parseTimestamp(timestampToString(ts(1700000000000, 3, 'x-y')))).toEqual(ts(1700000000000, 3, 'x-y'));
    expect(() => parseTimestamp('1:2')).toThrow();
    expect(compareTimestamps(ts(1, 0, 'a'), ts(1, 0, 'b'))).toBe(-1);
  });
});

describe('LWW-Map', () => {
  it('strictly newer wins; a tombstone beats an older write but not a newer one', () => {
    const m = new LWWMap();
    expect(m.merge('k', { value: 'a', timestamp: ts(2) })).toBe(true);
    expect(m.merge('k', { value: 'b', timestamp: ts(2) })).toBe(false);
    expect(m.merge('k', { value: 'old', timestamp: ts(1) })).toBe(false);
    expect(m.merge('k', { value: null, timestamp: ts(3) })).toBe(true);
    expect(m.get('k')).toBeUndefined();
    expect(m.merge('k', { value: 'c', timestamp: ts(4) })).toBe(true);
    expect(m.get('k')).toBe('c');
  });

  it('TTL hides expired records; prune drops only old tombstones', () => {
    const m = new LWWMap();
    m.merge('t', { value: 1, timestamp: ts(1000), ttlMs: 50 });
    expect(m.get('t', 1049)).toBe(1);
    expect(m.get('t', 1051)).toBeUndefined();
    m.merge('dead', { value: null, timestamp: ts(10) });
    m.merge('dead2', { value: null, timestamp: ts(500) });
    expect(m.prune(ts(100))).toEqual(['dead']);
    expect(m.merkle.rootHash).toBe(m.merkle.recomputedRoot());
  });

  it('replicas converge under random delivery order and duplication (seed 42)', () => {
    const next = rng(42);
    const writes: [string, LWWRecord][] = [];
    for (let i = 0; i < 400; i++) {
      writes.push([`k${Math.floor(next() * 40)}`, { value: next() < 0.2 ? null : i, timestamp: ts(Math.floor(next() * 100), Math.floor(next() * 3), `n${Math.floor(next() * 4)}`) }]);
    }
    const replicas = [0, 1, 2, 3].map(() => new LWWMap());
    for (const r of replicas) {
      const order = [...writes, ...writes.filter(() => next() < 0.3)].sort(() => next() - 0.5);
      for (const [k, rec] of order) r.merge(k, rec);
    }
    const dump = (m: LWWMap) => JSON.stringify([...m.allRecords()].sort(([a], [b]) => (a < b ? -1 : 1)));
    for (const r of replicas) {
      expect(dump(r)).toBe(dump(replicas[0]!));
      expect(r.merkle.rootHash).toBe(replicas[0]!.merkle.rootHash);
    }
  });
});

describe('OR-Map', () => {
  it('remove tombstones only the observed tags; a concurrent add survives', () => {
    const a = new ORMap<string>();
    const b = new ORMap<string>();
    a.apply('k', { value: 'x', timestamp: ts(1, 0, 'a'), tag: '1:0:a' });
    b.mergeEntry(a.entry('k'));
    b.apply('k', { value: 'x', timestamp: ts(2, 0, 'b'), tag: '2:0:b' }); // concurrent add of the same value
    for (const tag of a.tagsOf('k', 'x')) a.removeTag('k', tag);
    a.mergeEntry(b.entry('k'));
    b.mergeEntry(a.entry('k'));
    expect(a.get('k')).toEqual(['x']);
    expect(b.get('k')).toEqual(['x']);
    expect(a.getRecords('k').map((r) => r.tag)).toEqual(['2:0:b']);
    expect(a.merkle.rootHash).toBe(b.merkle.rootHash);
  });

  it('a tombstone that arrives before its add keeps the add out', () => {
    const m = new ORMap();
    m.removeTag('k', '5:0:z');
    expect(m.apply('k', { value: 1, timestamp: ts(5, 0, 'z'), tag: '5:0:z' })).toBe(false);
    expect(m.get('k')).toEqual([]);
  });

  it('entries merge commutatively (seed 9)', () => {
    const next = rng(9);
    const entries: ORMapEntry[] = [];
    for (let i = 0; i < 200; i++) {
      const tag = `${i}:0:n${i % 3}`;
      entries.push({ key: `k${i % 10}`, records: [{ value: i % 4, timestamp: ts(i, 0, `n${i % 3}`), tag }], tombstones: next() < 0.3 ? [`${Math.floor(next() * i)}:0:n${Math.floor(next() * 3)}`] : [] });
    }
    const x = new ORMap();
    const y = new ORMap();
    for (const e of entries) x.mergeEntry(e);
    for (const e of [...entries].reverse()) y.mergeEntry(e);
    for (const k of new Set([...x.keys(), ...y.keys()])) expect(x.get(k).sort()).toEqual(y.get(k).sort());
    expect(x.merkle.rootHash).toBe(y.merkle.rootHash);
  });
});

describe('PN counter', () => {
  it('merges by per-node maximum and reads both spellings', () => {
    const a = new PNCounter('a');
    a.add(5);
    a.add(-2);
    expect(a.value).toBe(3);
    expect(a.merge(readCounterState({ positive: { b: 4 }, negative: {} }))).toBe(true);
    expect(a.merge(readCounterState({ p: { a: 1, b: 4 }, n: { a: 2 } }))).toBe(false); // nothing newer
    expect(a.value).toBe(7);
    expect(a.getState()).toEqual({ p: { a: 5, b: 4 }, n: { a: 2 } });
  });
});
