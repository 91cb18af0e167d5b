// Shared helpers for the protocol-vector scripts.
//
// `serialize` / `deserialize` reproduce what the TopGun TS client does around
// msgpackr (PROTOCOL.md §1.4): strip `undefined` before `pack`, and turn every
// BigInt into a Number after `unpack`. The JSON helpers implement the `$bin`
// convention used by the `.json` / `.expect.json` files.

import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { pack, unpack } from 'msgpackr';

const here = path.dirname(fileURLToPath(import.meta.url));

/** `crates/topgun-core/tests/vectors`, resolved from this file's location. */
export const VECTORS_DIR = path.resolve(here, '../../crates/topgun-core/tests/vectors');

function isBytes(v) {
  return v instanceof Uint8Array; // Buffer is a Uint8Array subclass
}

function isPlainObject(v) {
  if (v === null || typeof v !== 'object') return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/**
 * The client's undefined-stripping: object properties whose value is
 * `undefined` are removed, `undefined` array elements and a top-level
 * `undefined` become `null`. Bytes (and any other non-plain object such as a
 * Date) pass through untouched, exactly as msgpackr would see them.
 */
export function stripUndefined(value) {
  if (value === undefined) return null;
  if (Array.isArray(value)) return value.map(stripUndefined);
  if (isPlainObject(value)) {
    const out = {};
    for (const [k, v] of Object.entries(value)) {
      if (v !== undefined) out[k] = stripUndefined(v);
    }
    return out;
  }
  return value;
}

/** TS client `serialize()`: strip undefined, then module-level `msgpackr.pack`. */
export function serialize(value) {
  return pack(stripUndefined(value));
}

/** Recursively convert BigInt to Number (TS client `deserialize` post-processing). */
export function convertBigInts(value) {
  if (typeof value === 'bigint') return Number(value);
  if (Array.isArray(value)) return value.map(convertBigInts);
  if (isPlainObject(value)) {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = convertBigInts(v);
    return out;
  }
  return value;
}

/** TS client `deserialize()`: `msgpackr.unpack`, then BigInt → Number. */
export function deserialize(bytes) {
  return convertBigInts(unpack(bytes));
}

/** Paths (`a.b[0].c`) of every BigInt inside a freshly unpacked value. */
export function findBigInts(value, at = '', found = []) {
  if (typeof value === 'bigint') found.push(at || '(root)');
  else if (Array.isArray(value)) value.forEach((v, i) => findBigInts(v, `${at}[${i}]`, found));
  else if (isPlainObject(value)) {
    for (const [k, v] of Object.entries(value)) findBigInts(v, at ? `${at}.${k}` : k, found);
  }
  return found;
}

/** `JSON.stringify(obj, null, 2)` with bytes written as `{"$bin": "<lowercase hex>"}`. */
export function toVectorJson(value) {
  const text = JSON.stringify(
    value,
    function replacer(key, v) {
      const raw = this[key]; // before any toJSON (Buffer has one)
      if (isBytes(raw)) return { $bin: Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('hex') };
      return v;
    },
    2,
  );
  return `${text}\n`;
}

/** Parse vector JSON, turning `{"$bin": hex}` (and only that exact shape) into a Buffer. */
export function parseVectorJson(text) {
  return JSON.parse(text, (_key, v) => {
    if (isPlainObject(v) && Object.keys(v).length === 1 && typeof v.$bin === 'string') {
      if (!/^([0-9a-f]{2})*$/.test(v.$bin)) throw new Error(`bad $bin hex: ${v.$bin}`);
      return Buffer.from(v.$bin, 'hex');
    }
    return v;
  });
}

/** Make every Uint8Array a Buffer so deepStrictEqual compares bytes, not prototypes. */
export function normalizeBytes(value) {
  if (isBytes(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (Array.isArray(value)) return value.map(normalizeBytes);
  if (isPlainObject(value)) {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = normalizeBytes(v);
    return out;
  }
  return value;
}
