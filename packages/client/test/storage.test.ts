import 'fake-indexeddb/auto';
import { describe, expect, it } from 'vitest';
import { IndexedDBStorage } from '../src/storage/indexeddb.js';
import { MemoryStorage } from '../src/storage/memory.js';
import type { StorageAdapter, StoredOp, StoredRecord } from '../src/storage/types.js';

let dbCounter = 0;
const adapters: [string, () => StorageAdapter][] = [
  ['MemoryStorage', () => new MemoryStorage()],
  ['IndexedDBStorage', () => new IndexedDBStorage({ name: `test-${++dbCounter}` })],
];

const ts = { millis: 1, counter: 0, nodeId: 'n' };
const rec = (key: string, value: unknown): StoredRecord => ({ kind: 'lww', mapName: 'm', key, record: { value, timestamp: ts } });
const op = (seq: number, key: string): StoredOp => ({ seq, op: { id: String(seq), mapName: 'm', key, opType: 'PUT', record: { value: key, timestamp: ts } } });

// One contract, two implementations: every test runs against both.
for (const [name, make] of adapters) {
  describe(name, () => {
    it('a record and its op-log entry are stored and read back together', async () => {
      const s = make();
      await s.commit({ records: [rec('a', 1)], ops: [op(10, 'a')], meta: { x: 1 } });
      const snap = await s.load();
      expect(snap.records).toEqual([rec('a', 1)]);
      expect(snap.ops).toEqual([op(10, 'a')]);
      expect(snap.meta).toEqual({ x: 1 });
    });

    it('op-log atomicity: a commit that fails stores neither the record nor the op', async () => {
      const s = make();
      await s.commit({ records: [rec('a', 1)], ops: [op(1, 'a')] });
      // A function cannot be cloned into storage: the whole commit must fail and change nothing.
      await expect(s.commit({ records: [rec('b', 2), rec('c', () => 0)], ops: [op(2, 'b')] })).rejects.toThrow();
      const snap = await s.load();
      expect(snap.records.map((r) => r.key)).toEqual(['a']);
      expect(snap.ops.map((o) => o.seq)).toEqual([1]);
    });

    it('deletes acknowledged ops up to a seq, and single ops', async () => {
      const s = make();
      await s.commit({ ops: [op(1, 'a'), op(2, 'b'), op(3, 'c'), op(4, 'd')] });
      await s.commit({ deleteOpsUpTo: 2, deleteOps: [4] });
      expect((await s.load()).ops.map((o) => o.seq)).toEqual([3]);
    });

    it('ops come back in seq order; records of one map can be cleared', async () => {
      const s = make();
      await s.commit({ ops: [op(30, 'a'), op(4, 'b'), op(200, 'c')] });
      await s.commit({ records: [rec('a', 1), { kind: 'lww', mapName: 'other', key: 'z', record: { value: 2, timestamp: ts } }] });
      await s.clearMap('lww', 'm');
      const snap = await s.load();
      expect(snap.ops.map((o) => o.seq)).toEqual([4, 30, 200]);
      expect(snap.records.map((r) => r.key)).toEqual(['z']);
    });

    it('deleteRecords removes pruned tombstones', async () => {
      const s = make();
      await s.commit({ records: [rec('a', null), rec('b', 1)] });
      await s.commit({ deleteRecords: [['lww', 'm', 'a']] });
      expect((await s.load()).records.map((r) => r.key)).toEqual(['b']);
    });
  });
}
