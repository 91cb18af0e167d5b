/**
 * `Predicates`: builds the `PredicateNode` trees a query's `predicate` takes, with TopGun's
 * builder names. Every node here is one the server evaluates and the client evaluates locally
 * with the same semantics (crdt/predicate.ts).
 */
import type { PredicateNode } from './predicate.js';

const cmp = (op: string) => (attribute: string, value: unknown): PredicateNode => ({ op, attribute, value });

export const Predicates = {
  equal: cmp('eq'),
  notEqual: cmp('neq'),
  greaterThan: cmp('gt'),
  greaterThanOrEqual: cmp('gte'),
  lessThan: cmp('lt'),
  lessThanOrEqual: cmp('lte'),
  /** SQL pattern: `%` any run, `_` one character; case-insensitive. */
  like: (attribute: string, pattern: string): PredicateNode => ({ op: 'like', attribute, value: pattern }),
  regex: (attribute: string, pattern: string): PredicateNode => ({ op: 'regex', attribute, value: pattern }),
  /** Inclusive range, as TopGun builds it: `gte` and `lte` together. */
  between: (attribute: string, from: unknown, to: unknown): PredicateNode => ({
    op: 'and',
    children: [
      { op: 'gte', attribute, value: from },
      { op: 'lte', attribute, value: to },
    ],
  }),
  /** The field's value is one of `values`. */
  isIn: (attribute: string, values: unknown[]): PredicateNode => ({ op: 'in', attribute, value: values }),
  isNull: (attribute: string): PredicateNode => ({ op: 'isNull', attribute }),
  isNotNull: (attribute: string): PredicateNode => ({ op: 'isNotNull', attribute }),
  startsWith: (attribute: string, prefix: string): PredicateNode => ({ op: 'startsWith', attribute, value: prefix }),
  endsWith: (attribute: string, suffix: string): PredicateNode => ({ op: 'endsWith', attribute, value: suffix }),
  /** The field (an array) holds every one of `values`. */
  containsAll: (attribute: string, values: unknown[]): PredicateNode => ({ op: 'containsAll', attribute, value: values }),
  /** The field (an array) holds at least one of `values`. */
  containsAny: (attribute: string, values: unknown[]): PredicateNode => ({ op: 'containsAny', attribute, value: values }),
  and: (...children: PredicateNode[]): PredicateNode => ({ op: 'and', children }),
  or: (...children: PredicateNode[]): PredicateNode => ({ op: 'or', children }),
  not: (child: PredicateNode): PredicateNode => ({ op: 'not', children: [child] }),
} as const;
