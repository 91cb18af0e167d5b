#!/usr/bin/env bash
# Acknowledged write throughput of one node against a three-member cluster on this machine,
# alternating, each run on fresh servers (default storage, a data directory each). Every
# batch enters at member n1, which forwards the writes n2 and n3 own.
#
# Usage: scripts/cluster-bench.sh SERVER [ROUNDS]       (ROUNDS defaults to 2)
#   BENCH=path/to/topgun-bench  DURATION=10s  scripts/cluster-bench.sh …
# Uses loopback ports 18080-18083 and 19081-19083.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVER=${1:?usage: scripts/cluster-bench.sh SERVER [ROUNDS]}
ROUNDS=${2:-2}
BENCH=${BENCH:-target/release/topgun-bench}
DURATION=${DURATION:-10s}
work=$(mktemp -d)
pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap 'stop; rm -rf "$work"' EXIT

# member NAME PORT [CLUSTER_PORT SEEDS]
member() {
  local dir="$work/$1-$RANDOM"
  TOPGUN_NO_AUTH=1 RUST_LOG=warn "$SERVER" --node-id "$1" --port "$2" --data-dir "$dir" \
    ${3:+--cluster-port "$3" --seed-nodes "$4"} >"$dir.out" 2>"$dir.err" &
  pids+=($!)
}

# The three members agree on a table within about a second; /health/ready says when.
ready() {
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$1/health/ready" >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "error: the server on port $1 never became ready" >&2
  exit 1
}

measure() {
  "$BENCH" write --url "ws://127.0.0.1:$1/ws" --duration "$DURATION" 2>&1 |
    sed -n 's/^ *acked_ops_per_sec: /acked_ops_per_sec=/p; s/^ *batch_latency_p99_ms: /p99_ms=/p' |
    paste -sd' '
}

for round in $(seq "$ROUNDS"); do
  member n1 18080
  ready 18080
  echo "round $round one node: $(measure 18080)"
  stop
  member n1 18081 19081 127.0.0.1:19082,127.0.0.1:19083
  member n2 18082 19082 127.0.0.1:19081,127.0.0.1:19083
  member n3 18083 19083 127.0.0.1:19081,127.0.0.1:19082
  for port in 18081 18082 18083; do ready "$port"; done
  echo "round $round three members: $(measure 18081)"
  stop
done
