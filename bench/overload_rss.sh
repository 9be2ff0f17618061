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
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
bench_start_run arbiter-overload-rss
bench_slow_sim "$ARBITER" "[faq, billing, troubleshooting, policy]"

cat >"$run/gateway.yaml" <<EOF
tasks: [faq, billing, troubleshooting, policy]
policy: {pinned: {route: r}}
backends:
  - name: slow
    openai:
      base_url: http://127.0.0.1:$sim_port/v1
      timeout_seconds: 30
      max_connections: 64
routes:
  - {name: r, kind: fine_tuned, backend: slow, model: m}
EOF
"$ARBITER" serve --config "$run/gateway.yaml" --grpc-listen 127.0.0.1:0 --http-listen off \
  --metrics-listen 127.0.0.1:0 >"$run/gateway.log" 2>&1 &
GATEWAY=$!
pids+=($GATEWAY)
GRPC_PORT=$(line_after "$run/gateway.log" "grpc listening on ")
GRPC_PORT=${GRPC_PORT##*:}

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
) >"$run/rss.txt" &
pids+=($!)
START=$(date +%s.%N)
"$ARBITER" loadgen --target "127.0.0.1:$GRPC_PORT" --qps "$QPS" \
  --duration "${SECONDS_OF_LOAD}s" >"$run/loadgen.log" 2>&1 || true
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
  }' "$run/rss.txt"
sed -n '/^final:/,$p' "$run/loadgen.log"
