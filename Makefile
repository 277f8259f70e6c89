# Thin wrapper over CMake. `make run` and `make test` install what is missing first.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps deps-test deps-bench build run test test-asan asan bench fuzz check clean

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

check: build
	@$(BUILD_DIR)/gateway --check -c conf/gateway.yaml

bench: deps-bench build
	@bench/compare.sh

clean:
	rm -rf build build-asan build-fuzz
