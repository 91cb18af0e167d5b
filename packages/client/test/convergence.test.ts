/**
 * Seeded, randomized convergence against the real server: three clients write and remove on
 * shared LWW and OR maps while going offline and online at random; at the end every replica,
 * and a fresh client that syncs from scratch, holds the same state. Replay a failure with
 * TOPGUN_SEED=<seed printed below>.
 */
import WebSocket from 'ws';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { TopGunClient, type WebSocketFactory } from '../src/client.js';
import { MemoryStorage } from '../src/storage/memory.js';
import { startServer, type RunningServer } from './support/server.js';
import { waitFor } from './support/wait.js';
import { rng } from './support/rng.js';

let server: RunningServer;
const clients: TopGunClient[] = [];

beforeAll(async () => {
  server = await startServer();
});
afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await server?.stop();
});


const make = (): TopGunClient => {
  const c = new TopGunClient({
    serverUrl: server.url,
    storage: new MemoryStorage(),
    WebSocket: WebSocket as unknown as WebSocketFactory,
    watchConnectivity: false,
    backoff: { initialMs: 20, maxMs: 200 },
  });
  clients.push(c);
  return c;
};

const snapshot = (c: TopGunClient) => ({
  lww: JSON.stringify(c.getMap('conv-lww').entries().sort(([a], [b]) => (a < b ? -1 : 1))),
  or: JSON.stringify(c.getORMap('conv-or').entries().map(([k, v]) => [k, [...v].sort()]).sort(([a], [b]) => ((a as string) < (b as string) ? -1 : 1))),
  roots: [c.getMap('conv-lww').rootHash, c.getORMap('conv-or').rootHash],
});

it('replicas converge under random writes, removes and disconnections', async () => {
  const seed = Number(process.env.TOPGUN_SEED ?? Math.floor(Math.random() * 2 ** 31));
  console.log(`convergence seed: ${seed} (replay: TOPGUN_SEED=${seed})`);
  const next = rng(seed);
  const replicas = [make(), make(), make()];
  for (const c of replicas) {
    c.getMap('conv-lww');
    c.getORMap('conv-or');
  }
  await waitFor('all connected', () => replicas.every((c) => c.getSyncState().state === 'connected'));
  for (let step = 0; step < 300; step++) {
    const c = replicas[Math.floor(next() * replicas.length)]!;
    const key = `k${Math.floor(next() * 15)}`;
    const r = next();
    if (r < 0.05) c.setOnline(!c.getSyncState().online);
    else if (r < 0.45) c.getMap<number>('conv-lww').set(key, step);
    else if (r < 0.6) c.getMap('conv-lww').remove(key);
    else if (r < 0.85) c.getORMap<string>('conv-or').add(key, `v${Math.floor(next() * 4)}`);
    else c.getORMap<string>('conv-or').remove(key, `v${Math.floor(next() * 4)}`);
    if (step % 25 === 0) await new Promise((res) => setTimeout(res, 10)); // let traffic interleave
  }
  for (const c of replicas) if (!c.getSyncState().online) c.setOnline(true);
  await waitFor('all drained', () => replicas.every((c) => c.getSyncState().pendingOps === 0 && c.getSyncState().state === 'connected'), 20_000);
  // No forced resync: events and the reconnect-time Merkle syncs alone must get everyone there.
  await waitFor('converged', () => {
    const s = replicas.map((c) => JSON.stringify(snapshot(c)));
    return s.every((x) => x === s[0]);
  }, 20_000);
  const fresh = make();
  fresh.getMap('conv-lww');
  fresh.getORMap('conv-or');
  await waitFor('fresh client synced', () => fresh.getSyncState().state === 'connected' && JSON.stringify(snapshot(fresh)) === JSON.stringify(snapshot(replicas[0]!)), 20_000);
  expect(snapshot(fresh)).toEqual(snapshot(replicas[0]!));
  expect(replicas[0]!.getMap('conv-lww').size).toBeGreaterThan(0);
}, 60_000);
