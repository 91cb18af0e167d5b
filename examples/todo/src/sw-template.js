// Service worker of the todo demo (generated at build time from src/sw-template.js).
// Install: precache every built file. Navigations: network first, cached shell when the network
// fails (offline). Other same-origin GETs: cache first. WebSocket traffic never passes here.
// Lookups ignore the query string and the `Vary` header: `vite preview` and many static servers
// send `Vary: Origin` / `Accept-Encoding`, and a cached response whose Vary'd request headers
// differ from the (offline) request's would otherwise be missed, so offline reload would fail.
const MATCH = { ignoreSearch: true, ignoreVary: true };
const PRECACHE = self.__PRECACHE__;
const CACHE = `topgun-todo-${self.__VERSION__}`;

self.addEventListener('install', (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(PRECACHE))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== 'GET' || url.origin !== self.location.origin) return;
  if (request.mode === 'navigate') {
    event.respondWith(
      fetch(request).catch(async () => {
        const cache = await caches.open(CACHE);
        return (await cache.match(request, MATCH)) ?? (await cache.match('./', MATCH));
      }),
    );
    return;
  }
  event.respondWith(
    caches.open(CACHE).then(async (cache) => (await cache.match(request, MATCH)) ?? fetch(request)),
  );
});
