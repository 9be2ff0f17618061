#!/usr/bin/env bash
# The gateway's memory under overload: sim-server answering after 2 s behind
# an `openai` backend with 64 connections (32 req/s at most), offered QPS
# requests per second for SECONDS seconds (default 160 for 30 s, 5x what the
# backend can take). Samples the gateway's RSS every second during the load
# and for 30 s after, then prints the loadgen's final table.
#
#   bench/overload_rss.sh [ARBITER_BINARY] [QPS] [SECONDS]
set -euo pipefail

ARBITER=${1:-./build/arbiter}
QPS=${2:-160}
SECONDS_OF_LOAD=${3:-30}
SOURCE_DIR=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/sim.yaml" <<EOF
tasks: [faq, billing, troubleshooting, policy]
policy: {pinned: {route: r}}
backends:
  - name: slow-sim
    sim:
      time_to_first_token_seconds: 2
      seconds_per_token: 0
      output_tokens: 16
      dataset: $SOURCE_DIR/quickstart/questions.jsonl
      models: [{name: m, accuracy: 0.8}]
routes:
  - {name: r, kind: fine_tuned, backend: slow-sim, model: m}
EOF

# Waits for a line starting with $2 in file $1 and prints the port after it.
port_from() {
  for _ in $(seq 1 300); do
    if line=$(grep -m1 "^$2" "$1" 2>/dev/null); then
      echo "${line##*:}"
      return
    fi
    sleep 0.1
  done
  echo "no \"$2\" line in $1" >&2
  cat "$1" >&2
  exit 1
}

"$ARBITER" sim-server --listen 127.0.0.1:0 --config "$WORK/sim.yaml" \
  >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
SIM_PORT=$(port_from "$WORK/sim.log" "sim-server listening on ")

cat >"$WORK/gateway.yaml" <<EOF
tasks: [faq, billing, troubleshooting, policy]
policy: {pinned: {route: r}}
backends:
  - name: slow
    openai:
      base_url: http://127.0.0.1:$SIM_PORT/v1
      timeout_seconds: 30
      max_connections: 64
routes:
  - {name: r, kind: fine_tuned, backend: slow, model: m}
EOF
"$ARBITER" serve --config "$WORK/gateway.yaml" --grpc-listen 127.0.0.1:0 --http-listen off \
  --metrics-listen 127.0.0.1:0 >"$WORK/gateway.log" 2>&1 &
GATEWAY=$!
PIDS+=($GATEWAY)
GRPC_PORT=$(port_from "$WORK/gateway.log" "grpc listening on ")

rss_mb() {
  awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$GATEWAY/status"
}
echo "offered ${QPS} req/s for ${SECONDS_OF_LOAD} s to a backend taking 32 req/s"
echo "gateway RSS before load: $(rss_mb) MB"
(
  while kill -0 "$GATEWAY" 2>/dev/null; do
    echo "$(date +%s.%N) $(rss_mb)"
    sleep 1
  done
) >"$WORK/rss.txt" &
PIDS+=($!)
START=$(date +%s.%N)
"$ARBITER" loadgen --target "127.0.0.1:$GRPC_PORT" --qps "$QPS" \
  --duration "${SECONDS_OF_LOAD}s" >"$WORK/loadgen.log" 2>&1 || true
DONE=$(date +%s.%N)
sleep 30
awk -v start="$START" -v done="$DONE" '
  { t = $1 - start; rss = $2 + 0
    if (t >= 0 && $1 <= done && rss > peak) peak = rss
    if ($1 <= done) at_done = rss
    last = rss }
  END {
    printf "gateway RSS peak during load: %.1f MB\n", peak
    printf "gateway RSS when the last answer came: %.1f MB\n", at_done
    printf "gateway RSS 30 s later: %.1f MB\n", last
  }' "$WORK/rss.txt"
sed -n '/^final:/,$p' "$WORK/loadgen.log"
