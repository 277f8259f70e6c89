#!/usr/bin/env bash
# The gateway side by side with nginx and HAProxy (issue 9), in front of one fast
# upstream (nginx answering from memory), all on 127.0.0.1. See docs/benchmarks.md.
#
#   bench/compare.sh                    the full run (~12 min)
#   QUICK=1 bench/compare.sh            smoke test: 3 s runs, 1 repeat, 1,000 idle connections
#   CASES="plain_small" MEMORY=0 bench/compare.sh
#   CASES="https_keepalive https_handshakes https_full_handshakes" MEMORY=0 bench/compare.sh
#                                       the TLS cases only (~4 min)
#
# Settings (environment):
#   DURATION=10 REPEATS=3 CONNECTIONS=50 THREADS=1   wrk, the same for every proxy
#   IDLE_CONNS=10000                                 memory case; MEMORY=0 skips it
#   CASES="plain_small plain_16k workers2_small https_keepalive https_handshakes
#          https_full_handshakes"                    see the case_* functions
#   PROXIES="gateway nginx haproxy"                  which proxies to run
#   LOAD_CPUS=0 PROXY_CPUS=1 WIDE_CPUS=0,1           pinning (taskset -c)
#   NICE=0                                           e.g. -10: every process started runs at that
#                                                    niceness, ahead of other work on the machine
#   GATEWAY=build/gateway                            the binary (copied before use)
#   KEEP=1                                           keep the temp dir (configs, logs, raw wrk output)
#
# Pinning: wrk and the upstream share LOAD_CPUS, the proxy runs alone on PROXY_CPUS,
# except in multi-worker cases, where the proxy spans WIDE_CPUS (see case_workers2_small).
# The figure of merit is the proxy's CPU time per request (utime+stime of the proxy's
# processes, from /proc/PID/stat, before and after each run), not raw req/s: on a
# 2-core machine wrk + upstream saturate their core before a fast proxy saturates its own.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
helper=$here/compare_helper.py
export PATH=$PATH:/usr/sbin:/sbin

if [[ ${QUICK:-0} == 1 ]]; then
  DURATION=${DURATION:-3} REPEATS=${REPEATS:-1} IDLE_CONNS=${IDLE_CONNS:-1000}
fi
DURATION=${DURATION:-10}
REPEATS=${REPEATS:-3}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-1}
IDLE_CONNS=${IDLE_CONNS:-10000}
MEMORY=${MEMORY:-1}
CASES=${CASES-"plain_small plain_16k workers2_small https_keepalive https_handshakes https_full_handshakes"}   # CASES="" MEMORY=1: memory only
PROXIES=${PROXIES:-"gateway nginx haproxy"}
LOAD_CPUS=${LOAD_CPUS:-0}
PROXY_CPUS=${PROXY_CPUS:-1}
WIDE_CPUS=${WIDE_CPUS:-$LOAD_CPUS,$PROXY_CPUS}
GATEWAY=${GATEWAY:-$root/build/gateway}
KEEP=${KEEP:-0}
NICE=${NICE:-0}

SMALL_BYTES=13      # /small answers "hello, world\n"
LARGE_BYTES=16384   # /16k serves a 16 KiB file

log() { printf '%s\n' "$*" >&2; }
die() { log "compare.sh: $*"; exit 1; }

# ------------------------------------------------------------------ prerequisites

missing=()
for tool in nginx haproxy wrk taskset timeout curl python3; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  die "missing ${missing[*]}; install them with: scripts/install-deps.sh bench"
fi
nice -n "$NICE" true 2>/dev/null || die "NICE=$NICE: not permitted"
[[ -x $GATEWAY ]] || die "no gateway binary at $GATEWAY; build it with: make build"

# File descriptors: a proxy holds IDLE_CONNS client connections plus its upstream ones
# (a few hundred at most here); HAProxy reserves two per connection, so ask for that
# and settle for the hard limit if raising it is not permitted.
NOFILE=$((IDLE_CONNS * 2 + 1024))
hard=$(ulimit -Hn)
if [[ $hard != unlimited && $hard -lt $NOFILE ]]; then
  ulimit -Hn "$NOFILE" 2>/dev/null || NOFILE=$hard
fi
((NOFILE >= IDLE_CONNS + 1024)) || die "ulimit -n: hard limit $hard is too low for IDLE_CONNS=$IDLE_CONNS"
ulimit -Sn "$NOFILE"
# HAProxy refuses to start when it cannot reserve 2 FDs per maxconn, unless told not to.
haproxy_strict_limits=""
((NOFILE >= IDLE_CONNS * 2 + 1024)) || haproxy_strict_limits="no strict-limits   # FD limit $NOFILE < 2 x maxconn"
CLK_TCK=$(getconf CLK_TCK)

# ------------------------------------------------------------------ processes

work=$(mktemp -d /tmp/gw-compare.XXXXXX)
chmod 755 "$work"   # nginx workers run as nobody
mkdir -p "$work/logs" "$work/www"
started=()          # every PID this script started; the EXIT trap stops them
notes=$work/notes   # anomalies to report at the end
: >"$notes"

# PID and its descendants, depth first (an nginx master and its workers).
tree_pids() {
  local child children
  echo "$1"
  children=$(cat /proc/"$1"/task/*/children 2>/dev/null || true)   # space-separated PIDs
  for child in $children; do tree_pids "$child"; done
}

alive() {
  local stat
  stat=$(cat /proc/"$1"/stat 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

# Runs "$@" pinned to CPUS (taskset and nice exec: the PID stays the command's).
pinned() {
  local cpus=$1
  shift
  nice -n "$NICE" taskset -c "$cpus" "$@"
}

# Starts "$@" pinned to CPUS in the background; logs to logs/NAME.log; sets started_pid.
start() {
  local name=$1 cpus=$2
  shift 2
  # a simple command, not the pinned function: $! must be the process itself, not a subshell
  nice -n "$NICE" taskset -c "$cpus" "$@" >"$work/logs/$name.log" 2>&1 &
  started_pid=$!
  started+=("$started_pid")
}

# Stops PID (TERM, then KILL after 10 s, its descendants too); sets stopped_status.
stop() {
  local pid=$1 tree i
  stopped_status=0
  alive "$pid" || { wait "$pid" 2>/dev/null || stopped_status=$?; return 0; }
  tree=$(tree_pids "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then
    log "  pid $pid ignored SIGTERM for 10 s; killing it"
    # shellcheck disable=SC2086 # a list of PIDs
    kill -KILL $tree 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || stopped_status=$?
  for i in $tree; do
    if alive "$i"; then kill -KILL "$i" 2>/dev/null || true; fi
  done
  return 0
}

cleanup() {
  local pid
  for pid in "${started[@]}"; do stop "$pid"; done
  if [[ $KEEP == 1 ]]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Sum of utime+stime, in clock ticks, of PID and its descendants.
cpu_ticks() {
  local pid stat fields total=0
  for pid in $(tree_pids "$1"); do
    stat=$(cat /proc/"$pid"/stat 2>/dev/null) || continue
    read -ra fields <<<"${stat##*) }"   # fields[0] is field 3 (state)
    total=$((total + fields[11] + fields[12]))
  done
  echo "$total"
}

# Waits (at most 10 s) until PID answers 200 on PORT/PATH (SCHEME http or https; the
# TLS cases' certificate is not checked: curl -k).
wait_ready() {
  local pid=$1 port=$2 path=$3 scheme=${4:-http} i
  for ((i = 0; i < 100; i++)); do
    alive "$pid" || return 1
    [[ $(curl -sk -o /dev/null -w '%{http_code}' --max-time 1 "$scheme://127.0.0.1:$port$path") == 200 ]] && return 0
    sleep 0.1
  done
  return 1
}

# ------------------------------------------------------------------ upstream

read -r UP_PORT GW_PORT GW_ADMIN_PORT NGINX_PORT HAPROXY_PORT <<<"$(python3 "$helper" free-ports 5)"

head -c "$LARGE_BYTES" /dev/zero | tr '\0' 'x' >"$work/www/16k"
cat >"$work/upstream.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $work/upstream.pid;
error_log $work/logs/upstream-error.log warn;
events { worker_connections $NOFILE; }
http {
  access_log off;
  default_type text/plain;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  sendfile on;
  open_file_cache max=16 inactive=300s;
  server {
    listen 127.0.0.1:$UP_PORT backlog=4096;
    root $work/www;
    location = /small { return 200 "hello, world\n"; }
    location = /16k { }
  }
}
EOF
start upstream "$LOAD_CPUS" nginx -p "$work" -e "$work/logs/upstream-error.log" -c "$work/upstream.conf"
UP_PID=$started_pid
wait_ready "$UP_PID" "$UP_PORT" /small || die "upstream nginx did not start: $(cat "$work/logs/upstream"*)"

# ------------------------------------------------------------------ proxy configs
# write_configs DIR writes gateway.yaml, nginx.conf and haproxy.cfg for the current
# case; a case sets CASE_WORKERS and the hooks below before calling it.

reset_case() {
  CASE_DESC="" CASE_PATH=/small CASE_BODY_BYTES=$SMALL_BYTES
  CASE_WORKERS=1 CASE_CPUS=$PROXY_CPUS CASE_DIRECT=1
  CASE_SCHEME=http          # https: the proxies terminate TLS (see tls_hooks)
  CASE_WRK_ARGS=()          # extra wrk arguments, e.g. (-H "Connection: close")
  CASE_TOOL=wrk             # or ab: ApacheBench, a new connection and session per request
  GW_LISTENER_EXTRA=""      # YAML under the gateway's listener, indented 4 spaces
  NGINX_LISTEN_EXTRA=""     # parameters of nginx's listen directive (" ssl")
  NGINX_SERVER_EXTRA=""     # directives in nginx's server {}
  HAPROXY_BIND_EXTRA=""     # parameters of HAProxy's bind line (" ssl crt ...")
  GW_FILTERS=""             # YAML under default_filters:, indented 2 spaces
  NGINX_HTTP_EXTRA=""       # directives in http {}
  NGINX_LOCATION_EXTRA=""   # directives in the proxied location
  HAPROXY_GLOBAL_EXTRA=""   # lines in global
  HAPROXY_FRONTEND_EXTRA="" # lines in the frontend
}

write_configs() {
  local dir=$1
  mkdir -p "$dir"
  # The gateway: access log off like its peers (neither nginx nor HAProxy logs here).
  cat >"$dir/gateway.yaml" <<EOF
workers: $CASE_WORKERS
listeners:
  - name: bench
    address: 127.0.0.1:$GW_PORT
$GW_LISTENER_EXTRA
admin:
  address: 127.0.0.1:$GW_ADMIN_PORT
logging:
  level: info   # start, stop and errors only: no per-request lines
  access_log: off
limits:
  max_connections: $NOFILE
timeouts:
  idle: 120s
  drain: 2s
upstreams:
  - name: upstream
    endpoints: [127.0.0.1:$UP_PORT]
    keepalive: {max_idle: 64, idle_timeout: 60s}
default_filters:
${GW_FILTERS:-"  {}"}
routes:
  - name: all
    match: {path_prefix: /}
    upstream: upstream
EOF

  # nginx: its production settings for a proxy: upstream keepalive, HTTP/1.1 upstream.
  # It forwards the same X-Forwarded-* headers the gateway sets.
  cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $CASE_WORKERS;
worker_rlimit_nofile $NOFILE;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log warn;
events { worker_connections $NOFILE; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  client_body_temp_path $dir/tmp-body;
  proxy_temp_path $dir/tmp-proxy;
  fastcgi_temp_path $dir/tmp-fastcgi;
  uwsgi_temp_path $dir/tmp-uwsgi;
  scgi_temp_path $dir/tmp-scgi;
  upstream upstream {
    server 127.0.0.1:$UP_PORT;
    keepalive 64;
    keepalive_requests 10000000;
    keepalive_timeout 60s;
  }
$NGINX_HTTP_EXTRA
  server {
    listen 127.0.0.1:$NGINX_PORT$NGINX_LISTEN_EXTRA backlog=4096;
$NGINX_SERVER_EXTRA
    location / {
      proxy_pass http://upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
$NGINX_LOCATION_EXTRA
    }
  }
}
EOF

  # HAProxy: keep-alive both sides, idle server connections shared by all clients.
  cat >"$dir/haproxy.cfg" <<EOF
global
  nbthread $CASE_WORKERS
  maxconn $((IDLE_CONNS + 1024))
  $haproxy_strict_limits
$HAPROXY_GLOBAL_EXTRA
defaults
  mode http
  option http-keep-alive
  http-reuse always
  option forwardfor
  timeout connect 5s
  timeout client 120s
  timeout server 60s
  timeout http-keep-alive 120s
frontend bench
  bind 127.0.0.1:$HAPROXY_PORT$HAPROXY_BIND_EXTRA
  http-request set-header X-Forwarded-Proto $CASE_SCHEME
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
$HAPROXY_FRONTEND_EXTRA
  default_backend upstream
backend upstream
  server upstream 127.0.0.1:$UP_PORT
EOF
}

# ------------------------------------------------------------------ cases
# A case describes itself (CASE_*), sets the hooks and writes the three configs into $1.
# To add one: write case_NAME and add NAME to CASES.

case_plain_small() {
  CASE_DESC="plain proxy, no filters, ${SMALL_BYTES}-byte response"
  write_configs "$1"
}

case_plain_16k() {
  CASE_DESC="plain proxy, no filters, 16 KiB response"
  CASE_PATH=/16k CASE_BODY_BYTES=$LARGE_BYTES
  write_configs "$1"
}

# Two workers (gateway workers, nginx worker_processes, HAProxy nbthread) spanning both
# CPUs, WIDE_CPUS: the proxy now shares LOAD_CPUS with wrk and the upstream, so its
# req/s says how far it scales while competing with the load generator; compare with
# plain_small (1 worker on PROXY_CPUS alone).
case_workers2_small() {
  CASE_DESC="plain proxy, ${SMALL_BYTES}-byte response, 2 workers on CPUs $WIDE_CPUS"
  CASE_WORKERS=2 CASE_CPUS=$WIDE_CPUS CASE_DIRECT=0
  write_configs "$1"
}

# TLS termination with one certificate for all three proxies (conf/make-test-certs.sh:
# ECDSA P-256, made once per run in the temp dir) and, as far as each lets it be
# configured, the gateway's fixed profile (docs/tls.md): TLS 1.2 and 1.3, Mozilla
# "intermediate" suites in the server's order, TLS 1.3 suites AES-128-GCM first, groups
# X25519, P-256, P-384, session cache and tickets, ALPN http/1.1.
TLS12_CIPHERS="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
TLS13_CIPHERS="TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
tls_dir=$work/tls
tls_hooks() {
  if [[ ! -s $tls_dir/server.pem ]]; then
    "$root/conf/make-test-certs.sh" "$tls_dir" 2>/dev/null || die "conf/make-test-certs.sh failed"
    cat "$tls_dir/server.crt" "$tls_dir/server.key" >"$tls_dir/server.pem"   # HAProxy's crt
  fi
  CASE_SCHEME=https CASE_DIRECT=0   # the upstream speaks plain HTTP: no direct row
  GW_LISTENER_EXTRA="    tls:
      certificates:
        - {cert: $tls_dir/server.crt, key: $tls_dir/server.key}"
  NGINX_LISTEN_EXTRA=" ssl"
  NGINX_SERVER_EXTRA="    ssl_certificate $tls_dir/server.crt;
    ssl_certificate_key $tls_dir/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers $TLS12_CIPHERS;
    ssl_prefer_server_ciphers on;
    ssl_conf_command Ciphersuites $TLS13_CIPHERS;
    ssl_conf_command Options PrioritizeChaCha;
    ssl_ecdh_curve X25519:prime256v1:secp384r1;
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;"
  HAPROXY_GLOBAL_EXTRA="  ssl-default-bind-ciphers $TLS12_CIPHERS
  ssl-default-bind-ciphersuites $TLS13_CIPHERS
  ssl-default-bind-options ssl-min-ver TLSv1.2
  tune.ssl.default-dh-param 2048"
  HAPROXY_BIND_EXTRA=" ssl crt $tls_dir/server.pem alpn http/1.1 curves X25519:P-256:P-384"
}

# HTTPS with keep-alive: TLS record processing on top of plain_small; every wrk connection
# makes one handshake at the start of the run and then only requests.
case_https_keepalive() {
  CASE_DESC="HTTPS keep-alive (TLS 1.3, ECDSA P-256), ${SMALL_BYTES}-byte response"
  tls_hooks
  write_configs "$1"
}

# New TLS connections per second: wrk sends "Connection: close", so every request is a new
# TCP connection and TLS handshake; req/s = handshakes/s. wrk resumes the session of its
# previous connection (SSL_clear keeps it): these are TLS 1.3 PSK resumptions, with a fresh
# X25519 exchange but no certificate or signature (nginx's $ssl_session_reused says "r"
# for 99% of them). A returning browser does the same; https_full_handshakes does not.
case_https_handshakes() {
  CASE_DESC="HTTPS, a new connection per request (Connection: close), TLS 1.3 resumed by wrk"
  tls_hooks
  CASE_WRK_ARGS=(-H "Connection: close")
  write_configs "$1"
}

# Full handshakes per second: ApacheBench (apache2-utils) opens a new connection with a
# new TLS session for every request (HTTP/1.0, no keep-alive): certificate, ECDSA
# signature and X25519 every time. Its percentiles are whole milliseconds.
case_https_full_handshakes() {
  CASE_DESC="HTTPS, a new connection and a full TLS 1.3 handshake per request (ab)"
  tls_hooks
  CASE_TOOL=ab
  write_configs "$1"
}

# ------------------------------------------------------------------ running

results=$work/results.tsv
printf 'case\tpath\tworkers\tproxy\trun\tcpu_ticks\trequests\tseconds\trps\tp50_us\tp99_us\tsocket_errors\tnon2xx\n' >"$results"

run_wrk() {  # URL OUTPUT [SECONDS]
  local seconds=${3:-$DURATION}
  if [[ $CASE_TOOL == ab ]]; then
    # -t bounds the run (-n only lifts ab's default cap of 50,000 requests); -r: a failed
    # receive is counted, not fatal
    pinned "$LOAD_CPUS" timeout $((seconds + 30)) \
      ab -q -r -s 5 -t "$seconds" -n 100000000 -c "$CONNECTIONS" "$1" >"$2" 2>&1
    return
  fi
  pinned "$LOAD_CPUS" timeout $((seconds + 30)) \
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${seconds}s" --timeout 5s --latency "${CASE_WRK_ARGS[@]}" "$1" >"$2" 2>&1
}

# Starts PROXY with the configs in DIR; sets proxy_pid and proxy_port.
start_proxy() {
  local proxy=$1 dir=$2 name=$3
  case $proxy in
    gateway)
      start "$name" "$CASE_CPUS" "$work/gateway" -c "$dir/gateway.yaml"
      proxy_port=$GW_PORT ;;
    nginx)
      start "$name" "$CASE_CPUS" nginx -p "$dir" -e "$dir/nginx-error.log" -c "$dir/nginx.conf"
      proxy_port=$NGINX_PORT ;;
    haproxy)
      start "$name" "$CASE_CPUS" haproxy -f "$dir/haproxy.cfg" -db
      proxy_port=$HAPROXY_PORT ;;
    *) die "unknown proxy $proxy" ;;
  esac
  proxy_pid=$started_pid
  if ! wait_ready "$proxy_pid" "$proxy_port" "$CASE_PATH" "$CASE_SCHEME"; then
    echo "$name: did not answer 200 on :$proxy_port$CASE_PATH within 10 s; log: $(tail -5 "$work/logs/$name.log")" >>"$notes"
    stop "$proxy_pid"
    return 1
  fi
}

# Stops a proxy and reports an unclean exit or error lines in its log.
stop_proxy() {
  local name=$1 pid=$2 errors
  if ! alive "$pid"; then
    echo "$name: exited before the script stopped it; last log lines: $(tail -3 "$work/logs/$name.log")" >>"$notes"
  fi
  stop "$pid"
  # HAProxy exits 143 on SIGTERM (hard stop); the others exit 0.
  if [[ $stopped_status != 0 && ! ($name == haproxy-* && $stopped_status == 143) ]]; then
    echo "$name: exit status $stopped_status after SIGTERM" >>"$notes"
  fi
  # stderr lines at error level or worse (HAProxy's FD-limit alert is expected, see above)
  errors=$(grep -iE '"level": *"(error|critical)"|\[(error|alert|crit|emerg)\]|ALERT' "$work/logs/$name.log" |
    grep -cv 'FD limit' || true)
  [[ $errors == 0 ]] || echo "$name: $errors error lines in $work/logs/$name.log" >>"$notes"
}

# Checks one response's status and body size, then warms up (connection pools, caches).
check_target() {
  local case=$1 target=$2 url=$3 got
  got=$(curl -sk -o /dev/null --max-time 5 -w '%{http_code} %{size_download}' "$url" || true)
  if [[ $got != "200 $CASE_BODY_BYTES" ]]; then
    echo "$case/$target: GET $url answered '$got', expected '200 $CASE_BODY_BYTES'" >>"$notes"
  fi
  run_wrk "$url" /dev/null 1 || true
}

# One wrk run against URL, with PID's CPU time over it (PID "-": the direct upstream).
measure() {
  local case=$1 target=$2 pid=$3 url=$4 run=$5 out before after cpu parsed
  local requests seconds rps p50 p99 errors non2xx
  out=$work/logs/wrk-$case-$target-$run.txt
  before=$([[ $pid == - ]] || cpu_ticks "$pid")
  if ! run_wrk "$url" "$out"; then
    echo "$case/$target run $run: wrk failed: $(tail -3 "$out")$([[ $pid == - ]] || alive "$pid" ||
      echo " (PID $pid is gone)")" >>"$notes"
    return 0
  fi
  after=$([[ $pid == - ]] || cpu_ticks "$pid")
  cpu=$([[ $pid == - ]] && echo - || echo $((after - before)))
  parsed=$(python3 "$helper" parse-wrk "$out")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$case" "$CASE_PATH" "$CASE_WORKERS" "$target" "$run" "$cpu" "$parsed" >>"$results"
  read -r requests seconds rps p50 p99 errors non2xx <<<"$parsed"
  local line="  run $run/$REPEATS $target: ${rps%.*} req/s, p50 ${p50}us, p99 ${p99}us, errors $((errors + non2xx))"
  [[ $cpu == - ]] || line+=", proxy CPU $((cpu * 100 / CLK_TCK / DURATION))%, $((cpu * 1000000 / CLK_TCK / requests)) us/req"
  log "$line"
}

# Starts every proxy of the case at once (each on its own port; an idle one costs
# nothing) and interleaves their runs, so that other load on the machine spreads over
# all of them rather than spoiling one.
run_case() {
  local case=$1 dir=$work/$1 target run
  local -a targets=()
  local -A pid_of=() url_of=()
  declare -F "case_$case" >/dev/null || die "unknown case '$case'"
  reset_case
  "case_$case" "$dir"
  log "[$case] $CASE_DESC"
  if [[ $CASE_TOOL != wrk ]] && ! command -v "$CASE_TOOL" >/dev/null; then
    echo "$case: skipped, $CASE_TOOL is missing (apache2-utils; scripts/install-deps.sh bench)" >>"$notes"
    log "  skipped: $CASE_TOOL is missing"
    return 0
  fi
  if [[ $CASE_DIRECT == 1 ]]; then
    targets+=(direct) pid_of[direct]=- url_of[direct]=http://127.0.0.1:$UP_PORT$CASE_PATH
  fi
  for target in $PROXIES; do
    start_proxy "$target" "$dir" "$target-$case" || continue
    targets+=("$target") pid_of[$target]=$proxy_pid url_of[$target]=$CASE_SCHEME://127.0.0.1:$proxy_port$CASE_PATH
  done
  for target in "${targets[@]}"; do check_target "$case" "$target" "${url_of[$target]}"; done
  for ((run = 1; run <= REPEATS; run++)); do
    for target in "${targets[@]}"; do
      measure "$case" "$target" "${pid_of[$target]}" "${url_of[$target]}" "$run"
    done
  done
  for target in "${targets[@]}"; do
    [[ $target == direct ]] || stop_proxy "$target-$case" "${pid_of[$target]}"
  done
}

memory_case() {
  local dir=$work/memory proxy row
  reset_case
  case_plain_small "$dir"
  printf 'proxy\tconns\trss_before\trss_after\tok\tfailed\n' >"$work/memory.tsv"
  log "[memory] $IDLE_CONNS idle keep-alive connections, one request each"
  for proxy in $PROXIES; do
    start_proxy "$proxy" "$dir" "$proxy-memory" || continue
    row=$(pinned "$LOAD_CPUS" timeout 300 python3 "$helper" idle-conns \
      --pid "$proxy_pid" --port "$proxy_port" --path "$CASE_PATH" --n "$IDLE_CONNS") ||
      echo "memory/$proxy: idle-conns client failed" >>"$notes"
    if [[ -n $row ]]; then
      printf '%s\t%s\t%s\n' "$proxy" "$IDLE_CONNS" "$row" >>"$work/memory.tsv"
      log "  $proxy: $row"
    fi
    alive "$proxy_pid" || echo "memory/$proxy: the proxy died during the idle-connection test" >>"$notes"
    stop_proxy "$proxy-memory" "$proxy_pid"
  done
}

cp "$GATEWAY" "$work/gateway"   # others may rebuild build/gateway meanwhile
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
revision=$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)
log "compare.sh: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency, $REPEATS runs per proxy;" \
  "proxy on CPU $PROXY_CPUS, wrk + upstream on CPU $LOAD_CPUS; temp dir $work"
for case in $CASES; do run_case "$case"; done
if [[ $MEMORY == 1 ]]; then memory_case; fi

# ------------------------------------------------------------------ report

echo
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), $("$work/gateway" --version 2>&1 | head -1) ($revision)"
echo "# wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency, median of $REPEATS runs;" \
  "proxy pinned to CPU $PROXY_CPUS (2-worker cases: $WIDE_CPUS), wrk + upstream to CPU $LOAD_CPUS"
echo "# load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine adds noise); nice $NICE"
if [[ " $CASES " == *" https_full_handshakes "* ]]; then
  echo "# https_full_handshakes: ab -q -r -s 5 -t $DURATION -c $CONNECTIONS (a new connection and TLS session per request), pinned like wrk"
fi
echo
python3 "$helper" table --clk-tck "$CLK_TCK" "$results"
if [[ -f $work/memory.tsv ]]; then
  echo
  python3 "$helper" mem-table "$work/memory.tsv"
fi
if [[ -s $notes ]]; then
  echo
  echo "Anomalies:"
  sed 's/^/  /' "$notes"
fi
