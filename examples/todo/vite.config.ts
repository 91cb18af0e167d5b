import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import react from '@vitejs/plugin-react';
import { defineConfig, type Plugin } from 'vite';

/**
 * Emits `sw.js` with the list of every built file, so the service worker can precache the whole
 * app shell at install time. That is what lets the app reload while offline: the page, its
 * scripts and styles then come from the Cache Storage, never from the (unreachable) network.
 */
function serviceWorker(): Plugin {
  let publicDir = '';
  return {
    name: 'topgun-precache-sw',
    apply: 'build',
    configResolved(config) {
      publicDir = config.publicDir;
    },
    generateBundle(_options, bundle) {
      // Files of public/ (the favicon) are copied to the build as they are, outside the bundle.
      const publicFiles =
        publicDir && existsSync(publicDir)
          ? readdirSync(publicDir, { recursive: true, withFileTypes: true })
              .filter((e) => e.isFile())
              .map((e) => path.relative(publicDir, path.join(e.parentPath, e.name)).split(path.sep).join('/'))
          : [];
      const files = [...Object.keys(bundle), ...publicFiles].filter((f) => !f.endsWith('.map'));
      const template = readFileSync(fileURLToPath(new URL('./src/sw-template.js', import.meta.url)), 'utf8');
      // Built file names carry content hashes, so their list identifies the build.
      const version = JSON.stringify(createHash('sha256').update(files.sort().join('|')).digest('hex').slice(0, 16));
      const source = template
        .replace('self.__PRECACHE__', JSON.stringify(['./', './index.html', ...files.map((f) => `./${f}`)]))
        .replace('self.__VERSION__', version);
      this.emitFile({ type: 'asset', fileName: 'sw.js', source });
    },
  };
}

export default defineConfig({
  plugins: [react(), serviceWorker()],
  build: {
    target: 'es2022',
    sourcemap: true,
    rollupOptions: {
      input: {
        main: fileURLToPath(new URL('./index.html', import.meta.url)),
        bench: fileURLToPath(new URL('./bench.html', import.meta.url)),
      },
    },
  },
});
