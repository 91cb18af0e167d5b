/**
 * Wire encoding (PROTOCOL.md §1.4): msgpackr's module-level `pack`/`unpack`, as the TopGun TS
 * client uses them. `undefined` is stripped before packing (absent = optional on the wire) and
 * every 64-bit integer is turned back into a Number after unpacking.
 */
import { pack, unpack } from 'msgpackr';

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object') return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** Remove undefined object properties; undefined array elements become null. */
export function stripUndefined(value: unknown): unknown {
  if (value === undefined) return null;
  if (Array.isArray(value)) return value.map(stripUndefined);
  if (isPlainObject(value)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) if (v !== undefined) out[k] = stripUndefined(v);
    return out;
  }
  return value;
}

function convertBigInts(value: unknown): unknown {
  if (typeof value === 'bigint') return Number(value);
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = convertBigInts(value[i]);
    return value;
  }
  if (isPlainObject(value)) {
    for (const k of Object.keys(value)) value[k] = convertBigInts(value[k]);
    return value;
  }
  return value;
}

export function encodeMessage(message: unknown): Uint8Array {
  return pack(stripUndefined(message));
}

export function decodeMessage(bytes: Uint8Array | ArrayBuffer): unknown {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  return convertBigInts(unpack(view));
}
