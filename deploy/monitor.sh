#!/usr/bin/env bash
# arbiter's monitoring stack on one machine, for a demo or to work on the
# dashboard: the gateway (embedded quickstart config unless ARBITER_CONFIG is
# set), labeled traffic with feedback (`arbiter loadgen --feedback`), and a
# real Prometheus scraping the gateway with deploy/prometheus's recording
# rules and alerts. Ctrl-C stops everything and removes the scratch data.
# `make monitor` builds first and runs this.
#
# Environment (defaults in brackets):
#   ARBITER_BIN       the arbiter binary                [build/arbiter]
#   ARBITER_CONFIG    a config file to serve            [embedded quickstart]
#   GRPC_PORT         gateway gRPC port                 [50051]
#   METRICS_PORT      gateway metrics port              [9464]
#   HTTP_PORT         gateway OpenAI-compatible HTTP    [8080]
#   PROMETHEUS_PORT   Prometheus UI and API port        [9090]
#   SCRAPE_INTERVAL   scrape and rule interval          [15s]
#   LOADGEN_QPS       requests per second, 0 for none   [20]
#   MONITOR_DIR       scratch dir (TSDB, logs, config)  [a new mktemp -d,
#                     removed on exit; a given one is kept]
#   KEEP_DATA=1       keep the scratch dir on exit
#
# Both listen on 127.0.0.1 only. If you point Grafana at this Prometheus, use
# the provisioning files in deploy/grafana (see deploy/README.md); with a
# non-default PROMETHEUS_PORT, change the datasource URL accordingly.

set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
arbiter="${ARBITER_BIN:-$root/build/arbiter}"
grpc_port="${GRPC_PORT:-50051}"
metrics_port="${METRICS_PORT:-9464}"
http_port="${HTTP_PORT:-8080}"
prometheus_port="${PROMETHEUS_PORT:-9090}"
scrape_interval="${SCRAPE_INTERVAL:-15s}"
qps="${LOADGEN_QPS:-20}"

die() {
  echo "monitor: $*" >&2
  exit 1
}

[ -x "$arbiter" ] || die "no arbiter binary at $arbiter (run \`make build\` or set ARBITER_BIN)"
command -v prometheus >/dev/null 2>&1 ||
  die "prometheus not found: apt-get install prometheus (or \`make deps\`)"
command -v curl >/dev/null 2>&1 || die "curl not found: apt-get install curl"
for port in "$grpc_port" "$metrics_port" "$prometheus_port"; do
  [[ "$port" =~ ^[0-9]+$ ]] || die "\"$port\" is not a port number"
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is already in use (set GRPC_PORT, METRICS_PORT or PROMETHEUS_PORT)"
  fi
done

if [ -n "${MONITOR_DIR:-}" ]; then
  dir="$MONITOR_DIR"
  mkdir -p "$dir"
  made_dir=0  # not ours to delete
else
  dir="$(mktemp -d -t arbiter-monitor.XXXXXX)"
  made_dir=1
fi
gateway_pid=""
prometheus_pid=""
loadgen_pid=""

# shellcheck disable=SC2317  # invoked by the traps below
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "monitor: stopping"
  # Only the processes this script started, by their pid.
  local pid
  for pid in "$loadgen_pid" "$prometheus_pid" "$gateway_pid"; do
    if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for pid in "$loadgen_pid" "$prometheus_pid" "$gateway_pid"; do
    if [ -n "$pid" ]; then wait "$pid" 2>/dev/null || true; fi
  done
  if [ "${KEEP_DATA:-0}" = 1 ] || [ "$made_dir" = 0 ]; then
    echo "monitor: data and logs kept in $dir"
  else
    rm -rf "$dir"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits until a URL answers (the process must still be alive).
wait_for() {
  local url="$1" pid="$2" name="$3" log="$4"
  for _ in $(seq 1 120); do
    if curl -sf -o /dev/null --max-time 1 "$url"; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "monitor: $name exited; its log ($log):" >&2
      tail -n 20 "$log" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
  die "$name did not answer on $url within 60s (log: $log)"
}

# 1. The gateway.
serve_args=(serve --grpc-listen "127.0.0.1:$grpc_port"
  --metrics-listen "127.0.0.1:$metrics_port" --http-listen "127.0.0.1:$http_port")
if [ -n "${ARBITER_CONFIG:-}" ]; then
  serve_args+=(--config "$ARBITER_CONFIG")
fi
"$arbiter" "${serve_args[@]}" >"$dir/arbiter.log" 2>&1 &
gateway_pid=$!
wait_for "http://127.0.0.1:$metrics_port/metrics" "$gateway_pid" arbiter "$dir/arbiter.log"

# 2. Prometheus: deploy/prometheus/prometheus.yml with this run's target,
# interval and absolute rule paths (rule_files resolve against the config's
# folder, and the copy lives in the scratch dir).
sed -e "s|'127\.0\.0\.1:9464'|'127.0.0.1:$metrics_port'|" \
  -e "s|^\( *\)- rules/\*\.yml|\1- $root/deploy/prometheus/rules/*.yml|" \
  -e "s|^\( *scrape_interval:\).*|\1 $scrape_interval|" \
  -e "s|^\( *evaluation_interval:\).*|\1 $scrape_interval|" \
  "$root/deploy/prometheus/prometheus.yml" >"$dir/prometheus.yml"
prometheus --config.file="$dir/prometheus.yml" \
  --storage.tsdb.path="$dir/data" \
  --web.listen-address="127.0.0.1:$prometheus_port" \
  --web.enable-lifecycle >"$dir/prometheus.log" 2>&1 &
prometheus_pid=$!
wait_for "http://127.0.0.1:$prometheus_port/-/ready" "$prometheus_pid" prometheus "$dir/prometheus.log"

# 3. Traffic with feedback, in 10-minute runs until stopped.
if [ "$qps" != 0 ]; then
  (
    child=""
    trap '[ -n "$child" ] && kill -TERM "$child" 2>/dev/null; exit 0' TERM
    while true; do
      "$arbiter" loadgen --target "127.0.0.1:$grpc_port" --qps "$qps" \
        --duration 10m --feedback >>"$dir/loadgen.log" 2>&1 &
      child=$!
      wait "$child" || sleep 1
    done
  ) &
  loadgen_pid=$!
fi

cat <<EOF

arbiter monitoring is up (Ctrl-C stops everything):
  Prometheus UI    http://127.0.0.1:$prometheus_port
    rules          http://127.0.0.1:$prometheus_port/rules
    alerts         http://127.0.0.1:$prometheus_port/alerts
    targets        http://127.0.0.1:$prometheus_port/targets
  gateway metrics  http://127.0.0.1:$metrics_port/metrics
  gateway gRPC     127.0.0.1:$grpc_port   e.g. $arbiter economics --target 127.0.0.1:$grpc_port
  traffic          $([ "$qps" != 0 ] && echo "$qps requests/s with feedback" || echo "none (LOADGEN_QPS=0)")
  logs             $dir/{arbiter,prometheus,loadgen}.log

Try in the Prometheus UI (rates need two scrapes, 1h figures build up):
  route:arbiter_cost_per_request_usd:ratio_rate5m
  route:arbiter_cost_per_correct_answer_usd:ratio_rate1h
  arbiter_breakeven_recovered_ratio
Grafana: see deploy/README.md ("Grafana").
EOF

# Runs until Ctrl-C, or until the gateway or Prometheus dies.
set +e
wait -n "$gateway_pid" "$prometheus_pid"
echo "monitor: the gateway or Prometheus exited; see $dir" >&2
KEEP_DATA=1
exit 1
