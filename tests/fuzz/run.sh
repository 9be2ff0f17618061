#!/usr/bin/env bash
# Runs every libFuzzer target of BUILD_DIR (built with -DARBITER_FUZZ=ON) for
# SECONDS each, from tests/fuzz/corpus/NAME (copied: what it finds stays in
# BUILD_DIR/fuzz-corpus), and prints executions and crashes per target. A
# crash leaves its input in BUILD_DIR/fuzz-crashes: fix it and add the input
# to tests/fuzz/regressions/NAME, which every build's tests replay.
#
#   tests/fuzz/run.sh build-fuzz 600 [TARGET...]
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: run.sh BUILD_DIR SECONDS [TARGET...]}
seconds=${2:?usage: run.sh BUILD_DIR SECONDS [TARGET...]}
shift 2
targets=("$@")
((${#targets[@]})) || targets=(config chat_request backend_answer backend_stream request_id replay_log ingest_lines)
mkdir -p "$build/fuzz-corpus" "$build/fuzz-crashes" "$build/fuzz-logs"
failed=0
printf '%-16s %8s %14s %8s\n' target seconds executions crashes
for target in "${targets[@]}"; do
  binary=$build/tests/fuzz/fuzz_$target
  [[ -x $binary ]] || { echo "run.sh: no $binary (build it with -DARBITER_FUZZ=ON)" >&2; exit 2; }
  corpus=$build/fuzz-corpus/$target
  mkdir -p "$corpus"
  cp -n "$here/corpus/$target/"* "$corpus/" 2>/dev/null
  log=$build/fuzz-logs/$target.log
  # -rss_limit_mb: a leak or a blow-up fails rather than filling memory.
  "$binary" -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 \
    -artifact_prefix="$build/fuzz-crashes/$target-" "$corpus" >"$log" 2>&1
  code=$?
  runs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log" | tail -1)
  # Slow units (written when a run stalls, e.g. on a busy machine) are not
  # failures; crashes, leaks, out-of-memory and timeouts are.
  crashes=$(ls "$build/fuzz-crashes/" 2>/dev/null | grep -cE "^$target-(crash|leak|oom|timeout)-")
  printf '%-16s %8s %14s %8s\n' "$target" "$seconds" "${runs:-?}" "$crashes"
  if ((code != 0 || crashes > 0)); then
    failed=1
    echo "  $target failed (exit $code); its log: $log" >&2
    grep -m5 -E "ERROR|SUMMARY|==[0-9]+==" "$log" >&2
  fi
done
exit $failed
