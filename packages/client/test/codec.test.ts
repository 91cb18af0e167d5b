import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { decodeMessage, encodeMessage } from '../src/codec.js';
import { TopGunClient } from '../src/client.js';
import { MemoryStorage } from '../src/storage/memory.js';
import { SyncEngine, type Effect } from '../src/sync/engine.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const C2S = path.resolve(here, '../../../crates/topgun-core/tests/vectors/c2s');

/** Parse vector JSON with the `{"$bin": hex}` convention of tools/protocol-vectors. */
function parseVector(text: string): unknown {
  return JSON.parse(text, (_k, v) => {
    if (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 1 && typeof v.$bin === 'string') {
      return Uint8Array.from(Buffer.from(v.$bin, 'hex'));
    }
    return v;
  });
}

function norm(v: unknown): unknown {
  if (v instanceof Uint8Array) return Array.from(v);
  if (Array.isArray(v)) return v.map(norm);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, norm(x)]));
  return v;
}

const names = readdirSync(C2S).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5));

// The committed client vectors were written by msgpackr (the TS client's encoder). Our codec
// must produce the very same bytes for the same message, and read them back unchanged.
describe('codec against the c2s vectors', () => {
  it('finds the vectors', () => expect(names.length).toBeGreaterThan(50));
  for (const name of names) {
    it(name, () => {
      const msg = parseVector(readFileSync(path.join(C2S, `${name}.json`), 'utf8'));
      const bytes = new Uint8Array(readFileSync(path.join(C2S, `${name}.msgpack`)));
      expect(Buffer.from(encodeMessage(msg)).toString('hex')).toBe(Buffer.from(bytes).toString('hex'));
      expect(norm(decodeMessage(bytes))).toEqual(norm(msg));
    });
  }

  it('strips undefined and turns 64-bit integers into numbers', () => {
    const bytes = encodeMessage({ type: 'X', a: undefined, b: [undefined, 1] });
    expect(decodeMessage(bytes)).toEqual({ type: 'X', b: [null, 1] });
    // uint64 0xcf: what a Rust server sends for HLC millis.
    const rust = Uint8Array.from(Buffer.from('81a16dcf0000018bcfe56800', 'hex'));
    expect(decodeMessage(rust)).toEqual({ m: 1700000000000 });
  });
});

describe('the frames the client builds have the vectors shape', () => {
  const shape = (v: unknown): unknown =>
    v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, shape(x)])) : typeof v;
  const vector = (name: string): Record<string, unknown> => parseVector(readFileSync(path.join(C2S, `${name}.json`), 'utf8')) as Record<string, unknown>;

  it('LWW put, remove, OR add and OR remove ops', async () => {
    const client = new TopGunClient({ storage: new MemoryStorage(), nodeId: 'node-1', watchConnectivity: false });
    await client.ready;
    const sent: unknown[] = [];
    // Read the op log through the engine's replica view, exactly what OP_BATCH carries.
    client.getMap('users').set('user:alice', { name: 'a' });
    client.getMap('users').remove('user:bob');
    client.getORMap('todos').add('list-1', 'x');
    client.getORMap('todos').remove('list-1', 'x');
    const ops = (client as unknown as { ops: { after(a: number, l: number): { op: unknown }[] } }).ops;
    for (const o of ops.after(0, 10)) sent.push(o.op);
    const op = (name: string) => (vector(name).payload as Record<string, unknown>);
    expect(Object.keys(sent[0] as object)).toEqual(Object.keys(op('CLIENT_OP__lww_put')));
    expect(Object.keys((sent[0] as { record: object }).record)).toEqual(['value', 'timestamp']);
    expect(shape((sent[0] as { record: { timestamp: unknown } }).record.timestamp)).toEqual({ millis: 'number', counter: 'number', nodeId: 'string' });
    expect(Object.keys(sent[1] as object)).toEqual(Object.keys(op('CLIENT_OP__lww_remove')));
    expect((sent[1] as { record: { value: unknown } }).record.value).toBeNull();
    expect(Object.keys(sent[2] as object)).toEqual(['id', 'mapName', 'key', 'opType', 'orRecord']);
    expect(Object.keys((sent[2] as { orRecord: object }).orRecord)).toEqual(['value', 'timestamp', 'tag']);
    expect(Object.keys(sent[3] as object)).toEqual(Object.keys(op('CLIENT_OP__or_remove')));
    await client.close();
  });

  it('SYNC_INIT is flat, like the vector', () => {
    const engine = new SyncEngine(
      { tree: () => { throw new Error('unused'); }, orEntries: () => [], pendingOps: () => [], lastSyncMillis: () => 1700000000000 },
      { hasServer: true, hasToken: true },
    );
    engine.addMap('lww', 'users');
    engine.start(0);
    engine.socketOpened(1);
    const out: Effect[] = [...engine.tokenReady('t', 2), ...engine.message({ type: 'AUTH_ACK' }, 3)];
    const init = out.find((e) => e.kind === 'send' && e.message.type === 'SYNC_INIT');
    expect(init).toEqual({ kind: 'send', message: vector('SYNC_INIT') });
  });
});
