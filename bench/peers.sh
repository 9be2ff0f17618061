#!/usr/bin/env bash
# arbiter beside its peers, in one run on this machine, so that every figure
# can be read as a ratio to the others of the same round: a static
# OpenAI-shaped upstream (nginx) measured directly, through nginx as a
# keep-alive reverse proxy (the floor for any L7 hop), through Portkey's
# gateway, and through arbiter's HTTP and gRPC fronts with an `openai`
# backend pointed at that upstream; plus arbiter's gRPC front over the
# in-process simulator answering at once (no HTTP hop to a backend).
#
#   bench/peers.sh [--open-loop] [--profile] [--no-closed-loop] [ARBITER_BINARY]
#
# Closed loop (wrk for HTTP, h2load for gRPC; CONNS connections, DUR
# seconds a row) prints req/s, latency, and for arbiter the CPU time it
# spent per request; --open-loop then runs open_loop_bench (next to
# ARBITER_BINARY in bench/) at RATES req/s against the upstream, nginx,
# arbiter's fronts and the simulator; --profile records arbiter's gRPC
# Infer path with `perf record -g` at PROFILE_RATE req/s (open loop, 1500)
# for PROFILE_SECONDS (8), over the upstream and over the simulator, and
# prints where the time went (bench/perf_categories.py).
#
# Env: DUR (8), CONNS (32), ROUNDS (1), RATES (1000,3000,5000), OL_SECONDS
# (10), OL_ROUNDS (1), PORTKEY (1; 0 skips it; the first run installs
# @portkey-ai/gateway with npm into PEERS_CACHE, default
# ~/.cache/arbiter-peers), UPSTREAM_PORT (18081), PROXY_PORT (18082),
# PORTKEY_PORT (18787), ARBITER_HTTP_PORT (18090), EVENT_THREADS (the openai
# backend's event_threads; unset for the default). BASELINE=ANOTHER_ARBITER
# adds its HTTP (on ARBITER_HTTP_PORT + 1) and gRPC rows ("base:" ones) after
# this binary's in every round, to compare two builds in one run.
# Needs nginx, wrk, h2load (Debian: make bench-deps), protoc, curl, python3.
# Loopback only; every process it starts is stopped on exit.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

open_loop=0
profile=0
closed_loop=1
arbiter=$root/build/arbiter
while (($#)); do
  case $1 in
    --open-loop) open_loop=1 ;;
    --profile) profile=1 ;;
    --no-closed-loop) closed_loop=0 ;;
    -h | --help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) arbiter=$1 ;;
  esac
  shift
done
DUR=${DUR:-8}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-1}
RATES=${RATES:-1000,3000,5000}
OL_SECONDS=${OL_SECONDS:-10}
OL_ROUNDS=${OL_ROUNDS:-1}
PORTKEY=${PORTKEY:-1}
UPSTREAM_PORT=${UPSTREAM_PORT:-18081}
PROXY_PORT=${PROXY_PORT:-18082}
PORTKEY_PORT=${PORTKEY_PORT:-18787}
ARBITER_HTTP_PORT=${ARBITER_HTTP_PORT:-18090}
PEERS_CACHE=${PEERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/arbiter-peers}
open_loop_bench=$(dirname "$arbiter")/bench/open_loop_bench

for tool in nginx wrk h2load protoc curl python3; do
  command -v $tool >/dev/null || {
    echo "peers.sh: needs $tool (make bench-deps installs nginx, wrk and nghttp2-client's h2load)" >&2
    exit 2
  }
done
[[ -x $arbiter ]] || { echo "peers.sh: no arbiter binary at $arbiter (cmake --build build --target arbiter)" >&2; exit 2; }
if ((open_loop || profile)) && [[ ! -x $open_loop_bench ]]; then
  echo "peers.sh: --open-loop and --profile need $open_loop_bench (cmake --build build --target open_loop_bench)" >&2
  exit 2
fi
if ((profile)) && ! command -v perf >/dev/null; then
  echo "peers.sh: --profile needs perf (Debian: linux-perf)" >&2
  exit 2
fi
PROFILE_RATE=${PROFILE_RATE:-1500}
PROFILE_SECONDS=${PROFILE_SECONDS:-8}
BASE_HTTP_PORT=$((ARBITER_HTTP_PORT + 1))
for port in $UPSTREAM_PORT $PROXY_PORT $PORTKEY_PORT $ARBITER_HTTP_PORT $BASE_HTTP_PORT; do
  if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/"; then
    echo "peers.sh: something already answers on 127.0.0.1:$port; stop it or choose another port (see the header)" >&2
    exit 2
  fi
done

. "$here/lib.sh"
bench_start_run arbiter-peers

# Waits until POST $1 answers at all (any status), for up to $2 seconds.
wait_http() {
  local deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    curl -s -o /dev/null --max-time 1 -X POST "$1" -d '{}' && return 0
    sleep 0.2
  done
  return 1
}

# The upstream and the nginx proxy.
sed -e "s|RUN_DIR|$run|g" -e "s|UPSTREAM_PORT|$UPSTREAM_PORT|g" -e "s|PROXY_PORT|$PROXY_PORT|g" \
  "$here/peers/upstream-nginx.conf" >"$run/nginx.conf"
nginx -c "$run/nginx.conf" -g 'daemon off;' 2>"$run/nginx.start" &
pids+=($!)
nginx_master=$!
wait_http "http://127.0.0.1:$UPSTREAM_PORT/v1/chat/completions" 10 ||
  { echo "peers.sh: nginx did not start:" >&2; cat "$run/nginx.start" "$run/nginx.err" >&2 2>/dev/null; exit 1; }
sed "s|UPSTREAM_PORT|$UPSTREAM_PORT|g" "$here/peers/post.lua" >"$run/post.lua"

# Portkey's gateway (Node), told by headers to forward to the upstream.
portkey_up=0
if ((PORTKEY)); then
  if [[ ! -x $PEERS_CACHE/node_modules/.bin/gateway ]] && command -v npm >/dev/null; then
    echo "installing @portkey-ai/gateway@1.15.2 into $PEERS_CACHE (once)"
    mkdir -p "$PEERS_CACHE" && (cd "$PEERS_CACHE" && { [[ -f package.json ]] || npm init -y >/dev/null; } &&
      timeout 300 npm install --no-audit --no-fund --loglevel=error @portkey-ai/gateway@1.15.2 >"$run/npm.log" 2>&1)
  fi
  if [[ -x $PEERS_CACHE/node_modules/.bin/gateway ]]; then
    (cd "$PEERS_CACHE" && exec node_modules/.bin/gateway --port="$PORTKEY_PORT") >"$run/portkey.log" 2>&1 &
    pids+=($!)
    wait_http "http://127.0.0.1:$PORTKEY_PORT/v1/chat/completions" 30 && portkey_up=1
  fi
  ((portkey_up)) || echo "note: Portkey did not start (no npm, no network for its install, or see its log); its row is skipped"
fi

# arbiter over the upstream, and arbiter over its simulator. The route is
# named like the model the load asks for ("mock"), so the HTTP front's
# `model` pins it, as the policy does for gRPC.
cat >"$run/arbiter-openai.yaml" <<EOF
server: {http_listen: "127.0.0.1:$ARBITER_HTTP_PORT"}
tasks: [chat]
policy: {pinned: {route: mock}}
backends:
  - name: upstream
    openai: {base_url: "http://127.0.0.1:$UPSTREAM_PORT/v1"${EVENT_THREADS:+, event_threads: $EVENT_THREADS}}
routes:
  - {name: mock, kind: fine_tuned, backend: upstream, model: mock}
EOF
cat >"$run/arbiter-sim.yaml" <<EOF
server: {http_listen: "off"}
tasks: [chat]
policy: {pinned: {route: mock}}
backends:
  - name: sim
    sim:
      time_to_first_token_seconds: 0
      seconds_per_token: 0
      output_tokens: 7
      dataset: $root/quickstart/questions.jsonl
      models: [{name: mock, accuracy: 0.8}]
routes:
  - {name: mock, kind: fine_tuned, backend: sim, model: mock}
EOF
start_arbiter() { # name config -> sets grpc_<name>, metrics_<name>, pid_<name>
  "$arbiter" serve --config "$2" --grpc-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --no-state \
    >"$run/$1.log" 2>&1 &
  pids+=($!)
  printf -v "pid_$1" '%s' $!
  local grpc metrics
  grpc=$(line_after "$run/$1.log" "grpc listening on ") || exit 1
  metrics=$(line_after "$run/$1.log" "metrics on ") || exit 1
  printf -v "grpc_$1" '%s' "$grpc"
  printf -v "metrics_$1" '%s' "$metrics"
}
start_arbiter openai "$run/arbiter-openai.yaml"
start_arbiter sim "$run/arbiter-sim.yaml"
BASELINE=${BASELINE:-}
if [[ -n $BASELINE ]]; then
  sed "s/http_listen: \"[^\"]*\"/http_listen: \"127.0.0.1:$BASE_HTTP_PORT\"/" "$run/arbiter-openai.yaml" >"$run/base-openai.yaml"
  arbiter_under_test=$arbiter
  arbiter=$BASELINE
  start_arbiter base_openai "$run/base-openai.yaml"
  start_arbiter base_sim "$run/arbiter-sim.yaml"
  arbiter=$arbiter_under_test
fi

arbiter_http_up=0
body='{"model":"mock","messages":[{"role":"user","content":"Say hello"}]}'
if [[ $(curl -s -o "$run/http.out" -w '%{http_code}' --max-time 2 -H 'content-type: application/json' \
  -d "$body" "http://127.0.0.1:$ARBITER_HTTP_PORT/v1/chat/completions") == 200 ]]; then
  arbiter_http_up=1
else
  echo "note: arbiter's HTTP front does not answer POST /v1/chat/completions on 127.0.0.1:$ARBITER_HTTP_PORT (server.http_listen); its rows are skipped"
fi

# gRPC's wire form of one InferRequest for h2load.
printf 'messages { role: ROLE_USER content: "Say hello" }\n' |
  protoc --encode=arbiter.v1.InferRequest -I "$root/proto" "$root/proto/arbiter/v1/gateway.proto" >"$run/req.pb" || exit 1
python3 -c "import struct,sys; b=open(sys.argv[1],'rb').read(); open(sys.argv[2],'wb').write(b'\0'+struct.pack('>I',len(b))+b)" \
  "$run/req.pb" "$run/req.grpc"

# Sum of arbiter's request counters at $1 (a /metrics URL): "ok failed".
arbiter_counts() {
  curl -s --max-time 5 "$1" | awk '
    /^arbiter_requests_total\{/ { if ($1 ~ /outcome="ok"/) ok += $2; else bad += $2 }
    /^arbiter_rejected_requests_total\{/ { bad += $2 }
    END { printf "%d %d\n", ok, bad }'
}

declare -A nginx_rps
row() { # round name rps p50 p99 errors [cpu µs/request]
  local share=""
  if [[ -n ${nginx_rps[$1]:-} && $3 != - ]]; then
    share=$(awk -v a="$3" -v b="${nginx_rps[$1]}" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b }')
  fi
  printf '%-5s %-22s %10s %8s %14s %14s %8s %8s\n' "$1" "$2" "$3" "$share" "$4" "$5" "$6" "${7:-}"
}
# CPU seconds (user + system) process $1 has used.
cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' "/proc/$1/stat"
}
wrk_row() { # round name url [pid: its CPU per request is shown]
  local out rps cpu0 cpu1 cpu=
  [[ -n ${4:-} ]] && cpu0=$(cpu_seconds "$4")
  out=$(timeout $((DUR + 30)) wrk -t1 -c"$CONNS" -d"${DUR}s" -s "$run/post.lua" --latency "$3/v1/chat/completions" 2>&1)
  rps=$(awk '/Requests\/sec/ { printf "%.0f", $2 }' <<<"$out")
  [[ $2 == nginx ]] && nginx_rps[$1]=$rps
  if [[ -n ${4:-} ]]; then
    cpu1=$(cpu_seconds "$4")
    cpu=$(awk -v c0="$cpu0" -v c1="$cpu1" '/requests in/ { n = $1 } END { if (n > 0) printf "%.0f", 1e6 * (c1 - c0) / n }' <<<"$out")
  fi
  row "$1" "$2" "${rps:--}" "$(awk '$1 == "50%" { print $2 }' <<<"$out")" "$(awk '$1 == "99%" { print $2 }' <<<"$out")" \
    "$(awk '/Non-2xx/ { n += $NF } /Socket errors/ { for (i = 3; i <= NF; i++) n += $i } END { print n + 0 }' <<<"$out")" "$cpu"
}
h2_row() { # round name address metrics_url pid
  local out before after rps mean max cpu0 cpu1
  before=$(arbiter_counts "$4")
  cpu0=$(cpu_seconds "$5")
  out=$(timeout $((DUR + 30)) h2load -t1 -c"$CONNS" -m1 -D "$DUR" -d "$run/req.grpc" \
    -H 'content-type: application/grpc' -H 'te: trailers' "http://$3/arbiter.v1.Gateway/Infer" 2>&1)
  after=$(arbiter_counts "$4")
  cpu1=$(cpu_seconds "$5")
  rps=$(awk '/finished in/ { gsub(",", "", $4); printf "%.0f", $4 }' <<<"$out")
  mean=$(awk '/time for request:/ { print $6 }' <<<"$out")
  max=$(awk '/time for request:/ { print $5 }' <<<"$out")
  # h2load sees HTTP/2 status 200 for every gRPC call; arbiter's counters
  # say which failed.
  row "$1" "$2" "${rps:--}" "mean $mean" "max $max" \
    "$(awk -v b="$before" -v a="$after" 'BEGIN { split(b, x, " "); split(a, y, " "); print y[2] - x[2] }')" \
    "$(awk -v b="$before" -v a="$after" -v c0="$cpu0" -v c1="$cpu1" 'BEGIN {
       split(b, x, " "); split(a, y, " "); n = y[1] + y[2] - x[1] - x[2]
       if (n > 0) printf "%.0f", 1e6 * (c1 - c0) / n }')"
}

echo "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
if ((closed_loop)); then
  echo
  echo "closed loop: $CONNS connections, ${DUR} s a row (wrk -t1 for HTTP, h2load -t1 -m1 for gRPC); % of nginx in the same round"
  echo "cpu µs/req: the arbiter process's CPU time (user + system) over the requests it answered"
  printf '%-5s %-22s %10s %8s %14s %14s %8s %8s\n' round target req/s "% nginx" p50 p99 errors "cpu µs/req"
  for ((r = 1; r <= ROUNDS; r++)); do
    wrk_row $r direct "http://127.0.0.1:$UPSTREAM_PORT"
    wrk_row $r nginx "http://127.0.0.1:$PROXY_PORT"
    ((portkey_up)) && wrk_row $r portkey "http://127.0.0.1:$PORTKEY_PORT"
    if ((arbiter_http_up)); then
      wrk_row $r arbiter-http "http://127.0.0.1:$ARBITER_HTTP_PORT" "$pid_openai"
    else
      printf '%-5s %-22s (skipped: the HTTP front does not answer)\n' $r arbiter-http
    fi
    h2_row $r arbiter-grpc "$grpc_openai" "$metrics_openai" "$pid_openai"
    h2_row $r arbiter-grpc-sim "$grpc_sim" "$metrics_sim" "$pid_sim"
    if [[ -n $BASELINE ]]; then
      ((arbiter_http_up)) && wrk_row $r base:arbiter-http "http://127.0.0.1:$BASE_HTTP_PORT" "$pid_base_openai"
      h2_row $r base:arbiter-grpc "$grpc_base_openai" "$metrics_base_openai" "$pid_base_openai"
      h2_row $r base:arbiter-grpc-sim "$grpc_base_sim" "$metrics_base_sim" "$pid_base_sim"
    fi
  done
fi

if ((open_loop)); then
  echo
  # One nginx serves the upstream and the proxy: its CPU per request in the
  # nginx row is the proxy's and the upstream's together.
  nginx_pids=$(pgrep -P "$nginx_master" | paste -sd, -)
  targets=(--target "direct=http://127.0.0.1:$UPSTREAM_PORT" --pid "direct=$nginx_pids"
    --target "nginx=http://127.0.0.1:$PROXY_PORT" --pid "nginx=$nginx_pids"
    --target "arbiter-grpc=grpc://$grpc_openai" --pid "arbiter-grpc=$pid_openai")
  ((arbiter_http_up)) && targets+=(--target "arbiter-http=http://127.0.0.1:$ARBITER_HTTP_PORT" --pid "arbiter-http=$pid_openai")
  targets+=(--target "arbiter-grpc-sim=grpc://$grpc_sim" --pid "arbiter-grpc-sim=$pid_sim")
  [[ -n $BASELINE ]] && ((arbiter_http_up)) && targets+=(--target "base:arbiter-http=http://127.0.0.1:$BASE_HTTP_PORT" --pid "base:arbiter-http=$pid_base_openai")
  [[ -n $BASELINE ]] && targets+=(--target "base:arbiter-grpc=grpc://$grpc_base_openai" --pid "base:arbiter-grpc=$pid_base_openai"
    --target "base:arbiter-grpc-sim=grpc://$grpc_base_sim" --pid "base:arbiter-grpc-sim=$pid_base_sim")
  n_rates=$(tr ',' '\n' <<<"$RATES" | grep -c .)
  timeout $((OL_ROUNDS * n_rates * ${#targets[@]} / 4 * (OL_SECONDS + 15) + 60)) \
    "$open_loop_bench" "${targets[@]}" --nginx-status "http://127.0.0.1:$UPSTREAM_PORT/nginx_status" --rates "$RATES" --seconds "$OL_SECONDS" --rounds "$OL_ROUNDS"
fi
if ((profile)); then
  for name in openai sim ${BASELINE:+base_openai base_sim}; do
    grpc_var=grpc_$name pid_var=pid_$name metrics_var=metrics_$name
    echo
    echo "profile of arbiter ($name: ${!grpc_var}) at $PROFILE_RATE req/s, open loop, ${PROFILE_SECONDS} s:"
    before=$(arbiter_counts "${!metrics_var}")
    cpu0=$(cpu_seconds "${!pid_var}")
    timeout $((PROFILE_SECONDS + 30)) "$open_loop_bench" --target "arbiter-$name=grpc://${!grpc_var}" \
      --rates "$PROFILE_RATE" --seconds "$PROFILE_SECONDS" | tail -n +4 &
    load=$!
    sleep 1
    perf record -F 999 -g -p "${!pid_var}" -o "$run/perf.$name" -- sleep $((PROFILE_SECONDS - 2)) \
      >"$run/perf.$name.log" 2>&1
    wait $load
    after=$(arbiter_counts "${!metrics_var}")
    cpu1=$(cpu_seconds "${!pid_var}")
    awk -v b="$before" -v a="$after" -v c0="$cpu0" -v c1="$cpu1" 'BEGIN {
      split(b, x, " "); split(a, y, " "); n = y[1] + y[2] - x[1] - x[2]
      if (n > 0) printf "arbiter CPU per request over the run: %.0f µs (%d requests)\n", 1e6 * (c1 - c0) / n, n }'
    perf script -i "$run/perf.$name" -F comm,tid,ip,sym,dso 2>/dev/null | python3 "$here/perf_categories.py"
  done
fi
exit 0
