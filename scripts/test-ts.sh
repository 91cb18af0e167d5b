#!/usr/bin/env bash
# The TypeScript part of the suite: install (npm ci), build the client, the React hooks and the
# demo app, type-check, check the npm tarballs in an app outside the workspace
# (scripts/test-pack.sh), run the unit and integration tests (vitest; the integration tests start
# the real topgun-server), then the end-to-end tests in headless Chromium (installed with
# apt-get when missing). Non-interactive; meant to run from scripts/test after the cargo tests.
#
# The server binary: $TOPGUN_SERVER_BIN, else target/debug/topgun-server.
# Usage: ./scripts/test-ts.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n== %s ==\n' "$*"; }

export TOPGUN_SERVER_BIN="${TOPGUN_SERVER_BIN:-$root/target/debug/topgun-server}"
if [ ! -x "$TOPGUN_SERVER_BIN" ]; then
  echo "error: no topgun-server binary at $TOPGUN_SERVER_BIN (cargo build -p topgun-server, or set TOPGUN_SERVER_BIN)" >&2
  exit 1
fi
export CI="${CI:-true}" # vitest: no watch mode, no interactive output

step "npm ci (TypeScript workspace)"
npm ci --no-audit --no-fund --loglevel=error </dev/null

step "build: @topgun-rs/client, @topgun-rs/react, examples/todo"
npm run build --silent </dev/null

step "type-check"
npx tsc -p packages/client/tsconfig.json --noEmit
npx tsc -p packages/react/tsconfig.json --noEmit
npx tsc -p examples/todo/tsconfig.json --noEmit
npx tsc -p packages/tsconfig.tests.json

step "packaging: npm pack both packages, install them in an app outside the workspace (ESM, CJS, types)"
TOPGUN_PACK_SKIP_BUILD=1 ./scripts/test-pack.sh </dev/null

reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT

step "vitest: unit and integration tests (server: $TOPGUN_SERVER_BIN)"
npx vitest run --config packages/vitest.config.ts \
  --reporter=default --reporter=json --outputFile.json="$reports/unit.json" </dev/null

step "Chromium for the end-to-end tests"
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing Debian's chromium with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  as_root=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      as_root=(sudo -n -E)
    else
      echo "error: the browser tests need Chromium; install it (Debian: apt-get install -y chromium) or run as root" >&2
      exit 1
    fi
  fi
  "${as_root[@]}" apt-get update -q </dev/null
  "${as_root[@]}" apt-get install -y -q chromium </dev/null
fi
chromium --version 2>/dev/null

step "end to end: the demo app in headless Chromium against topgun-server"
npx vitest run --config tests/e2e/vitest.config.ts \
  --reporter=default --reporter=json --outputFile.json="$reports/e2e.json" </dev/null
echo "screenshot: tests/e2e/artifacts/converged.png"

node -e '
  let p = 0, f = 0;
  for (const file of process.argv.slice(1)) {
    const r = require(file);
    p += r.numPassedTests; f += r.numFailedTests;
  }
  console.log(`\ntypescript: ${p} passed, ${f} failed`);
' "$reports/unit.json" "$reports/e2e.json"
