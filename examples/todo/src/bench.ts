/**
 * Browser benchmarks, driven by tests/e2e/bench.mjs through Playwright. Each function runs in
 * the page with the real IndexedDB adapter and (for sync) the real server.
 */
import { IndexedDBStorage, MemoryStorage, TopGunClient } from '@topgun-rs/client';

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Latency of `map.set` (the call itself) and of reaching IndexedDB (`flush`). */
async function setLatency(n: number): Promise<Record<string, number>> {
  const client = new TopGunClient({ storage: new IndexedDBStorage({ name: `bench-set-${Date.now()}` }), backpressure: { maxPendingOps: n + 1000 } });
  await client.ready;
  const map = client.getMap<{ title: string; n: number }>('bench');
  for (let i = 0; i < 200; i++) map.set(`warm-${i}`, { title: 'warm', n: i });
  await client.flush();
  const times: number[] = [];
  const start = performance.now();
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    map.set(`key-${i}`, { title: `todo ${i}`, n: i });
    times.push(performance.now() - t0);
  }
  const callsMs = performance.now() - start;
  await client.flush();
  const durableMs = performance.now() - start;
  times.sort((a, b) => a - b);
  // One awaited write at a time: the latency until the record and its op are in IndexedDB.
  const persisted: number[] = [];
  for (let i = 0; i < 200; i++) {
    const t0 = performance.now();
    map.set(`p-${i}`, { title: 'p', n: i });
    await client.flush();
    persisted.push(performance.now() - t0);
  }
  persisted.sort((a, b) => a - b);
  await client.close();
  return {
    n,
    mean_us: +((callsMs / n) * 1000).toFixed(1),
    p50_us: Math.round(percentile(times, 50) * 1000),
    p99_us: Math.round(percentile(times, 99) * 1000),
    max_us: Math.round(times[times.length - 1]! * 1000),
    calls_ms: Math.round(callsMs),
    all_durable_ms: Math.round(durableMs),
    persisted_p50_ms: +percentile(persisted, 50).toFixed(2),
    persisted_p99_ms: +percentile(persisted, 99).toFixed(2),
  };
}

/** Time for an empty client to Merkle-sync `expected` records of `mapName` from the server. */
async function syncTime(serverUrl: string, mapName: string, expected: number, storageKind: 'idb' | 'memory' = 'idb'): Promise<Record<string, number | string>> {
  const storage = storageKind === 'idb' ? new IndexedDBStorage({ name: `bench-sync-${Date.now()}` }) : new MemoryStorage();
  const start = performance.now();
  const client = new TopGunClient({ serverUrl, storage });
  await client.ready;
  const readyMs = performance.now() - start;
  // When the bucket walk and the leaves finished, to see where the time goes.
  const marks: Record<string, number> = {};
  let frames = 0;
  client.on('message', (m) => {
    frames++;
    const t = Math.round(performance.now() - start);
    if (marks[m.type] === undefined) marks[m.type] = t;
    marks[`last_${m.type}`] = t;
  });
  const map = client.getMap(mapName);
  // Resolve on the map-synced event, not by polling (entries() is O(n)).
  await new Promise<void>((resolve) => {
    const off = client.on('mapSynced', (s) => {
      if (s.mapName === mapName) {
        off();
        resolve();
      }
    });
  });
  const inMemoryMs = performance.now() - start;
  await client.flush();
  const persistedMs = performance.now() - start;
  const size = map.size;
  await client.close();
  if (size < expected) throw new Error(`synced only ${size} of ${expected} records`);
  return {
    storage: storageKind,
    records: size,
    frames_received: frames,
    last_bucket_ms: marks.last_SYNC_RESP_BUCKETS ?? 0,
    last_leaf_ms: marks.last_SYNC_RESP_LEAF ?? 0,
    ready_ms: Math.round(readyMs),
    in_memory_ms: Math.round(inMemoryMs),
    persisted_ms: Math.round(persistedMs),
  };
}

Object.assign(window, { setLatency, syncTime });
document.getElementById('out')!.textContent = 'ready';
