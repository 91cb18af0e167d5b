/**
 * Serves the built demo app (examples/todo/dist) over HTTP on 127.0.0.1, a secure context for
 * service workers. The test stops it while a browser is offline, so a reload can only succeed
 * from the service worker's cache. Every response carries `Vary: Origin, Accept-Encoding`, as
 * `vite preview` and many static servers send, so the worker's cache lookups must ignore Vary.
 */
import { createReadStream, existsSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json',
  '.svg': 'image/svg+xml',
};

export interface StaticServer {
  origin: string;
  stop(): Promise<void>;
}

export async function serveStatic(root: string, port = 0): Promise<StaticServer> {
  if (!existsSync(path.join(root, 'index.html'))) throw new Error(`${root}/index.html missing: build the demo app first (npm run build)`);
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    let file = path.normalize(path.join(root, decodeURIComponent(url.pathname)));
    if (!file.startsWith(root)) {
      res.writeHead(403).end();
      return;
    }
    if (existsSync(file) && statSync(file).isDirectory()) file = path.join(file, 'index.html');
    if (!existsSync(file)) {
      res.writeHead(404).end('not found');
      return;
    }
    // No HTTP caching: only the service worker's cache may serve the app offline.
    res.writeHead(200, {
      'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
      'cache-control': 'no-store',
      vary: 'Origin, Accept-Encoding',
    });
    createReadStream(file).pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const { port: actual } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${actual}`,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
