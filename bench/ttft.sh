#!/usr/bin/env bash
# Time to first token through arbiter's HTTP front against the backend's own,
# with many concurrent streams, in one run: a sim-server streams slowly
# (TTFT seconds to the first token, then PER_TOKEN seconds a token, TOKENS
# tokens), and ttft_bench holds STREAMS streams open against it directly and
# through `arbiter serve` (an `openai` backend pointed at it), in turn.
#
#   bench/ttft.sh [ARBITER_BINARY]
#
# Env: STREAMS (1000), SECONDS_EACH (10), RAMP (2), ROUNDS (2), TTFT (0.2),
# PER_TOKEN (0.05), TOKENS (16), EVENT_THREADS (the openai backend's; unset
# for the default), IO_THREADS (server.http_io_threads; unset: default).
# Needs curl. Loopback only; every process it starts is stopped on exit.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
arbiter=${1:-$root/build/arbiter}
ttft_bench=$(dirname "$arbiter")/bench/ttft_bench
STREAMS=${STREAMS:-1000}
SECONDS_EACH=${SECONDS_EACH:-10}
RAMP=${RAMP:-2}
ROUNDS=${ROUNDS:-2}
TTFT=${TTFT:-0.2}
PER_TOKEN=${PER_TOKEN:-0.05}
TOKENS=${TOKENS:-16}
[[ -x $arbiter ]] || { echo "ttft.sh: no arbiter binary at $arbiter" >&2; exit 2; }
[[ -x $ttft_bench ]] || { echo "ttft.sh: no $ttft_bench (cmake --build build --target ttft_bench)" >&2; exit 2; }
# Each stream holds a connection on both sides of arbiter.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

. "$here/lib.sh"
bench_start_run arbiter-ttft

cat >"$run/sim.yaml" <<EOF
tasks: [chat]
policy: {pinned: {route: mock}}
backends:
  - name: slow
    sim:
      time_to_first_token_seconds: $TTFT
      seconds_per_token: $PER_TOKEN
      output_tokens: $TOKENS
      dataset: $root/quickstart/questions.jsonl
      models: [{name: mock, accuracy: 0.8}]
routes:
  - {name: mock, kind: fine_tuned, backend: slow, model: mock}
EOF
"$arbiter" sim-server --listen 127.0.0.1:0 --config "$run/sim.yaml" >"$run/sim.log" 2>&1 &
pids+=($!)
sim=$(line_after "$run/sim.log" "sim-server listening on ") || exit 1

cat >"$run/arbiter.yaml" <<EOF
server: {http_listen: "127.0.0.1:0", http_max_connections: $((STREAMS * 2 + 64))${IO_THREADS:+, http_io_threads: $IO_THREADS}}
tasks: [chat]
policy: {pinned: {route: mock}}
backends:
  - name: sim
    openai: {base_url: "http://$sim/v1", max_connections: $((STREAMS + 64)), timeout_seconds: 120${EVENT_THREADS:+, event_threads: $EVENT_THREADS}}
routes:
  - {name: mock, kind: fine_tuned, backend: sim, model: mock}
EOF
"$arbiter" serve --config "$run/arbiter.yaml" --grpc-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --no-state \
  >"$run/arbiter.log" 2>&1 &
pids+=($!)
http=$(line_after "$run/arbiter.log" "http listening on http://") || exit 1
http=${http%%/v1*}

echo "sim-server at $sim: first token after ${TTFT} s, then ${PER_TOKEN} s a token, $TOKENS tokens"
"$ttft_bench" --target "direct=$sim" --target "arbiter-http=$http" \
  --streams "$STREAMS" --seconds "$SECONDS_EACH" --ramp "$RAMP" --rounds "$ROUNDS"
