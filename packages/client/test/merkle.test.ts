import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { LWWMap, lwwItemHash } from '../src/crdt/lww-map.js';
import { MerkleTree } from '../src/crdt/merkle.js';
import { ORMap, type ORMapRecord } from '../src/crdt/or-map.js';
import { rng } from './support/rng.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** Our independent JS model of the client's Merkle roots, the one the Rust server tests use. */
const ORACLE = path.resolve(here, '../../../tools/protocol-vectors/merkle-root.mjs');

function oracle(input: unknown): { lww: { root: number; buckets: Record<string, number> }; or: { root: number; buckets: Record<string, number> } } {
  return JSON.parse(execFileSync('node', [ORACLE], { input: JSON.stringify(input) }).toString());
}


describe('Merkle tree: PROTOCOL §3.4-§3.5 vectors', () => {
  it('single key', () => {
    const t = new MerkleTree();
    const h = lwwItemHash('alice', { millis: 1700000000000, counter: 0, nodeId: 'n1' });
    expect(h).toBe(3608504158);
    t.update('alice', h);
    expect(t.nodeHash('872')).toBe(4166413597);
    expect(t.rootHash).toBe(3716192681);
  });

  it('three keys: root and root buckets', () => {
    const m = new LWWMap();
    m.merge('alice', { value: 1, timestamp: { millis: 1700000000000, counter: 0, nodeId: 'n1' } });
    m.merge('bob', { value: 2, timestamp: { millis: 1700000000001, counter: 0, nodeId: 'n1' } });
    m.merge('carol', { value: 3, timestamp: { millis: 1700000000002, counter: 3, nodeId: 'n2' } });
    expect(m.merkle.rootHash).toBe(2476720979);
    expect(m.merkle.getBuckets('')).toEqual({ '6': 3202217666, '8': 1458996198 });
    expect(m.merkle.getKeysUnder('872')).toEqual(['alice']);
  });

  it('empty tree, and removing the last key leaves hash 0', () => {
    const t = new MerkleTree();
    expect(t.rootHash).toBe(0);
    t.update('alice', 42);
    t.remove('alice');
    expect(t.rootHash).toBe(0);
    expect(t.getBuckets('')).toEqual({ '8': 0 });
  });

  it('incremental hashes equal a from-scratch recomputation under random updates (seed 7)', () => {
    const next = rng(7);
    const t = new MerkleTree();
    for (let i = 0; i < 3000; i++) {
      const key = `k${Math.floor(next() * 500)}`;
      if (next() < 0.2) t.remove(key);
      else t.update(key, Math.floor(next() * 2 ** 32));
    }
    expect(t.rootHash).toBe(t.recomputedRoot());
  });
});

describe('roots agree with tools/protocol-vectors/merkle-root.mjs', () => {
  it('LWW: 400 random keys, root and buckets', () => {
    const next = rng(11);
    const m = new LWWMap();
    const input: { key: string; millis: number; counter: number; nodeId: string }[] = [];
    for (let i = 0; i < 400; i++) {
      const ts = { millis: 1700000000000 + Math.floor(next() * 1e6), counter: Math.floor(next() * 5), nodeId: `node-${i % 7}` };
      const key = `user:${i}:${String.fromCharCode(0x4e00 + i)}`;
      m.merge(key, { value: i % 3 === 0 ? null : { i }, timestamp: ts });
      input.push({ key, ...ts });
    }
    const o = oracle({ lww: input });
    expect(m.merkle.rootHash).toBe(o.lww.root);
    expect(m.merkle.getBuckets('')).toEqual(o.lww.buckets);
  });

  it('OR: entry hashes with nested values, TTLs and removals', () => {
    const next = rng(5);
    const m = new ORMap();
    const values: unknown[] = ['alice', 42, true, null, { b: 1, a: { c: 2, a: 3 } }, [{ x: 1 }, 2], 1.5];
    for (let i = 0; i < 300; i++) {
      const ts = { millis: 1700000000000 + i, counter: i % 3, nodeId: 'n1' };
      const rec: ORMapRecord = { value: values[i % values.length], timestamp: ts, tag: `${ts.millis}:${ts.counter}:${ts.nodeId}` };
      if (i % 11 === 0) rec.ttlMs = 60000;
      m.apply(`k${Math.floor(next() * 120)}`, rec);
    }
    for (const key of m.keys().slice(0, 30)) {
      const [first] = m.getRecords(key);
      if (first) m.removeTag(key, first.tag);
    }
    const or = m.keys().map((key) => ({
      key,
      records: m.getRecords(key).map((r) => ({ tag: r.tag, value: r.value, ...r.timestamp, ...(r.ttlMs === undefined ? {} : { ttlMs: r.ttlMs }) })),
    }));
    const o = oracle({ or });
    expect(m.merkle.rootHash).toBe(o.or.root);
    expect(m.merkle.getBuckets('')).toEqual(o.or.buckets);
  });
});
