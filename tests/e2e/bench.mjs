#!/usr/bin/env node
// Browser benchmarks of the TypeScript client in headless Chromium (not part of the test suite):
//   1. map.set latency with IndexedDB persistence (p50/p99 of the call; p50/p99 until durable);
//   2. time for an empty browser client to Merkle-sync 10,000 records from the real server.
// Usage (after `npm run build`): TOPGUN_SERVER_BIN=... node tests/e2e/bench.mjs [--records 10000] [--sets 5000]
// Prints one JSON line per measurement and a summary.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, createReadStream, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir, cpus } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { chromium } from 'playwright-core';
import { MemoryStorage, TopGunClient } from '../../packages/client/dist/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../..');
const args = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const RECORDS = arg('records', 10_000);
const SETS = arg('sets', 5_000);

function startServer() {
  const bin = process.env.TOPGUN_SERVER_BIN ?? path.join(repo, 'target/debug/topgun-server');
  if (!existsSync(bin)) throw new Error(`no server binary at ${bin}`);
  const dataDir = mkdtempSync(path.join(tmpdir(), 'topgun-bench-'));
  const child = spawn(bin, ['--port', '0', '--data-dir', dataDir], { env: { PATH: process.env.PATH, TOPGUN_NO_AUTH: '1', RUST_LOG: 'warn' }, stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (c) => {
      out += c;
      const m = /PORT=(\d+)/.exec(out);
      if (m) resolve({ url: `ws://127.0.0.1:${m[1]}/ws`, stop: () => { child.kill('SIGTERM'); rmSync(dataDir, { recursive: true, force: true }); } });
    });
    child.once('exit', (code) => reject(new Error(`server exited ${code}`)));
  });
}

function serve(root) {
  const server = createServer((req, res) => {
    const p = path.join(root, new URL(req.url, 'http://x').pathname);
    const file = existsSync(p) && statSync(p).isFile() ? p : path.join(root, 'index.html');
    const type = file.endsWith('.js') ? 'text/javascript' : file.endsWith('.html') ? 'text/html' : 'application/octet-stream';
    // Cross-origin isolation makes performance.now() precise to 5 µs instead of 100 µs.
    res.writeHead(200, { 'content-type': type, 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' });
    createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ origin: `http://127.0.0.1:${server.address().port}`, stop: () => server.close() })));
}

const server = await startServer();
const web = await serve(path.join(repo, 'examples/todo/dist'));
const executablePath = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
const browser = await chromium.launch({ executablePath, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
try {
  // Seed the server from Node (the same client code, MemoryStorage, ws).
  const seeder = new TopGunClient({ serverUrl: server.url, storage: new MemoryStorage(), WebSocket, watchConnectivity: false, backpressure: { maxPendingOps: RECORDS + 1 } });
  const map = seeder.getMap('bench10k');
  for (let i = 0; i < RECORDS; i++) map.set(`todo-${i}`, { title: `Todo number ${i}`, done: i % 3 === 0, createdAt: 1_700_000_000_000 + i });
  const seedStart = Date.now();
  while (seeder.getSyncState().pendingOps > 0) await new Promise((r) => setTimeout(r, 20));
  console.log(JSON.stringify({ bench: 'seed', records: RECORDS, ms: Date.now() - seedStart }));
  await seeder.close();

  const page = await (await browser.newContext()).newPage();
  await page.goto(`${web.origin}/bench.html`);
  await page.waitForFunction(() => document.getElementById('out')?.textContent === 'ready');
  console.log(JSON.stringify({ crossOriginIsolated: await page.evaluate(() => window.crossOriginIsolated) }));
  const results = {};
  for (let run = 1; run <= 3; run++) {
    const set = await page.evaluate((n) => window.setLatency(n), SETS);
    console.log(JSON.stringify({ bench: 'map.set', run, ...set }));
    const sync = await page.evaluate(([url, n]) => window.syncTime(url, 'bench10k', n, 'idb'), [server.url, RECORDS]);
    console.log(JSON.stringify({ bench: 'sync', run, ...sync }));
    const syncMem = await page.evaluate(([url, n]) => window.syncTime(url, 'bench10k', n, 'memory'), [server.url, RECORDS]);
    console.log(JSON.stringify({ bench: 'sync', run, ...syncMem }));
    results[run] = { set, sync };
  }
  const version = browser.version();
  console.log(JSON.stringify({ chromium: version, nproc: cpus().length, cpu: cpus()[0]?.model, date: new Date().toISOString() }));
} finally {
  await browser.close();
  web.stop();
  server.stop();
}
