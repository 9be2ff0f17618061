# Helpers the benchmark scripts source: a scratch directory and the
# processes they start, both gone on exit, and reading a server's address
# off its log.

# Makes $run (a new directory under /tmp named after $1) and the list $pids
# of processes to stop: on exit every one is killed and waited for, and
# $run removed.
bench_start_run() {
  run=$(mktemp -d "/tmp/$1.XXXXXX")
  pids=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}
bench_cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  rm -rf "$run"
}

# Prints what follows $2 on the first line of file $1 starting with it,
# waiting up to 20 s for it; else prints the file to stderr and fails.
line_after() {
  local deadline=$((SECONDS + 20)) line
  while ((SECONDS < deadline)); do
    if line=$(grep -m1 "^$2" "$1" 2>/dev/null); then
      echo "${line#"$2"}"
      return 0
    fi
    sleep 0.1
  done
  echo "$(basename "$0"): no \"$2\" line in $(basename "$1"):" >&2
  cat "$1" >&2
  return 1
}

# Starts `arbiter sim-server` (binary $1) answering every request after 2 s
# with 16 tokens, for tasks $2 (a YAML list; default [faq]) on its route r;
# sets $sim_port. The slow backend the overload benchmarks put behind an
# `openai` backend. Call bench_start_run first.
bench_slow_sim() {
  local arbiter=$1 tasks=${2:-[faq]} root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  cat >"$run/sim.yaml" <<YAML
tasks: $tasks
policy: {pinned: {route: r}}
backends:
  - name: slow-sim
    sim:
      time_to_first_token_seconds: 2
      seconds_per_token: 0
      output_tokens: 16
      dataset: $root/quickstart/questions.jsonl
      models: [{name: m, accuracy: 0.8}]
routes:
  - {name: r, kind: fine_tuned, backend: slow-sim, model: m}
YAML
  "$arbiter" sim-server --listen 127.0.0.1:0 --config "$run/sim.yaml" \
    >"$run/sim.log" 2>&1 &
  pids+=($!)
  sim_port=$(line_after "$run/sim.log" "sim-server listening on ") || return 1
  sim_port=${sim_port##*:}
}
