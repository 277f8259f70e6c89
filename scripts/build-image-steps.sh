#!/usr/bin/env bash
# The container image's build and install steps, runnable on a Debian 12 host.
#
# The Dockerfile runs these very subcommands (build, install, verify), so what CI runs here
# on the host is what `docker build` runs. Docker itself cannot run on our build machines.
#
#   scripts/build-image-steps.sh [all] [--binary FILE] [--no-deps] [--build-dir DIR] [--stage DIR]
#       every step on the host: deps (scripts/install-deps.sh, as `make`), build, install
#       into a staging root (default build-image/stage), verify. --binary FILE skips the
#       build and installs FILE instead (the test suite passes the binary ctest built).
#   scripts/build-image-steps.sh build BUILD_DIR        configure and build the gateway (Release)
#   scripts/build-image-steps.sh install FILE STAGE     lay out the image's files under STAGE
#   scripts/build-image-steps.sh verify STAGE           check the staged image (see verify below)
#   scripts/build-image-steps.sh runtime-packages       print the runtime stage's package list
#
# The staging root mirrors the runtime image:
#   STAGE/usr/local/bin/gateway                the binary (stripped)
#   STAGE/usr/local/bin/gateway-healthcheck    the HEALTHCHECK command (deploy/docker/healthcheck.sh)
#   STAGE/etc/gateway/gateway.yaml             the default configuration (deploy/docker/gateway.yaml)
#   STAGE/var/log/gateway/                     the image's one writable volume
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# GATEWAY_RUNTIME_PACKAGES overrides the list (the tests check that a short list is caught).
runtime_list=${GATEWAY_RUNTIME_PACKAGES:-$src/deploy/docker/runtime-packages.txt}
# Packages every Debian image has (Priority: required): not installed by the runtime stage.
base_packages=(libc6 libgcc-s1)

say() { echo "build-image-steps: $*" >&2; }
die() { say "error: $*"; exit 1; }

runtime_packages() { sed -e 's/#.*//' -e 's/[[:space:]]//g' "$runtime_list" | grep -v '^$'; }

step_build() {
  local build_dir=${1:?build needs BUILD_DIR}
  cmake -S "$src" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DGATEWAY_TESTS=OFF -DGATEWAY_BENCH=OFF
  cmake --build "$build_dir" --target gateway -j"$(nproc)"
}

step_install() {
  local binary=${1:?install needs the gateway binary} stage=${2:?install needs STAGE}
  [[ -x $binary ]] || die "no executable at $binary"
  install -d -m 0755 "$stage/usr/local/bin" "$stage/etc/gateway" "$stage/var/log/gateway"
  install -m 0755 "$binary" "$stage/usr/local/bin/gateway"
  # Symbols stay in the build tree; a sanitizer build is left as it is.
  if ! grep -q __asan_init "$binary" 2>/dev/null; then strip --strip-unneeded "$stage/usr/local/bin/gateway"; fi
  install -m 0755 "$src/deploy/docker/healthcheck.sh" "$stage/usr/local/bin/gateway-healthcheck"
  install -m 0644 "$src/deploy/docker/gateway.yaml" "$stage/etc/gateway/gateway.yaml"
}

# Every spelling of a library path under merged /usr: dpkg knows only the one it installed.
spellings() {
  local p
  for p in "$1" "$(readlink -f "$1")"; do
    echo "$p"
    case $p in
      /usr/lib/*) echo "${p#/usr}" ;;
      /lib/*|/lib64/*) echo "/usr$p" ;;
    esac
  done
}

# verify STAGE: every library the binary needs is found, and belongs to a package of the
# runtime list (or of the base image); every listed package exists in Debian 12; the
# binary prints its version and accepts the image's configuration; the healthcheck
# script parses.
step_verify() {
  local stage=${1:?verify needs STAGE}
  local bin=$stage/usr/local/bin/gateway conf=$stage/etc/gateway/gateway.yaml
  [[ -x $bin ]] || die "no gateway in $stage"
  local -A allowed=()
  local p
  for p in $(runtime_packages) "${base_packages[@]}"; do allowed[$p]=1; done
  for p in $(runtime_packages); do
    # Installed here (the build stage has them all: the -dev packages depend on them), or
    # at least known to apt (slower to ask).
    if [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) != "install ok installed" ]] &&
       ! apt-cache show --no-all-versions "$p" >/dev/null 2>&1; then
      die "runtime package '$p' is not a Debian 12 package known here"
    fi
  done

  local ldd_out problems=0 lib path pkg spelling
  ldd_out=$(ldd "$bin") || die "ldd failed on $bin"
  # One dpkg-query for every library: path -> package.
  local -A owner=()
  local -a paths=()
  while read -r lib _ path _; do
    case $lib in linux-vdso.so.*|linux-gate.so.*) continue ;; /*) path=$lib ;; esac
    [[ -n $path && $path != "not" ]] && mapfile -t -O "${#paths[@]}" paths < <(spellings "$path")
  done <<<"$ldd_out"
  local line
  while IFS= read -r line; do
    pkg=${line%%: *}
    owner[${line#*: }]=${pkg%%:*}
  done < <(dpkg-query -S "${paths[@]}" 2>/dev/null || true)
  while read -r lib _ path _; do
    case $lib in
      linux-vdso.so.*|linux-gate.so.*) continue ;;
      /*) path=$lib ;;  # the dynamic loader itself
    esac
    if [[ $path == "not" || -z $path ]]; then
      say "library $lib: not found"; problems=1; continue
    fi
    pkg=
    while IFS= read -r spelling; do
      [[ -n ${owner[$spelling]:-} ]] && { pkg=${owner[$spelling]}; break; }
    done < <(spellings "$path")
    if [[ -z $pkg ]]; then
      say "library $lib ($path): no Debian package owns it"; problems=1; continue
    fi
    if [[ -z ${allowed[$pkg]:-} ]]; then
      say "library $lib comes from package '$pkg', which the runtime stage does not install" \
          "(add it to deploy/docker/runtime-packages.txt)"
      problems=1
    else
      say "library $lib <- $pkg"
    fi
  done <<<"$ldd_out"
  [[ $problems -eq 0 ]] || die "the runtime package list does not cover the binary's libraries"

  local version
  version=$("$bin" --version) || die "gateway --version failed"
  say "$version"
  # The image's config names its upstream through GATEWAY_UPSTREAM; any resolvable address
  # will do for the check.
  (cd "$stage/etc/gateway" && GATEWAY_UPSTREAM=${GATEWAY_UPSTREAM:-127.0.0.1:9000} "$bin" --check -c "$conf") ||
    die "gateway --check refused the image's configuration"
  bash -n "$stage/usr/local/bin/gateway-healthcheck" || die "healthcheck script does not parse"
  say "verified $stage"
}

cmd=all
case ${1:-} in
  build|install|verify|runtime-packages|all) cmd=$1; shift ;;
esac

case $cmd in
  build) step_build "$@" ;;
  install) step_install "$@" ;;
  verify) step_verify "$@" ;;
  runtime-packages) runtime_packages ;;
  all)
    binary= deps=1 build_dir=$src/build-image stage=
    while [[ $# -gt 0 ]]; do
      case $1 in
        --binary) binary=${2:?}; shift 2 ;;
        --no-deps) deps=0; shift ;;
        --build-dir) build_dir=${2:?}; shift 2 ;;
        --stage) stage=${2:?}; shift 2 ;;
        *) die "unknown argument '$1'" ;;
      esac
    done
    stage=${stage:-$build_dir/stage}
    if [[ $deps -eq 1 ]]; then "$src/scripts/install-deps.sh"; fi
    if [[ -z $binary ]]; then
      step_build "$build_dir"
      binary=$build_dir/gateway
    fi
    rm -rf "$stage"
    step_install "$binary" "$stage"
    step_verify "$stage"
    ;;
esac
