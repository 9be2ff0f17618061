#!/usr/bin/env bash
# The chaos test for longer: ROUNDS rounds of 30 s (default 20, 10 minutes)
# at 40 requests a second with feedback, each round killing one sim-server
# and restarting it, stopping another for 5 s, and reloading the config
# twice (prices changed, a route added, then removed again). Prints the
# test's summary: requests sent, answered and answered OK, fallbacks, the
# worst ejection and return times, the gateway's RSS before and after, and
# any assertion that failed; exits as the test does.
#
#   bench/chaos_soak.sh [BUILD_DIR]
#
# Env: ROUNDS (20). Loopback only; the test stops what it starts.
set -uo pipefail
build=${1:-build}
ROUNDS=${ROUNDS:-20}
test_binary="$build/tests/chaos_e2e_test"
if [ ! -x "$test_binary" ]; then
  echo "chaos_soak.sh: $test_binary not found; build first (make build)" >&2
  exit 2
fi
echo "$ROUNDS rounds of 30 s of faults at 40 requests a second"
output=$(ARBITER_CHAOS_ROUNDS=$ROUNDS "$test_binary" --gtest_brief=1 2>&1)
status=$?
grep -E "sent|Failure|Expected|Which is|got" <<<"$output"
exit "$status"
