#!/usr/bin/env bash
# Live-query fan-out under overload: S subscribers each holding QUERY_SUB {} on one map, one
# writer at R writes/s, against a fresh release topgun-server in its default durable mode.
# Samples the server's RSS every 250 ms during the run and for 10 s after, then prints the
# bench's delivery figures, the peak and final RSS, and what the server shed (by reason).
#
# Usage: ./scripts/overload.sh [RATE...]        (default: 1000 5000; about 40 s per rate)
#   SUBSCRIBERS=500 DURATION=20s ./scripts/overload.sh 1000
#   NO_BUILD=1 ./scripts/overload.sh              use the release binaries as they are
#   SERVER_BIN=path/to/topgun-server ...          another server build (an older commit, say)
#   CEILING=1 ./scripts/overload.sh               the transport ceiling (topgun-bench ceiling)
#                                                 instead: relays writes, no CRDT or query work
set -euo pipefail
cd "$(dirname "$0")/.."

SUBSCRIBERS=${SUBSCRIBERS:-500}
DURATION=${DURATION:-20s}
RATES=("$@")
[ ${#RATES[@]} -gt 0 ] || RATES=(1000 5000)

[ -n "${NO_BUILD:-}" ] || cargo build --release --locked -p topgun-server -p topgun-bench >/dev/null
BIN=target/release
work=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

rss_mb() { awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo 0; }

for rate in "${RATES[@]}"; do
  data="$work/data-$rate"
  if [ -n "${CEILING:-}" ]; then
    "$BIN/topgun-bench" ceiling --port 0 >"$work/server.out" 2>"$work/server.err" &
  else
    TOPGUN_NO_AUTH=1 RUST_LOG=warn "${SERVER_BIN:-$BIN/topgun-server}" --port 0 --data-dir "$data" \
      >"$work/server.out" 2>"$work/server.err" &
  fi
  server_pid=$!
  port=
  for _ in $(seq 100); do
    port=$(sed -n 's/^PORT=//p' "$work/server.out" 2>/dev/null)
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "error: the server did not start" >&2; cat "$work/server.err" >&2; exit 1; }
  : >"$work/rss"
  # The sampler stops by itself: at most 10 minutes, or when the server is gone.
  (for _ in $(seq 2400); do
     kill -0 "$server_pid" 2>/dev/null || break
     echo "$(date +%s.%N) $(rss_mb "$server_pid")" >>"$work/rss"
     sleep 0.25
   done) &
  sampler=$!
  started=$(date +%s.%N)
  "$BIN/topgun-bench" fanout --url "ws://127.0.0.1:$port/ws" --subscribe query \
    --subscribers "$SUBSCRIBERS" --rate "$rate" --duration "$DURATION" --warmup 2s \
    --drain 5s >"$work/bench.out" 2>"$work/bench.err" || true
  ended=$(date +%s.%N)
  sleep 10
  metrics=$(curl -s "http://127.0.0.1:$port/metrics" || true)
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
  wait "$sampler" 2>/dev/null || true
  echo "== $SUBSCRIBERS query subscribers, $rate writes/s for $DURATION =="
  grep -v '^{' "$work/bench.out" || true
  awk -v s="$started" -v e="$ended" '
    $1 < s { next }
    $1 <= e { if ($2 > during) during = $2; next }
    { if ($2 > after) after = $2; last = $2 }
    END { printf "server RSS: peak %d MB during the run, %d MB in the 10 s after, %d MB at the end\n", during, after, last }
  ' "$work/rss"
  echo "$metrics" | grep -E '^topgun_(slow_consumer_kicks_total|outbound_queue_drops_total|outbound_backlog_bytes)' || true
  grep -c 'closed a slow consumer' "$work/server.err" | sed 's/^/slow-consumer closes logged: /' || true
  echo
done
