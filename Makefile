# Thin wrapper over CMake. `make run` and `make test` install what is missing first.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps deps-test deps-bench build run test test-asan asan test-fuzz fuzz-build bench fuzz check clean

all: build

deps:
	@scripts/install-deps.sh

deps-test:
	@scripts/install-deps.sh test

deps-bench:
	@scripts/install-deps.sh test bench

build: deps
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD_DIR) -j$(JOBS)

# Brings the gateway up on conf/gateway.yaml in front of the demo upstream.
run: build
	@scripts/run-demo.sh $(BUILD_DIR)/gateway

test: deps-test
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD_DIR) -j$(JOBS)
	@cd $(BUILD_DIR) && ctest --output-on-failure --timeout 600 -j$(JOBS)

# The whole suite once more under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan asan:
	@$(MAKE) test BUILD_DIR=build-asan BUILD_TYPE=Debug CMAKE_FLAGS="-DGATEWAY_SANITIZE=ON -DGATEWAY_BENCH=OFF"

# libFuzzer targets (clang-14) for FUZZ_SECONDS each, starting from the seed corpora in
# tests/fuzz/corpus/; new inputs go to $(FUZZ_DIR)/corpus/, crashes to $(FUZZ_DIR)/artifacts/
# (copy a reproducer into the seed corpus once fixed). Not part of `make test`.
FUZZ_SECONDS ?= 60
FUZZ_DIR ?= build-fuzz
FUZZ_TARGETS ?= request_head_fuzz response_head_fuzz config_fuzz path_fuzz
FUZZ_FLAGS ?=
fuzz-build:
	@scripts/install-deps.sh fuzz
	@CC=clang-14 CXX=clang++-14 cmake -S . -B $(FUZZ_DIR) -DGATEWAY_FUZZ=ON -DGATEWAY_TESTS=OFF \
	  -DGATEWAY_BENCH=OFF -DGATEWAY_LTO=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(FUZZ_DIR) -j$(JOBS) --target $(FUZZ_TARGETS)

# What CI runs of the fuzzers: each target's short deterministic run and its seed corpus,
# reproducers of fixed crashes included (ctest label fuzz).
test-fuzz: fuzz-build
	@cd $(FUZZ_DIR) && ctest --output-on-failure -L fuzz -j$(JOBS)

fuzz: fuzz-build
	@status=0; for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$t $(FUZZ_DIR)/artifacts; \
	  seeds=tests/fuzz/corpus/$$t; [ -d $$seeds ] || seeds=; \
	  echo "== $$t for $(FUZZ_SECONDS) s"; \
	  dict=tests/fuzz/$$t.dict; [ -f $$dict ] && dict=-dict=$$dict || dict=; \
	  $(FUZZ_DIR)/tests/fuzz/$$t $(FUZZ_DIR)/corpus/$$t $$seeds -max_total_time=$(FUZZ_SECONDS) \
	    -timeout=25 $$dict -artifact_prefix=$(FUZZ_DIR)/artifacts/$$t- -print_final_stats=1 \
	    $(FUZZ_FLAGS) \
	    || { status=1; echo "== $$t FAILED: see $(FUZZ_DIR)/artifacts/"; }; \
	done; exit $$status

check: build
	@$(BUILD_DIR)/gateway --check -c conf/gateway.yaml

bench: deps-bench build
	@bench/compare.sh

clean:
	rm -rf build build-asan build-fuzz
