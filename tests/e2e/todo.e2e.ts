/**
 * The demo app in two headless Chromium contexts against the real server:
 * live collaboration, an offline period with edits and a reload while offline, convergence,
 * and a lock held by one context and refused to the other. Saves a screenshot of the result.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../packages/client/test/support/server.js';
import { launchChromium } from './chromium.js';
import { serveStatic, type StaticServer } from './static-server.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const DIST = path.resolve(here, '../../examples/todo/dist');
const ARTIFACTS = path.join(here, 'artifacts');

let server: RunningServer;
let web: StaticServer;
let browser: Browser;
let ctxA: BrowserContext;
let ctxB: BrowserContext;
let a: Page;
let b: Page;
let appUrl: string;
/** Uncaught exceptions and `console.error` messages of every page; each test ends with none. */
const pageErrors: string[] = [];

function watchErrors(page: Page, name: string): void {
  page.on('pageerror', (e) => pageErrors.push(`[${name} page error] ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') pageErrors.push(`[${name} console.error] ${m.text()}`);
  });
}

async function titles(page: Page): Promise<string[]> {
  return page.locator('[data-testid="todo"]').evaluateAll((els) =>
    els.map((el) => `${el.querySelector('[data-testid="todo-title"]')!.textContent}${(el.querySelector('input') as HTMLInputElement).checked ? ' ✓' : ''}`),
  );
}

async function add(page: Page, title: string): Promise<void> {
  await page.getByTestId('new-title').fill(title);
  await page.getByTestId('add').click();
}

const syncState = (page: Page) => page.getByTestId('sync-state');

async function open(ctx: BrowserContext, name: string): Promise<Page> {
  const page = await ctx.newPage();
  watchErrors(page, name);
  await page.goto(appUrl);
  await page.waitForFunction(() => document.querySelector('[data-testid="sync-state"]')?.textContent === 'connected', null, { timeout: 15_000 });
  // The service worker must have cached the app shell before the offline part.
  await page.evaluate(async () => {
    await navigator.serviceWorker.ready;
  });
  return page;
}

beforeAll(async () => {
  server = await startServer();
  web = await serveStatic(DIST);
  appUrl = `${web.origin}/?server=${encodeURIComponent(server.url)}`;
  browser = await launchChromium();
  ctxA = await browser.newContext();
  ctxB = await browser.newContext();
  a = await open(ctxA, 'A');
  b = await open(ctxB, 'B');
  expect(pageErrors).toEqual([]);
});

afterEach(() => {
  const errors = pageErrors.splice(0);
  expect(errors, 'errors logged by the page').toEqual([]);
});

afterAll(async () => {
  await browser?.close();
  await web?.stop();
  await server?.stop();
});

describe('shared todo list in Chromium', () => {
  it('two contexts see each other’s edits live', async () => {
    await add(a, 'Buy milk');
    await expect.poll(() => titles(b)).toEqual(['Buy milk']);
    await add(b, 'Walk the dog');
    await expect.poll(() => titles(a)).toEqual(['Buy milk', 'Walk the dog']);
  });

  it('offline edits survive a reload while offline, then both converge', async () => {
    await ctxA.setOffline(true);
    await expect.poll(() => syncState(a).textContent()).toBe('offline');
    await add(a, 'Offline task');
    await a.getByText('Buy milk').click(); // toggles done
    await expect.poll(() => titles(a)).toEqual(['Buy milk ✓', 'Walk the dog', 'Offline task']);
    await add(b, 'Online task');

    // Reload while offline. The static server is stopped too: the page can only come from the
    // service worker's cache, and the edits only from IndexedDB.
    await web.stop();
    await a.reload();
    await expect.poll(() => syncState(a).textContent(), { timeout: 10_000 }).toBe('offline');
    await expect.poll(() => titles(a)).toEqual(['Buy milk ✓', 'Walk the dog', 'Offline task']);
    expect(await a.getByTestId('pending').textContent()).not.toBe('0 pending');
    expect(await titles(b)).toEqual(['Buy milk', 'Walk the dog', 'Online task']);

    await ctxA.setOffline(false);
    const converged = ['Buy milk ✓', 'Walk the dog', 'Offline task', 'Online task'];
    await expect.poll(() => titles(a), { timeout: 20_000 }).toEqual(converged);
    await expect.poll(() => titles(b), { timeout: 20_000 }).toEqual(converged);
    await expect.poll(() => a.getByTestId('pending').textContent()).toBe('0 pending');
    await expect.poll(() => syncState(a).textContent()).toBe('connected');
  });

  it('a lock held by one context is refused to the other', async () => {
    await a.getByTestId('lock').click();
    await expect.poll(() => a.getByTestId('lock-status').textContent()).toMatch(/^held \(token \d+\)$/);
    const heldBy = Number(/\d+/.exec((await a.getByTestId('lock-status').textContent())!)![0]);
    await b.getByTestId('lock').click();
    await expect.poll(() => b.getByTestId('lock-status').textContent()).toBe('waiting…');
    // The server queues B and gives up just before B's own deadline (lease 3 s + 5 s); A renews
    // its lease meanwhile, so B is refused.
    await expect.poll(() => b.getByTestId('lock-status').textContent(), { timeout: 15_000 }).toBe('refused');
    expect(await a.getByTestId('lock-status').textContent()).toBe(`held (token ${heldBy})`);
    await a.getByTestId('unlock').click();
    await expect.poll(() => a.getByTestId('lock-status').textContent()).toBe('released');
    await b.getByTestId('lock').click();
    await expect.poll(() => b.getByTestId('lock-status').textContent()).toMatch(/^held \(token \d+\)$/);
    const next = Number(/\d+/.exec((await b.getByTestId('lock-status').textContent())!)![0]);
    expect(next).toBeGreaterThan(heldBy);
  });

  it('saves a screenshot of the converged app', async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    const file = path.join(ARTIFACTS, 'converged.png');
    await a.screenshot({ path: file, fullPage: true });
    expect(await titles(a)).toEqual(await titles(b));
  });
});

// The control for the offline reload above: without the service worker the same reload fails,
// so the test really exercises the cache and not a leftover network path.
describe('without the service worker', () => {
  it('a reload while offline fails', async () => {
    const web2 = await serveStatic(DIST);
    const ctx = await browser.newContext({ serviceWorkers: 'block' });
    try {
      const page = await ctx.newPage();
      await page.goto(`${web2.origin}/?server=${encodeURIComponent(server.url)}`);
      await ctx.setOffline(true);
      await web2.stop();
      await expect(page.reload()).rejects.toThrow(/ERR_INTERNET_DISCONNECTED|ERR_CONNECTION_REFUSED|net::/);
    } finally {
      await ctx.close();
    }
  });
});
