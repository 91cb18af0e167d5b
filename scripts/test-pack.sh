#!/usr/bin/env bash
# The packages as a user outside this workspace gets them: build @topgun-rs/client and
# @topgun-rs/react, `npm pack` both, install the two tarballs (with react and react-dom at the
# workspace's versions) into a throwaway app in a temp dir, then check that
#   * each tarball carries the ESM build, the CommonJS build, both type files and the README;
#   * Node loads both packages with `import` (ESM) and with `require` (CommonJS), each from the
#     right file, and a client plus <TopGunProvider> render work from either;
#   * TypeScript (the workspace's tsc) resolves the types under `moduleResolution: node16`
#     (an ESM .mts and a CommonJS .cts file) and `bundler`.
# npm installs offline from its cache first and goes online only when the cache misses.
#
# Usage: ./scripts/test-pack.sh
#   TOPGUN_PACK_SKIP_BUILD=1  use the existing dist/ folders (scripts/test-ts.sh has just built)
#   TOPGUN_PACK_KEEP=1        keep the temp dir (its path is printed) to look around
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n== %s ==\n' "$*"; }
failures=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
# Every external command is bounded, so a hung npm cannot hang the suite.
bounded() { timeout --kill-after=10 "$@"; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/topgun-pack.XXXXXX")
case "$tmp" in "$root"/*) echo "error: the temp dir $tmp is inside the workspace" >&2; exit 1 ;; esac
if [ "${TOPGUN_PACK_KEEP:-}" = 1 ]; then
  trap 'echo "kept $tmp"' EXIT
else
  trap 'rm -rf "$tmp"' EXIT
fi
export npm_config_update_notifier=false npm_config_loglevel=error

if [ "${TOPGUN_PACK_SKIP_BUILD:-}" != 1 ]; then
  step "build @topgun-rs/client and @topgun-rs/react"
  bounded 180 npm run build --silent -w @topgun-rs/client -w @topgun-rs/react </dev/null >/dev/null
fi

step "npm pack"
# The packages' prepack scripts build again; the build above (or the caller's) is enough.
bounded 120 npm pack --ignore-scripts --pack-destination "$tmp" \
  -w @topgun-rs/client -w @topgun-rs/react </dev/null >/dev/null
client_tgz=$(ls "$tmp"/topgun-rs-client-*.tgz)
react_tgz=$(ls "$tmp"/topgun-rs-react-*.tgz)
for tgz in "$client_tgz" "$react_tgz"; do
  listing=$(tar -tzf "$tgz")
  missing=()
  for f in package/package.json package/README.md package/dist/index.js package/dist/index.cjs \
           package/dist/index.d.ts package/dist/index.d.cts; do
    grep -qx "$f" <<<"$listing" || missing+=("${f#package/}")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    pass "$(basename "$tgz") has ESM, CJS, .d.ts, .d.cts and README ($(wc -l <<<"$listing") files)"
  else
    fail "$(basename "$tgz") lacks ${missing[*]}"
  fi
done

step "a throwaway app outside the workspace: $tmp/app"
app="$tmp/app"
mkdir "$app"
cd "$app"
bounded 60 npm init -y >/dev/null
# react/react-dom (and their types, for the tsc check) at the versions the workspace uses.
ver() { node -p "require('$root/node_modules/$1/package.json').version"; }
deps=("$client_tgz" "$react_tgz" "react@$(ver react)" "react-dom@$(ver react-dom)"
      "@types/react@$(ver @types/react)" "@types/react-dom@$(ver @types/react-dom)")
install_flags=(--no-audit --no-fund --ignore-scripts --no-package-lock)
if bounded 120 npm install "${install_flags[@]}" --offline "${deps[@]}" </dev/null >install.log 2>&1; then
  echo "installed from the npm cache (offline)"
elif bounded 240 npm install "${install_flags[@]}" "${deps[@]}" </dev/null >install.log 2>&1; then
  echo "installed (the npm cache missed; went online)"
else
  cat install.log >&2
  fail "npm install of the tarballs"
  echo "FAIL: packaging ($failures failures)"
  exit 1
fi
pass "npm install ./$(basename "$client_tgz") ./$(basename "$react_tgz") react react-dom"

step "Node: ESM (import)"
if bounded 30 node --input-type=module -e "
  import { TopGunClient, MemoryStorage } from '@topgun-rs/client';
  import { TopGunProvider, useClient } from '@topgun-rs/react';
  import { createElement } from 'react';
  import { renderToString } from 'react-dom/server';
  for (const p of ['@topgun-rs/client', '@topgun-rs/react']) {
    const file = import.meta.resolve(p);
    if (!file.endsWith('/dist/index.js')) throw new Error(p + ' resolved to ' + file);
  }
  const client = new TopGunClient({ storage: new MemoryStorage() });
  await client.start();
  client.getMap('todos').set('t1', { title: 'esm' });
  function Title() { return useClient().getMap('todos').get('t1').title; }
  const html = renderToString(createElement(TopGunProvider, { client }, createElement(Title)));
  if (html !== 'esm') throw new Error('rendered ' + JSON.stringify(html));
  await client.close();
"; then
  pass "import {TopGunClient} from '@topgun-rs/client' and {TopGunProvider} from '@topgun-rs/react' (dist/index.js)"
else
  fail "ESM import of the packages"
fi

step "Node: CommonJS (require)"
if bounded 30 node -e "
  const { TopGunClient, MemoryStorage } = require('@topgun-rs/client');
  const { TopGunProvider, useClient } = require('@topgun-rs/react');
  const { createElement } = require('react');
  const { renderToString } = require('react-dom/server');
  for (const p of ['@topgun-rs/client', '@topgun-rs/react']) {
    const file = require.resolve(p);
    if (!file.endsWith('/dist/index.cjs')) throw new Error(p + ' resolved to ' + file);
  }
  (async () => {
    const client = new TopGunClient({ storage: new MemoryStorage() });
    await client.start();
    client.getMap('todos').set('t1', { title: 'cjs' });
    function Title() { return useClient().getMap('todos').get('t1').title; }
    const html = renderToString(createElement(TopGunProvider, { client }, createElement(Title)));
    if (html !== 'cjs') throw new Error('rendered ' + JSON.stringify(html));
    await client.close();
  })().catch((e) => { console.error(e); process.exit(1); });
"; then
  pass "require('@topgun-rs/client') and require('@topgun-rs/react') (dist/index.cjs)"
else
  fail "CommonJS require of the packages"
fi

step "TypeScript: the types resolve (workspace tsc $("$root/node_modules/.bin/tsc" --version))"
# Wrong types must be errors: proves the declarations resolved (the client's, and the client's
# seen through the React package's), not `any`.
body="
const client = new TopGunClient({ storage: new MemoryStorage(), serverUrl: 'ws://127.0.0.1:8080/ws' });
const todos = client.getMap<string, { title: string }>('todos');
const title: string | undefined = todos.get('t1')?.title;
// @ts-expect-error title is a string
todos.set('t1', { title: 1 });
const el: ReactElement = createElement(TopGunProvider, { client });
// @ts-expect-error the provider takes a TopGunClient
createElement(TopGunProvider, { client: 42 });
export { title, el };
"
imports="import { TopGunClient, MemoryStorage } from '@topgun-rs/client';
import { TopGunProvider } from '@topgun-rs/react';
import { createElement, type ReactElement } from 'react';"
printf '%s\n%s' "$imports" "$body" >esm.mts # ESM under node16: the import condition
printf '%s\n%s' "$imports" "$body" >cjs.cts # CommonJS under node16: the require condition
printf '%s\n%s' "$imports" "$body" >bundler.ts
# skipLibCheck keeps this fast (checking @types/react costs seconds); tsup's dts build has
# type-checked our declarations, and the @ts-expect-error lines catch any that did not resolve.
common='"strict": true, "noEmit": true, "lib": ["ES2022", "DOM"], "types": [], "skipLibCheck": true'
cat >tsconfig.node16.json <<EOF
{ "compilerOptions": { $common, "module": "node16", "moduleResolution": "node16" },
  "files": ["esm.mts", "cjs.cts"] }
EOF
cat >tsconfig.bundler.json <<EOF
{ "compilerOptions": { $common, "module": "esnext", "moduleResolution": "bundler" },
  "files": ["bundler.ts"] }
EOF
for mode in node16 bundler; do
  if out=$(bounded 120 "$root/node_modules/.bin/tsc" -p "tsconfig.$mode.json" --listFiles 2>&1); then
    # Which of our declaration files did tsc pick?
    got=$(grep -oE 'topgun-rs/[a-z]+/dist/index\.d\.c?ts' <<<"$out" | sort -u | tr '\n' ' ' || true)
    if [ "$mode" = node16 ]; then
      want='topgun-rs/client/dist/index.d.cts topgun-rs/client/dist/index.d.ts topgun-rs/react/dist/index.d.cts topgun-rs/react/dist/index.d.ts '
    else
      want='topgun-rs/client/dist/index.d.ts topgun-rs/react/dist/index.d.ts '
    fi
    if [ "$got" = "$want" ]; then
      pass "tsc --noEmit, moduleResolution $mode: types from $got"
    else
      fail "tsc, moduleResolution $mode: declarations $got(want $want)"
    fi
  else
    grep -v '^/' <<<"$out" || true
    fail "tsc --noEmit, moduleResolution $mode"
  fi
done

echo
if [ "$failures" -eq 0 ]; then
  echo "PASS: packaging (npm pack → install outside the workspace → ESM, CJS, types)"
else
  echo "FAIL: packaging ($failures failures)"
  exit 1
fi
