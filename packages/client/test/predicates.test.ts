import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { compileFilter, PredicateError, type QueryFilter } from '../src/crdt/predicate.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const file = path.resolve(here, '../../../crates/topgun-core/tests/vectors/predicates.json');
const vectors = JSON.parse(readFileSync(file, 'utf8')) as {
  records: Record<string, unknown>;
  cases: { name: string; record: string; query: QueryFilter; expected: boolean }[];
  refused: { name: string; query: QueryFilter }[];
};

// The same file the Rust core's tests/predicates.rs runs: both evaluators must agree.
describe('predicates.json: selection cases', () => {
  it('has the cases the Rust tests run', () => {
    expect(vectors.cases.length).toBeGreaterThanOrEqual(55);
  });
  for (const c of vectors.cases) {
    it(c.name, () => {
      expect(compileFilter(c.query)(vectors.records[c.record])).toBe(c.expected);
    });
  }
});

describe('predicates.json: refused queries', () => {
  for (const c of vectors.refused) {
    it(c.name, () => {
      expect(() => compileFilter(c.query)).toThrow(PredicateError);
    });
  }
});
