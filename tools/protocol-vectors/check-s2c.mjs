// Checks server→client vectors the way the TopGun TS client reads them.
//
// For every crates/topgun-core/tests/vectors/s2c/NAME.msgpack (written by a
// Rust test) with its NAME.expect.json: msgpackr `unpack`, then the client's
// `deserialize` post-processing (BigInt → Number), then
//   1. fail if a decoded key holds `null` where the expected JSON has no such
//      key (absent vs null matters to the TS client, PROTOCOL.md §1.6);
//   2. assert.deepStrictEqual against the expected JSON (`{"$bin": hex}` = bytes).
// BigInts in the raw decode (uint64/int64 on the wire) are allowed and reported.
//
// Exit 0 when all pass. With no vectors: exit 0, or 1 if REQUIRE_S2C=1.
// S2C_DIR=<dir> overrides the folder (used to test this script).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { unpack } from 'msgpackr';
import {
  VECTORS_DIR,
  convertBigInts,
  findBigInts,
  normalizeBytes,
  parseVectorJson,
} from './lib.mjs';

const S2C_DIR = process.env.S2C_DIR ? path.resolve(process.env.S2C_DIR) : path.join(VECTORS_DIR, 's2c');
const REQUIRE = process.env.REQUIRE_S2C === '1';

function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Uint8Array);
}

/** Paths of keys whose decoded value is null but which the expected value lacks. */
function nullsMissingFromExpected(actual, expected, at = '', found = []) {
  if (Array.isArray(actual) && Array.isArray(expected)) {
    actual.forEach((v, i) => nullsMissingFromExpected(v, expected[i], `${at}[${i}]`, found));
  } else if (isPlainObject(actual) && isPlainObject(expected)) {
    for (const [k, v] of Object.entries(actual)) {
      const p = at ? `${at}.${k}` : k;
      if (v === null && !Object.hasOwn(expected, k)) found.push(p);
      else nullsMissingFromExpected(v, expected[k], p, found);
    }
  }
  return found;
}

function checkOne(name) {
  const expectPath = path.join(S2C_DIR, `${name}.expect.json`);
  if (!fs.existsSync(expectPath)) throw new Error(`missing ${name}.expect.json`);
  const expected = parseVectorJson(fs.readFileSync(expectPath, 'utf8'));

  let raw;
  try {
    raw = unpack(fs.readFileSync(path.join(S2C_DIR, `${name}.msgpack`)));
  } catch (e) {
    throw new Error(`msgpackr cannot decode it: ${e.message}`);
  }
  const bigints = findBigInts(raw);
  const decoded = normalizeBytes(convertBigInts(raw));

  const strayNulls = nullsMissingFromExpected(decoded, expected);
  if (strayNulls.length > 0) {
    throw new Error(`key(s) present as null but absent in expected JSON (absent ≠ null for the TS client): ${strayNulls.join(', ')}`);
  }
  assert.deepStrictEqual(decoded, expected);
  return bigints;
}

function main() {
  const names = fs.existsSync(S2C_DIR)
    ? fs.readdirSync(S2C_DIR).filter((f) => f.endsWith('.msgpack')).map((f) => f.slice(0, -'.msgpack'.length)).sort()
    : [];
  if (names.length === 0) {
    console.log(`check-s2c: no s2c vectors in ${S2C_DIR}${REQUIRE ? ' (REQUIRE_S2C=1: failing)' : ''}`);
    process.exit(REQUIRE ? 1 : 0);
  }

  let passed = 0;
  let failed = 0;
  for (const name of names) {
    try {
      const bigints = checkOne(name);
      const note = bigints.length > 0 ? `BigInt (allowed, converted) at ${bigints.join(', ')}` : 'no BigInt';
      console.log(`ok   ${name} (${note})`);
      passed += 1;
    } catch (e) {
      console.log(`FAIL ${name}: ${e.message.split('\n').join('\n     ')}`);
      failed += 1;
    }
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

main();
