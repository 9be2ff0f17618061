#!/usr/bin/env bash
# Deadlines under overload: sim-server answering after 2 s behind an
# `openai` backend with 64 connections; wrk keeps CONNS requests in flight
# (default 320, 5x the connections) for DUR seconds, each with
# x-arbiter-timeout-ms: TIMEOUT_MS (default 300). Every answer must come
# within the deadline + 50 ms (504 with what it waited on), whether the
# request was on the wire or waiting for a connection. Prints wrk's latency
# percentiles and maximum, and how many answers were not 2xx.
#
#   bench/deadline.sh [ARBITER_BINARY]
#
# Env: CONNS (320), DUR (20), TIMEOUT_MS (300). Needs wrk (make bench-deps).
# Loopback only; every process it starts is stopped on exit.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
arbiter=${1:-$root/build/arbiter}
CONNS=${CONNS:-320}
DUR=${DUR:-20}
TIMEOUT_MS=${TIMEOUT_MS:-300}
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
bench_start_run arbiter-deadline

bench_slow_sim "$arbiter" || exit 1

cat >"$run/gateway.yaml" <<YAML
tasks: [faq]
policy: {pinned: {route: r}}
backends:
  - name: slow
    openai:
      base_url: http://127.0.0.1:$sim_port/v1
      timeout_seconds: 30
      max_connections: 64
    outlier_detection: {consecutive_failures: 0, failure_rate_percent: 0}
routes:
  - {name: r, kind: fine_tuned, backend: slow, model: m}
YAML
"$arbiter" serve --config "$run/gateway.yaml" --grpc-listen 127.0.0.1:0 \
  --http-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  >"$run/gateway.log" 2>&1 &
pids+=($!)
http=$(line_after "$run/gateway.log" "http listening on http://") || exit 1
http=${http%%/*}

cat >"$run/post.lua" <<LUA
wrk.method = "POST"
wrk.body   = '{"model":"arbiter/auto","messages":[{"role":"user","content":"How do I reset my password?"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-arbiter-timeout-ms"] = "$TIMEOUT_MS"
LUA
echo "$CONNS requests in flight for $DUR s, each with a ${TIMEOUT_MS} ms deadline;"
echo "the backend takes 2 s and 64 at a time"
wrk -t1 -c"$CONNS" -d"${DUR}s" --latency --timeout 10s -s "$run/post.lua" \
  "http://$http/v1/chat/completions" | sed -n '/Thread Stats/,$p'
