#!/usr/bin/env bash
# Validates arbiter's Prometheus setup: the config (and the rule files it
# loads), the rules, and the rules' unit tests. Exits non-zero on any
# failure; exits 0 with a note when promtool is not installed (Debian
# package `prometheus`). Run from anywhere; ctest runs it as prometheus_rules.
set -u

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
promtool="${PROMTOOL:-promtool}"

if ! command -v "$promtool" >/dev/null 2>&1; then
  echo "check.sh: promtool not found (apt-get install prometheus); skipping"
  exit 0
fi

shopt -s nullglob
rules=("$here"/rules/*.yml)
tests=("$here"/tests/*.yml)
if [ ${#rules[@]} -eq 0 ] || [ ${#tests[@]} -eq 0 ]; then
  echo "check.sh: no rule files or no tests under $here" >&2
  exit 1
fi

status=0
run() {
  echo "+ $*"
  "$@" || status=1
}
run "$promtool" check config "$here/prometheus.yml"
run "$promtool" check rules "${rules[@]}"
run "$promtool" test rules "${tests[@]}"

# Every recording rule has a promql_expr_test and every alert an
# alert_rule_test.
while read -r name; do
  if ! grep -Eq -- "expr: ${name}([ {]|\$)" "${tests[@]}"; then
    echo "check.sh: recording rule $name has no promql_expr_test" >&2
    status=1
  fi
done < <(sed -n 's/^ *- record: *//p' "${rules[@]}")
while read -r name; do
  if ! grep -Eq -- "alertname: ${name}\$" "${tests[@]}"; then
    echo "check.sh: alert $name has no alert_rule_test" >&2
    status=1
  fi
done < <(sed -n 's/^ *- alert: *//p' "${rules[@]}")

if [ "$status" -ne 0 ]; then
  echo "check.sh: FAILED" >&2
else
  echo "check.sh: all Prometheus checks passed"
fi
exit "$status"
