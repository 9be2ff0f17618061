# arbiter: the two commands a new user needs are `make run` and `make test`.
# Both install missing Debian packages first (as root, or with sudo).

BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= 2
CMAKE_FLAGS ?=

DEB_PACKAGES := build-essential cmake pkg-config ccache git \
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
  libabsl-dev libfaiss-dev libopenblas0-pthread libopenblas-dev \
  prometheus-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev \
  libcurl4-openssl-dev libsqlite3-dev libyaml-cpp-dev libcpp-httplib-dev \
  nlohmann-json3-dev libhnswlib-dev libboost1.81-dev libcli11-dev libssl-dev \
  prometheus curl openssl clang-14 libclang-rt-14-dev

# The peers bench/peers.sh measures arbiter beside (make bench-deps):
# nginx serves the static upstream and the reverse proxy, wrk and h2load
# (nghttp2-client) load them. `perf` (linux-perf) is needed only for
# bench/peers.sh --profile.
BENCH_DEB_PACKAGES := nginx wrk nghttp2-client

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps build run test test-sanitize test-tsan bench clean node-deps monitor \
  bench-deps bench-peers fuzz

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  $(SUDO) apt-get update && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $$missing; \
	fi
	@# Node.js runs the cross-language client test; keep an existing install.
	@command -v node >/dev/null && command -v npm >/dev/null || { \
	  $(SUDO) apt-get update && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends nodejs npm; }

$(BUILD_DIR)/CMakeCache.txt:
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS)

build: deps $(BUILD_DIR)/CMakeCache.txt
	cmake --build $(BUILD_DIR) -j$(JOBS)

run: build
	mkdir -p data
	./$(BUILD_DIR)/arbiter serve

# The gateway, traffic with feedback, and a real Prometheus with
# deploy/prometheus's rules (UI on http://127.0.0.1:9090); Ctrl-C stops all.
# Ports and rates: see deploy/monitor.sh (e.g. PROMETHEUS_PORT=9091).
monitor: build
	ARBITER_BIN=./$(BUILD_DIR)/arbiter deploy/monitor.sh

node-deps: deps
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error

test: build node-deps
	cd $(BUILD_DIR) && ctest --output-on-failure -j$(JOBS)

# The same suite under AddressSanitizer and UndefinedBehaviorSanitizer.
test-sanitize:
	$(MAKE) test BUILD_DIR=build-asan BUILD_TYPE=Debug \
	  CMAKE_FLAGS="-DARBITER_SANITIZE=ON -DARBITER_BUILD_BENCH=OFF"

# The concurrent units (statistics snapshots, timer queue, decision log)
# under ThreadSanitizer.
test-tsan: deps
	cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DARBITER_TSAN=ON \
	  -DARBITER_BUILD_BENCH=OFF
	cmake --build build-tsan -j$(JOBS) --target concurrency_test
	TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/tests/tsan.supp" ./build-tsan/tests/concurrency_test

# libFuzzer over every parser of untrusted input (tests/fuzz), FUZZ_SECONDS
# each; a crash fails it and leaves its input in build-fuzz/fuzz-crashes.
FUZZ_SECONDS ?= 600
fuzz: deps
	CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DARBITER_FUZZ=ON -DARBITER_BUILD_TESTS=OFF -DARBITER_BUILD_BENCH=OFF
	cmake --build build-fuzz -j$(JOBS) --target fuzz_config fuzz_chat_request \
	  fuzz_backend_answer fuzz_backend_stream fuzz_request_id fuzz_replay_log fuzz_ingest_lines
	tests/fuzz/run.sh build-fuzz $(FUZZ_SECONDS)

# The index and retrieval benchmarks at reduced size; bench/README.md has
# the full-size commands (1M vectors take about half an hour).
bench: build
	./$(BUILD_DIR)/bench/policy_bench
	./$(BUILD_DIR)/bench/decision_log_bench
	./$(BUILD_DIR)/bench/gateway_load_bench
	./$(BUILD_DIR)/bench/index_bench --quick
	./$(BUILD_DIR)/bench/retrieval_bench --quick

bench-deps:
	@missing=$$(for p in $(BENCH_DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  $(SUDO) apt-get update && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $$missing; \
	fi

# arbiter beside nginx and Portkey, closed and open loop (bench/README.md).
bench-peers: build bench-deps
	bench/peers.sh --open-loop ./$(BUILD_DIR)/arbiter

clean:
	rm -rf build build-asan build-tsan
