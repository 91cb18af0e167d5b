#!/usr/bin/env bash
# Compares two topgun-server binaries on the write and fanout scenarios, alternating A and B
# round by round, each run against a fresh server (default durable mode, its own data
# directory) and with the same load generator. On a shared, noisy machine only figures from
# one such run compare: a change is a regression only if B loses to A in every round.
#
# Usage: scripts/ab.sh A_SERVER B_SERVER [ROUNDS]     (ROUNDS defaults to 3; about 1 min each)
#   BENCH=path/to/topgun-bench  DURATION=10s  scripts/ab.sh …
# Prints one line per run: round, binary, scenario and its headline figures.
set -euo pipefail
cd "$(dirname "$0")/.."

A=${1:?usage: scripts/ab.sh A_SERVER B_SERVER [ROUNDS]}
B=${2:?usage: scripts/ab.sh A_SERVER B_SERVER [ROUNDS]}
ROUNDS=${3:-3}
BENCH=${BENCH:-target/release/topgun-bench}
DURATION=${DURATION:-10s}
for bin in "$A" "$B" "$BENCH"; do
  [ -x "$bin" ] || { echo "error: $bin is not an executable" >&2; exit 1; }
done
command -v python3 >/dev/null || { echo "error: python3 reads the figures" >&2; exit 1; }

work=$(mktemp -d)
server_pid=
stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 200); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    server_pid=
  fi
}
trap 'stop_server; rm -rf "$work"' EXIT

# serve BIN NAME: starts BIN on a free loopback port with a fresh data directory; sets $port.
serve() {
  local out="$work/$2.out"
  TOPGUN_NO_AUTH=1 RUST_LOG=warn "$1" --port 0 --data-dir "$work/data-$2" >"$out" 2>"$work/$2.err" &
  server_pid=$!
  for _ in $(seq 100); do
    port=$(sed -n 's/^PORT=//p' "$out" 2>/dev/null)
    [ -n "$port" ] && return
    sleep 0.1
  done
  echo "error: $1 did not start:" >&2
  cat "$work/$2.err" >&2
  exit 1
}

# run ROUND LABEL BIN SCENARIO: one measured run on a fresh server, printed as one line.
run() {
  serve "$3" "$1-$2-$4"
  local json
  # The load generator's progress lines go to a file; shown only if it fails.
  if ! json=$("$BENCH" --url "ws://127.0.0.1:$port/ws" --duration "$DURATION" --json "$4" \
      2>"$work/bench.err" | tail -n 1) || [ -z "$json" ]; then
    cat "$work/bench.err" >&2
    exit 1
  fi
  stop_server
  python3 - "$1" "$2" "$4" "$json" <<'PY'
import json, sys
round_, label, scenario, raw = sys.argv[1:]
fig = json.loads(raw)
keys = {
    "write": ["acked_ops_per_sec", "batch_latency_p50_ms", "batch_latency_p99_ms", "errors"],
    "fanout": ["writes_per_sec", "delivery_latency_p50_ms", "delivery_latency_p99_ms", "events_lost"],
}[scenario]
print(f"round {round_} {label} {scenario}: " + " ".join(f"{k}={fig.get(k)}" for k in keys))
PY
}

for round in $(seq "$ROUNDS"); do
  for scenario in write fanout; do
    # Alternate which binary goes first, so neither always meets a warmer machine.
    if [ $((round % 2)) -eq 1 ]; then order="A B"; else order="B A"; fi
    for label in $order; do
      bin=$A; [ "$label" = B ] && bin=$B
      run "$round" "$label" "$bin" "$scenario"
    done
  done
done
