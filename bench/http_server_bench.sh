#!/usr/bin/env bash
# gateway/http's server beside nginx, in one run, on loopback: wrk (one
# thread, CONNS keep-alive connections, DUR seconds each) against GET /hello
# of http_server_bench (answered at once, then from another thread as a
# front waiting on a backend answers) and against nginx serving the same
# bytes from a static file (and from memory, `return 200`), with 1 and 2 I/O
# threads / worker processes. Ratios are to nginx's static file.
#
#   bench/http_server_bench.sh [HTTP_SERVER_BENCH_BINARY]
#
# Env: DUR (seconds per measurement, default 8), CONNS (default 32),
# THREADS (default "1 2"), ROUNDS (default 1). Needs wrk, nginx, curl.
set -euo pipefail

BIN=${1:-./build/bench/http_server_bench}
DUR=${DUR:-8}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1 2}
ROUNDS=${ROUNDS:-1}
for tool in wrk nginx curl python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool"; exit 2; }
done
[[ -x $BIN ]] || { echo "no $BIN (cmake --build build --target http_server_bench)"; exit 2; }

WORK=$(mktemp -d)
NGINX_CONF=""
SERVER_PID=""
cleanup() {
  [[ -n $NGINX_CONF ]] && nginx -c "$NGINX_CONF" -s stop 2>/dev/null || true
  [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Prints "req/s p50 p99" of one wrk run against $1.
measure() {
  local out
  out=$(wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "$1" 2>&1)
  if grep -q "Non-2xx\|Socket errors" <<<"$out"; then
    echo "wrk reported errors against $1:" >&2
    grep "Non-2xx\|Socket errors" <<<"$out" >&2
  fi
  printf '%s %s %s' "$(awk '/Requests\/sec/{print $2}' <<<"$out")" \
    "$(awk '$1=="50%"{print $2}' <<<"$out")" \
    "$(awk '$1=="99%"{print $2}' <<<"$out")"
}

row() {  # name "req/s p50 p99" [nginx req/s]
  read -r rps p50 p99 <<<"$2"
  local ratio=""
  [[ -n ${3:-} ]] && ratio=$(awk -v a="$rps" -v b="$3" 'BEGIN{printf "%.0f%% of nginx", 100*a/b}')
  printf '%-34s %10s req/s   p50 %-9s p99 %-9s %s\n' "$1" "$rps" "$p50" "$p99" "$ratio"
}

mkdir -p "$WORK/www"
printf 'hello\n' >"$WORK/www/hello"
chmod -R a+rX "$WORK"  # nginx's workers run as another user.

start_nginx() {  # workers port
  NGINX_CONF="$WORK/nginx.conf"
  cat >"$NGINX_CONF" <<CONF
worker_processes $1;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$2;
    root $WORK/www;
    default_type text/plain;
    location = /hello-in-memory { return 200 "hello\\n"; }
  }
}
CONF
  nginx -c "$NGINX_CONF"
  # Checks that it serves the file (a 200), not an error page.
  for _ in $(seq 50); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$2/hello") == 200 ]] && return
    sleep 0.1
  done
  echo "nginx does not serve $WORK/www/hello" >&2
  exit 1
}

stop_nginx() {
  nginx -c "$NGINX_CONF" -s stop 2>/dev/null
  while [[ -e $WORK/nginx.pid ]]; do sleep 0.1; done
  NGINX_CONF=""
}

start_server() {  # io_threads [--later]
  rm -f "$WORK/stdin" "$WORK/server.out"
  mkfifo "$WORK/stdin"
  "$BIN" --io-threads "$@" <"$WORK/stdin" >"$WORK/server.out" &
  SERVER_PID=$!
  exec 3>"$WORK/stdin"
  for _ in $(seq 100); do
    grep -q "listening on" "$WORK/server.out" 2>/dev/null && break
    sleep 0.05
  done
  SERVER_PORT=$(awk '/listening on/{print $3}' "$WORK/server.out")
}

stop_server() {
  exec 3>&-  # stdin closes: the server stops.
  wait "$SERVER_PID" || true
  SERVER_PID=""
}

echo "wrk -t1 -c$CONNS -d${DUR}s, GET /hello (6 bytes), keep-alive, $(nproc) cores"
for ((round = 1; round <= ROUNDS; round++)); do
  ((ROUNDS > 1)) && echo "round $round"
  for threads in $THREADS; do
    port=$(free_port)
    start_nginx "$threads" "$port"
    nginx_result=$(measure "http://127.0.0.1:$port/hello")
    row "nginx, $threads worker(s), static file" "$nginx_result"
    nginx_rps=${nginx_result%% *}
    row "  return 200 (no file)" \
      "$(measure "http://127.0.0.1:$port/hello-in-memory")" "$nginx_rps"
    stop_nginx

    start_server "$threads"
    row "arbiter http, $threads I/O thread(s)" \
      "$(measure "http://127.0.0.1:$SERVER_PORT/hello")" "$nginx_rps"
    stop_server

    start_server "$threads" --later
    row "  answered from another thread" \
      "$(measure "http://127.0.0.1:$SERVER_PORT/hello")" "$nginx_rps"
    stop_server
  done
done
