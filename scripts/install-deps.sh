#!/usr/bin/env bash
# Installs the Debian 12 packages the gateway needs, and only those missing.
# Idempotent: a second run with everything present does nothing and needs no network.
#   scripts/install-deps.sh            build + run dependencies
#   scripts/install-deps.sh test       ... plus what the test suite uses
#   scripts/install-deps.sh bench      ... plus the peers the benchmarks compare with
#   scripts/install-deps.sh fuzz       ... plus clang and libFuzzer for tests/fuzz
set -euo pipefail

build_pkgs=(build-essential cmake pkg-config libuv1-dev node-llhttp libssl-dev libspdlog-dev
  libfmt-dev libre2-dev libhiredis-dev libyaml-cpp-dev nlohmann-json3-dev libgtest-dev
  libgmock-dev libbenchmark-dev libnghttp2-dev python3 curl openssl ca-certificates)
test_pkgs=(redis-server redis-tools python3-pytest python3-jwt python3-cryptography python3-yaml python3-protobuf protobuf-compiler prometheus
  testssl.sh chromium python3-h2 nghttp2-client python3-grpcio python3-grpc-tools)
bench_pkgs=(nginx haproxy wrk apache2-utils redis-server nghttp2-client)
fuzz_pkgs=(clang-14 libclang-rt-14-dev)

pkgs=("${build_pkgs[@]}")
for what in "$@"; do
  case "$what" in
    test) pkgs+=("${test_pkgs[@]}") ;;
    bench) pkgs+=("${bench_pkgs[@]}") ;;
    fuzz) pkgs+=("${fuzz_pkgs[@]}") ;;
    *) echo "install-deps: unknown set '$what' (known: test, bench, fuzz)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${pkgs[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "install-deps: installing ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else
    echo "install-deps: not root; run: apt-get install ${missing[*]}" >&2; exit 1
  fi
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
# Packaged services (redis, nginx) must not start on install: tests and benchmarks
# start their own on free ports.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee $policy >/dev/null && $SUDO chmod +x $policy && created_policy=1
fi
trap '[[ $created_policy -eq 1 ]] && $SUDO rm -f $policy' EXIT
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
