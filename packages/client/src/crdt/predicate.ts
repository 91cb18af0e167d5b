/**
 * Local evaluation of live-query filters (PROTOCOL.md §5.1-§5.2) with the server's semantics, so
 * that a query answers from local data exactly as the server will: `where` (equality, a missing
 * field equals null) and `predicate` (a tree) both apply; comparisons are SQL three-valued (a
 * missing/null field or a null operand is *unknown*, and only *true* selects). The cases both
 * implementations must agree on live in crates/topgun-core/tests/vectors/predicates.json.
 */

export type PredicateOp =
  | 'and' | 'or' | 'not'
  | 'eq' | 'neq' | 'gt' | 'gte' | 'lt' | 'lte'
  | 'like' | 'regex' | 'in' | 'between'
  | 'isNull' | 'isNotNull'
  | 'containsAll' | 'containsAny' | 'contains' | 'startsWith' | 'endsWith';

export interface PredicateNode {
  op: PredicateOp | string;
  attribute?: string;
  value?: unknown;
  valueRef?: string;
  children?: PredicateNode[];
}

export interface SortField {
  field: string;
  direction: 'asc' | 'desc';
}

export interface QueryFilter {
  where?: Record<string, unknown>;
  predicate?: PredicateNode;
}

export class PredicateError extends Error {
  override name = 'PredicateError';
}

/** A compiled filter: `matches(value)` is true only when the filter is definitely true. */
export type CompiledFilter = (record: unknown, auth?: unknown) => boolean;

type Tri = boolean | null; // null = unknown
type Node = (record: unknown, auth: unknown) => Tri;

const PATTERN_MAX = 1024;
const COMPARISONS = new Set(['eq', 'neq', 'gt', 'gte', 'lt', 'lte', 'like', 'regex', 'in', 'between',
  'containsAll', 'containsAny', 'contains', 'startsWith', 'endsWith']);

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Uint8Array);
}

/** A top-level field, or else a dot path into nested maps; undefined when absent. */
export function readAttribute(record: unknown, attribute: string): unknown {
  if (!isObject(record)) return undefined;
  if (Object.prototype.hasOwnProperty.call(record, attribute)) return record[attribute];
  if (!attribute.includes('.')) return undefined;
  let cur: unknown = record;
  for (const part of attribute.split('.')) {
    if (!isObject(cur) || !Object.prototype.hasOwnProperty.call(cur, part)) return undefined;
    cur = cur[part];
  }
  return cur;
}

const isNil = (v: unknown): boolean => v === null || v === undefined;

/** Structural equality with numbers compared by value (3 equals 3.0 — one type in JS anyway). */
export function valueEquals(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a === 'number' && typeof b === 'number') return a === b;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => valueEquals(x, b[i]));
  if (a instanceof Uint8Array && b instanceof Uint8Array) return a.length === b.length && a.every((x, i) => x === b[i]);
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && valueEquals(a[k], b[k]));
  }
  return false;
}

/** Ordering of two operands: numbers by value, strings by UTF-16 code units; else undefined. */
function order(a: unknown, b: unknown): number | undefined {
  if (typeof a === 'number' && typeof b === 'number') return a < b ? -1 : a > b ? 1 : 0;
  if (typeof a === 'string' && typeof b === 'string') return a < b ? -1 : a > b ? 1 : 0;
  return undefined;
}

/** A range test: false (not unknown) when the operands cannot be ordered, as on the server. */
function ordered(test: (o: number) => boolean): (f: unknown, v: unknown) => boolean {
  return (f, v) => {
    const o = order(f, v);
    return o !== undefined && test(o);
  };
}

function likeToRegExp(pattern: string): RegExp {
  let src = '';
  for (const ch of pattern) {
    if (ch === '%') src += '[\\s\\S]*';
    else if (ch === '_') src += '[\\s\\S]';
    else src += ch.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
  }
  return new RegExp(`^${src}$`, 'iu');
}

function compileComparison(node: PredicateNode): Node {
  const { op, attribute } = node;
  if (typeof attribute !== 'string' || attribute === '') throw new PredicateError(`'${op}' needs an attribute`);
  let operand: (record: unknown, auth: unknown) => unknown;
  if (node.valueRef !== undefined) {
    const ref = node.valueRef;
    if (typeof ref !== 'string') throw new PredicateError('valueRef must be a string');
    if (ref.startsWith('data.')) operand = (r) => readAttribute(r, ref.slice(5));
    else if (ref.startsWith('auth.')) operand = (_r, auth) => readAttribute(auth, ref.slice(5));
    else throw new PredicateError(`valueRef must start with data. or auth. (got ${ref})`);
  } else {
    if (!('value' in node) || node.value === undefined) throw new PredicateError(`'${op}' needs a value`);
    const v = node.value;
    operand = () => v;
  }
  const test = comparisonTest(node);
  return (record, auth) => {
    const field = readAttribute(record, attribute);
    const value = operand(record, auth);
    if (isNil(field) || isNil(value)) return null;
    return test(field, value);
  };
}

function comparisonTest(node: PredicateNode): (field: unknown, value: unknown) => boolean {
  const asList = (v: unknown): unknown[] => (Array.isArray(v) ? v : [v]);
  const lowerIncludes = (s: string, part: unknown): boolean =>
    typeof part === 'string' && s.toLowerCase().includes(part.toLowerCase());
  switch (node.op) {
    case 'eq': return (f, v) => valueEquals(f, v);
    case 'neq': return (f, v) => !valueEquals(f, v);
    case 'gt': return ordered((o) => o > 0);
    case 'gte': return ordered((o) => o >= 0);
    case 'lt': return ordered((o) => o < 0);
    case 'lte': return ordered((o) => o <= 0);
    case 'like': {
      if (typeof node.value !== 'string' || node.value.length > PATTERN_MAX) throw new PredicateError("'like' needs a string pattern of at most 1 KiB");
      const re = likeToRegExp(node.value);
      return (f) => typeof f === 'string' && re.test(f);
    }
    case 'regex': {
      if (typeof node.value !== 'string' || node.value.length > PATTERN_MAX) throw new PredicateError("'regex' needs a string pattern of at most 1 KiB");
      let re: RegExp;
      try {
        re = new RegExp(node.value, 'u');
      } catch (e) {
        throw new PredicateError(`bad regex: ${(e as Error).message}`);
      }
      return (f) => typeof f === 'string' && re.test(f);
    }
    case 'in':
      return (f, v) => (Array.isArray(v) ? v.some((x) => valueEquals(f, x)) : Array.isArray(f) && f.some((x) => valueEquals(x, v)));
    case 'between': {
      if (!Array.isArray(node.value) || node.value.length !== 2) throw new PredicateError("'between' needs [low, high]");
      return (f, v) => {
        const [lo, hi] = v as unknown[];
        const a = order(f, lo);
        const b = order(f, hi);
        return a !== undefined && b !== undefined && a >= 0 && b <= 0;
      };
    }
    case 'containsAll':
    case 'containsAny': {
      const all = node.op === 'containsAll';
      return (f, v) => {
        const parts = asList(v);
        const has = Array.isArray(f)
          ? (p: unknown) => f.some((x) => valueEquals(x, p))
          : typeof f === 'string' ? (p: unknown) => lowerIncludes(f, p) : () => false;
        return all ? parts.every(has) : parts.some(has);
      };
    }
    case 'contains':
      return (f, v) => (typeof f === 'string' ? typeof v === 'string' && f.includes(v) : Array.isArray(f) && f.some((x) => valueEquals(x, v)));
    case 'startsWith': return (f, v) => typeof f === 'string' && typeof v === 'string' && f.startsWith(v);
    case 'endsWith': return (f, v) => typeof f === 'string' && typeof v === 'string' && f.endsWith(v);
    default: throw new PredicateError(`unknown operator '${node.op}'`);
  }
}

function compileNode(node: PredicateNode, depth: number): Node {
  if (depth > 64) throw new PredicateError('predicate nested deeper than 64');
  if (!node || typeof node.op !== 'string') throw new PredicateError('a predicate node needs an op');
  const children = (node.children ?? []).map((c) => compileNode(c, depth + 1));
  switch (node.op) {
    case 'and':
      return (r, a) => {
        let unknown = false;
        for (const c of children) {
          const t = c(r, a);
          if (t === false) return false;
          if (t === null) unknown = true;
        }
        return unknown ? null : true;
      };
    case 'or':
      return (r, a) => {
        let unknown = false;
        for (const c of children) {
          const t = c(r, a);
          if (t === true) return true;
          if (t === null) unknown = true;
        }
        return unknown ? null : false;
      };
    case 'not': {
      const first = children[0];
      if (!first) return () => true;
      return (r, a) => {
        const t = first(r, a);
        return t === null ? null : !t;
      };
    }
    case 'isNull':
    case 'isNotNull': {
      const attr = node.attribute;
      if (typeof attr !== 'string' || attr === '') throw new PredicateError(`'${node.op}' needs an attribute`);
      const wantNull = node.op === 'isNull';
      return (r) => isNil(readAttribute(r, attr)) === wantNull;
    }
    default:
      if (!COMPARISONS.has(node.op)) throw new PredicateError(`unknown or unsupported operator '${node.op}' (full-text operators belong to search)`);
      return compileComparison(node);
  }
}

/** Compile `where` + `predicate`; throws PredicateError for what the server would refuse. */
export function compileFilter(filter: QueryFilter): CompiledFilter {
  const where = filter.where ? Object.entries(filter.where) : [];
  const pred = filter.predicate ? compileNode(filter.predicate, 0) : undefined;
  return (record, auth) => {
    for (const [field, expected] of where) {
      const actual = readAttribute(record, field);
      if (isNil(actual) ? !isNil(expected) : !valueEquals(actual, expected)) return false;
    }
    return pred ? pred(record, auth) === true : true;
  };
}

/** Row order of a query: each sort field in turn (missing values last when ascending), then the key. */
export function compareRows(sort: readonly SortField[], a: { key: string; value: unknown }, b: { key: string; value: unknown }): number {
  for (const { field, direction } of sort) {
    const x = readAttribute(a.value, field);
    const y = readAttribute(b.value, field);
    let c: number;
    if (isNil(x) || isNil(y)) c = isNil(x) === isNil(y) ? 0 : isNil(x) ? 1 : -1;
    else c = order(x, y) ?? (typeof x < typeof y ? -1 : typeof x > typeof y ? 1 : 0);
    if (c !== 0) return direction === 'desc' ? -c : c;
  }
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}
