import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { IndexedDBStorage, TopGunClient } from '@topgun-rs/client';
import { TopGunProvider } from '@topgun-rs/react';
import { App } from './App';
import { serverUrl } from './config';

// One client per tab, persisted in IndexedDB: the list survives reloads, offline included.
const client = new TopGunClient({ serverUrl: serverUrl(), storage: new IndexedDBStorage({ name: 'topgun-todo' }) });
(window as unknown as { topgun: TopGunClient }).topgun = client; // for the end-to-end tests

if (import.meta.env.PROD && 'serviceWorker' in navigator) {
  // The service worker caches the app shell so that the page also loads offline. Only production
  // builds have one (vite.config.ts emits sw.js on build), so dev does not try to register it.
  navigator.serviceWorker.register('./sw.js').catch((e) => console.warn('service worker not registered', e));
}

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <TopGunProvider client={client}>
      <App />
    </TopGunProvider>
  </StrictMode>,
);
