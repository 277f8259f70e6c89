#!/usr/bin/env bash
# The gateway side by side with nginx and HAProxy (issue 9), in front of one fast
# upstream (nginx answering from memory), all on 127.0.0.1. See docs/benchmarks.md.
#
#   bench/compare.sh                    the full run (~25 min)
#   QUICK=1 bench/compare.sh            smoke test: 3 s runs, 1 repeat, 1,000 idle connections,
#                                       64 MiB streamed bodies
#   CASES="plain_small" MEMORY=0 bench/compare.sh
#   CASES="https_keepalive https_handshakes https_full_handshakes" MEMORY=0 bench/compare.sh
#                                       the TLS cases only (~4 min)
#   CASES="h2c_small h2_tls_small" MEMORY=0 STREAM=0 bench/compare.sh
#                                       the HTTP/2 cases only (h2load; not in the default CASES)
#   CASES="grpc_h2c grpc_h2c_http1" MEMORY=0 STREAM=0 bench/compare.sh
#                                       gRPC-like calls to an HTTP/2 and to an HTTP/1.1 upstream
#                                       (h2load; not in the default CASES)
#
# Settings (environment):
#   DURATION=10 REPEATS=3 CONNECTIONS=50 THREADS=1   wrk, the same for every proxy
#   IDLE_CONNS=10000                                 idle-connection memory; MEMORY=0 skips it
#   STREAM_BYTES=1073741824                          streamed-body memory; STREAM=0 skips it
#   CASES="plain_small plain_16k security_chain workers2_small jwt rate_limit
#          https_keepalive https_handshakes https_full_handshakes tracing"
#                                                    see the case_* functions; also (not by
#                                                    default): h2c_small h2_tls_small
#                                                    grpc_h2c grpc_h2c_http1
#   H2_CONNECTIONS=10 H2_STREAMS=10                  h2load -c, -m (streams in flight per
#                                                    connection) of the HTTP/2 cases
#   JWT_ALG=ES256 JWT_USERS=1000                     the jwt case's tokens
#   PROXIES="gateway nginx haproxy"                  which proxies to run
#   FLOOR=1                                          the plain cases also run "forward"
#                                                    (bench/l4_forward.c: bytes copied, no
#                                                    HTTP), the kernel's floor; FLOOR=0: not
#   LOAD_CPUS=0 PROXY_CPUS=1 WIDE_CPUS=0,1           pinning (taskset -c)
#   NICE=0                                           e.g. -10: every process started runs at that
#                                                    niceness, ahead of other work on the machine
#   GATEWAY=build/gateway                            the binary (copied before use)
#   GATEWAY_BEFORE=path/to/older/gateway             also run that binary with the same config
#                                                    in every case (target gateway_before,
#                                                    compared with gateway): a before/after in
#                                                    one run, interleaved like the others
#   KEEP=1                                           keep the temp dir (configs, logs, raw wrk,
#                                                    ab and h2load output)
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
  STREAM_BYTES=${STREAM_BYTES:-$((64 << 20))}
fi
DURATION=${DURATION:-10}
REPEATS=${REPEATS:-3}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-1}
H2_CONNECTIONS=${H2_CONNECTIONS:-10}
H2_STREAMS=${H2_STREAMS:-10}
IDLE_CONNS=${IDLE_CONNS:-10000}
MEMORY=${MEMORY:-1}
STREAM=${STREAM:-1}
STREAM_BYTES=${STREAM_BYTES:-$((1 << 30))}
CASES=${CASES-"plain_small plain_16k security_chain workers2_small jwt rate_limit https_keepalive https_handshakes https_full_handshakes tracing"}   # CASES="": memory only
PROXIES=${PROXIES:-"gateway nginx haproxy"}
LOAD_CPUS=${LOAD_CPUS:-0}
PROXY_CPUS=${PROXY_CPUS:-1}
WIDE_CPUS=${WIDE_CPUS:-$LOAD_CPUS,$PROXY_CPUS}
GATEWAY=${GATEWAY:-$root/build/gateway}
GATEWAY_BEFORE=${GATEWAY_BEFORE:-}
KEEP=${KEEP:-0}
FLOOR=${FLOOR:-1}
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
checks=$work/checks # what a case's checks found, reported at the end
: >"$notes"
: >"$checks"

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

# utime+stime and stime alone ("TOTAL SYSTEM"), in clock ticks, of PID and its descendants.
cpu_ticks() {
  local pid stat fields total=0 system=0
  for pid in $(tree_pids "$1"); do
    stat=$(cat /proc/"$pid"/stat 2>/dev/null) || continue
    read -ra fields <<<"${stat##*) }"   # fields[0] is field 3 (state)
    total=$((total + fields[11] + fields[12]))
    system=$((system + fields[12]))
  done
  echo "$total $system"
}

# Context switches (voluntary and not) of every thread of PID and its descendants: how
# often the proxy went to sleep and had to be woken, or was preempted.
context_switches() {
  local pid total=0 n
  for pid in $(tree_pids "$1"); do
    n=$(cat /proc/"$pid"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { s += $2 } END { print s + 0 }')
    total=$((total + n))
  done
  echo "$total"
}

# TCP segments the machine has sent (/proc/net/snmp Tcp OutSegs). Everything runs on
# loopback, so over a run this is every segment of the test, both directions.
tcp_out_segments() {
  awk '$1 == "Tcp:" { if (!col) { for (i = 2; i <= NF; i++) if ($i == "OutSegs") col = i } else print $col }' /proc/net/snmp
}

# Waits (at most 10 s) until PID answers 200 on PORT/PATH (SCHEME http or https; the
# TLS cases' certificate is not checked: curl -k); further arguments go to curl.
wait_ready() {
  local pid=$1 port=$2 path=$3 scheme=${4:-http} i
  shift 4 2>/dev/null || shift $#
  for ((i = 0; i < 100; i++)); do
    alive "$pid" || return 1
    [[ $(curl -sk -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$scheme://127.0.0.1:$port$path") == 200 ]] && return 0
    sleep 0.1
  done
  return 1
}

# ------------------------------------------------------------------ upstream

# Ports: one pool, taken in order (take_port sets $port; never call it in a subshell).
read -ra port_pool <<<"$(python3 "$helper" free-ports 64)"
port_next=0
take_port() {
  ((port_next < ${#port_pool[@]})) || die "out of free ports"
  port=${port_pool[port_next]}
  port_next=$((port_next + 1))
}
take_port; UP_PORT=$port
take_port; GW_PORT=$port
take_port; GW_ADMIN_PORT=$port
take_port; NGINX_PORT=$port
take_port; HAPROXY_PORT=$port
take_port; FORWARD_PORT=$port

# upstream_nginx NAME PORT PATH [CURL_ARG...]: starts an upstream nginx (one process on
# LOAD_CPUS, no access log, keep-alive for as long as a run lasts) with the server {}
# blocks read from standard input and waits for a 200 on PORT/PATH; sets started_pid.
upstream_nginx() {
  local name=$1
  shift
  {
    cat <<EOF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $work/$name.pid;
error_log $work/logs/$name-error.log warn;
events { worker_connections $NOFILE; }
http {
  access_log off;
  default_type text/plain;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  sendfile on;
  open_file_cache max=16 inactive=300s;
EOF
    cat
    echo "}"
  } >"$work/$name.conf"
  start "$name" "$LOAD_CPUS" nginx -p "$work" -e "$work/logs/$name-error.log" -c "$work/$name.conf"
  wait_ready "$started_pid" "$@" || die "$name nginx did not start: $(cat "$work/logs/$name"*)"
}

head -c "$LARGE_BYTES" /dev/zero | tr '\0' 'x' >"$work/www/16k"
upstream_nginx upstream "$UP_PORT" /small <<EOF
  server {
    listen 127.0.0.1:$UP_PORT backlog=4096;
    root $work/www;
    location = /small { return 200 "hello, world\n"; }
    location = /16k { }
    location = /1g { }
    location = /v1/traces { return 200; }   # the tracing case's collector: takes, drops
  }
EOF
UP_PID=$started_pid

# ------------------------------------------------------------------ proxy configs
# A case sets CASE_* and the hooks below, writes its configs into its directory and
# names its targets (add_target); write_configs does both for the usual three, one
# target per proxy of PROXIES on the default ports.

reset_case() {
  CASE_DESC="" CASE_PATH=/small CASE_BODY_BYTES=$SMALL_BYTES
  CASE_WORKERS=1 CASE_CPUS=$PROXY_CPUS CASE_DIRECT=1
  CASE_SCHEME=http          # https: the proxies terminate TLS (see tls_hooks)
  CASE_WRK_ARGS=()          # extra wrk (or h2load) arguments, e.g. (-H "Connection: close")
  CASE_CURL_ARGS=()         # extra curl arguments of the pre-run check, e.g. (-H "Authorization: ...")
  CASE_TOOL=wrk             # or ab: ApacheBench, a new connection and session per request;
                            # or h2load: HTTP/2 (nghttp2-client), h2c or ALPN h2 by the URL's scheme
  CASE_HTTP_VERSION=""      # the HTTP version the pre-run check must get (curl's %{http_version}: 2)
  CASE_UP_IDLE=64           # idle upstream connections kept (gateway max_idle, nginx keepalive)
  CASE_AUX_PID=-            # a server the case started (redis-server): its CPU is reported too
  CASE_PRECHECK=""          # a function run once the targets answer (e.g. a 401 without a token)
  CASE_POSTCHECK=""         # a function run after the last run, before the proxies stop
  CASE_UP_PORT=$UP_PORT     # the upstream of the proxies, the forward floor and the direct row
  GW_LISTENER_EXTRA=""      # YAML under the gateway's listener, indented 4 spaces
  GW_TOP_EXTRA=""           # top-level YAML (jwt_providers:, rate_limit_store:)
  GW_LIMITS_EXTRA=""        # YAML under limits:, indented 2 spaces
  GW_UPSTREAM_EXTRA=""      # YAML under the upstream, indented 4 spaces (protocol: h2)
  GW_ROUTES=""              # YAML under routes: (default: one route / to the upstream)
  NGINX_LISTEN_EXTRA=""     # parameters of nginx's listen directive (" ssl")
  NGINX_SERVER_EXTRA=""     # directives in nginx's server {}
  HAPROXY_BIND_EXTRA=""     # parameters of HAProxy's bind line (" ssl crt ...")
  GW_FILTERS=""             # YAML under default_filters:, indented 2 spaces
  NGINX_HTTP_EXTRA=""       # directives in http {}
  NGINX_LOCATION_EXTRA=""   # directives in the proxied location
  NGINX_PASS=proxy          # the proxied location's module: proxy (HTTP/1.1 keep-alive) or grpc
  HAPROXY_GLOBAL_EXTRA=""   # lines in global
  HAPROXY_FRONTEND_EXTRA="" # lines in the frontend
  HAPROXY_SERVER_EXTRA=""   # parameters of HAProxy's server line (" proto h2")
  target_names=()
  declare -gA target_proxy=() target_conf=() target_port=() target_path=() target_base=()
  declare -gA target_expect=()
}

# add_target NAME PROXY CONFIG PORT PATH [BASE [HEADER]]: NAME runs PROXY (gateway, nginx,
# haproxy, or direct: the upstream itself) with CONFIG, measured on PORT/PATH; its CPU per
# request is also compared with target BASE's; HEADER (a regex) must be in its answer.
# Targets sharing a CONFIG share one process.
add_target() {
  target_names+=("$1")
  target_proxy[$1]=$2 target_conf[$1]=$3 target_port[$1]=$4 target_path[$1]=$5
  target_base[$1]=${6:--} target_expect[$1]=${7:-}
}

# gateway_config FILE PORT ADMIN_PORT
gateway_config() {
  local routes=$GW_ROUTES
  if [[ -z $routes ]]; then
    routes="  - name: all
    match: {path_prefix: /}
    upstream: upstream"
  fi
  mkdir -p "$(dirname "$1")"
  # The gateway: access log off like its peers (neither nginx nor HAProxy logs here).
  cat >"$1" <<EOF
workers: $CASE_WORKERS
listeners:
  - name: bench
    address: 127.0.0.1:$2
$GW_LISTENER_EXTRA
admin:
  address: 127.0.0.1:$3
logging:
  level: info   # start, stop and errors only: no per-request lines
  access_log: off
limits:
  max_connections: $NOFILE
$GW_LIMITS_EXTRA
timeouts:
  idle: 120s
  drain: 2s
upstreams:
  - name: upstream
    endpoints: [127.0.0.1:$CASE_UP_PORT]
    keepalive: {max_idle: $CASE_UP_IDLE, idle_timeout: 60s}
$GW_UPSTREAM_EXTRA
$GW_TOP_EXTRA
default_filters:
${GW_FILTERS:-"  {}"}
routes:
$routes
EOF
}

# nginx_config DIR PORT: DIR/nginx.conf, with its pid file and temp paths in DIR.
# nginx's production settings for a proxy: upstream keepalive, HTTP/1.1 upstream (or, with
# NGINX_PASS=grpc, grpc_pass: HTTP/2 to the upstream, one stream per connection at a time);
# it forwards the same X-Forwarded-* headers the gateway sets.
nginx_config() {
  local dir=$1 pass
  case $NGINX_PASS in
    proxy) pass="      proxy_pass http://upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";" ;;
    grpc) pass="      grpc_pass grpc://upstream;" ;;
    *) die "NGINX_PASS=$NGINX_PASS: proxy or grpc" ;;
  esac
  mkdir -p "$dir"
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
    server 127.0.0.1:$CASE_UP_PORT;
    keepalive $CASE_UP_IDLE;
    keepalive_requests 10000000;
    keepalive_timeout 60s;
  }
$NGINX_HTTP_EXTRA
  server {
    listen 127.0.0.1:$2$NGINX_LISTEN_EXTRA backlog=4096;
$NGINX_SERVER_EXTRA
    location / {
$pass
      ${NGINX_PASS}_set_header Host \$http_host;
      ${NGINX_PASS}_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      ${NGINX_PASS}_set_header X-Forwarded-Proto \$scheme;
      ${NGINX_PASS}_set_header X-Forwarded-Host \$host;
$NGINX_LOCATION_EXTRA
    }
  }
}
EOF
}

# haproxy_config FILE PORT: keep-alive both sides, idle server connections shared by all
# clients.
haproxy_config() {
  mkdir -p "$(dirname "$1")"
  cat >"$1" <<EOF
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
  bind 127.0.0.1:$2$HAPROXY_BIND_EXTRA
  http-request set-header X-Forwarded-Proto $CASE_SCHEME
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
$HAPROXY_FRONTEND_EXTRA
  default_backend upstream
backend upstream
  server upstream 127.0.0.1:$CASE_UP_PORT$HAPROXY_SERVER_EXTRA
EOF
}

# write_configs DIR: the three proxies' configs for the current hooks, and one target
# per proxy of PROXIES (plus the upstream itself when CASE_DIRECT=1).
write_configs() {
  local dir=$1 proxy
  [[ $CASE_DIRECT == 0 ]] || add_target direct direct - "$CASE_UP_PORT" "$CASE_PATH"
  for proxy in $PROXIES; do
    case $proxy in
      gateway) gateway_config "$dir/gateway.yaml" "$GW_PORT" "$GW_ADMIN_PORT"
        add_target gateway gateway "$dir/gateway.yaml" "$GW_PORT" "$CASE_PATH"
        [[ -z $GATEWAY_BEFORE ]] || variant_gateway "$dir" gateway_before gateway "" gateway_before ;;
      nginx) nginx_config "$dir/nginx" "$NGINX_PORT"
        add_target nginx nginx "$dir/nginx/nginx.conf" "$NGINX_PORT" "$CASE_PATH" ;;
      haproxy) haproxy_config "$dir/haproxy.cfg" "$HAPROXY_PORT"
        add_target haproxy haproxy "$dir/haproxy.cfg" "$HAPROXY_PORT" "$CASE_PATH" ;;
      *) die "unknown proxy $proxy" ;;
    esac
  done
}

# A second gateway (or nginx) beside the case's first, on ports of its own: a variant
# with other filters, or (PROXY gateway_before) the older binary, compared with BASE.
# variant_gateway DIR NAME BASE [HEADER [PROXY]]
variant_gateway() {
  local admin
  take_port; admin=$port
  take_port
  gateway_config "$1/$2.yaml" "$port" "$admin"
  add_target "$2" "${5:-gateway}" "$1/$2.yaml" "$port" "$CASE_PATH" "$3" "${4:-}"
}
variant_nginx() {  # DIR NAME BASE
  take_port
  nginx_config "$1/$2" "$port"
  add_target "$2" nginx "$1/$2/nginx.conf" "$port" "$CASE_PATH" "$3"
}

# ------------------------------------------------------------------ cases
# A case describes itself (CASE_*), sets the hooks and writes the three configs into $1.
# To add one: write case_NAME and add NAME to CASES.

# The floor beside the proxies: bench/l4_forward.c copies bytes between each client
# connection and an upstream connection of its own, with no HTTP. What it costs per request
# is what the kernel costs any proxy; its "x nginx" is the most a proxy could reach here.
forward_target() {
  [[ $FLOOR == 1 ]] || return 0
  add_target forward forward "$1/forward" "$FORWARD_PORT" "$CASE_PATH"
}

case_plain_small() {
  CASE_DESC="plain proxy, no filters, ${SMALL_BYTES}-byte response"
  write_configs "$1"
  forward_target "$1"
}

case_plain_16k() {
  CASE_DESC="plain proxy, no filters, 16 KiB response"
  CASE_PATH=/16k CASE_BODY_BYTES=$LARGE_BYTES
  write_configs "$1"
  forward_target "$1"
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

# HTTP/2 to the proxies, HTTP/1.1 keep-alive to the upstream (as in every case), driven by
# h2load: H2_CONNECTIONS connections with H2_STREAMS streams in flight on each. Not in the
# default CASES. No direct row (the upstream nginx speaks HTTP/1.1 only) and no forward
# floor: l4_forward would only carry the client's h2 bytes to the HTTP/1.1 upstream, which
# would not understand them; an h2 floor would need an h2 upstream, not this one.
# The upstream pools keep as many idle connections as there are streams in flight (at least
# the usual 64): with 100 streams in flight and 64 kept, the gateway and nginx would close
# and reopen upstream connections all the time (HAProxy keeps every idle one by default).
h2_hooks() {
  local in_flight=$((H2_CONNECTIONS * H2_STREAMS))
  CASE_TOOL=h2load CASE_HTTP_VERSION=2 CASE_DIRECT=0
  CASE_UP_IDLE=$((in_flight > 64 ? in_flight : 64))
}

# Cleartext HTTP/2 with prior knowledge (h2load's default for http:// URLs): the
# gateway's listener with h2c: true (HTTP/1.1 and h2c on one port), nginx 1.22's
# "listen ... http2" without ssl (h2c prior knowledge only), HAProxy's "bind ... proto h2".
h2c_hooks() {
  h2_hooks
  CASE_CURL_ARGS=(--http2-prior-knowledge)
  GW_LISTENER_EXTRA="    h2c: true"
  NGINX_LISTEN_EXTRA=" http2"
  HAPROXY_BIND_EXTRA=" proto h2"
}

case_h2c_small() {
  CASE_DESC="h2c (HTTP/2 prior knowledge, h2load -c$H2_CONNECTIONS -m$H2_STREAMS), ${SMALL_BYTES}-byte response"
  h2c_hooks
  write_configs "$1"
}

# HTTP/2 over TLS, ALPN h2, with https_keepalive's certificate and TLS profile
# (tls_hooks): the gateway's TLS listener (http2: true, its default, offers h2 and
# http/1.1), nginx "listen ... ssl http2", HAProxy "alpn h2,http/1.1". parse-wrk refuses
# a run whose h2load did not negotiate h2.
case_h2_tls_small() {
  CASE_DESC="HTTP/2 over TLS (ALPN h2, TLS 1.3, ECDSA P-256, h2load -c$H2_CONNECTIONS -m$H2_STREAMS), ${SMALL_BYTES}-byte response"
  tls_hooks
  h2_hooks
  CASE_CURL_ARGS=(--http2)
  GW_LISTENER_EXTRA+="
    http2: true"
  NGINX_LISTEN_EXTRA=" ssl http2"
  HAPROXY_BIND_EXTRA=${HAPROXY_BIND_EXTRA/alpn http\/1.1/alpn h2,http/1.1}
  write_configs "$1"
}

# gRPC-like unary calls (SPEC §8), h2c from h2load to the proxy as in h2c_small: every call
# is a POST of GRPC_PATH with a 10-byte body (a 5-byte message behind gRPC's 5-byte prefix)
# and the headers of a gRPC request. The upstream is a second nginx, grpc_upstream below:
# the same server {} on an h2c port (prior knowledge only: nginx 1.22's "listen ... http2"
# without ssl takes no HTTP/1.1 there, so a 2xx through it was carried over HTTP/2) and an
# HTTP/1.1 port. It answers what a unary call returns: 200, content-type application/grpc,
# a 12-byte length-prefixed message, and the trailer grpc-status: 0 (add_trailer; over
# HTTP/1.1 that makes nginx answer chunked, the trailer in the chunked trailer section).
# Like a gRPC server, it answers once it has read the whole request: nginx's "return"
# answers before the body has arrived, and a frame for that stream follows its END_STREAM
# (most likely the RST_STREAM NO_ERROR of a server that answered early); nginx's
# grpc_pass, which has put the connection back in its pool by then, logs "upstream sent
# frame for unknown stream" and answers 502 (13 of 16,000 calls in a smoke run). So mirror_request_body reads the body first (into a subrequest that does
# nothing), the static module's 404 (a missing file, cached by open_file_cache) goes to
# the named location that answers.
GRPC_PATH=/bench.Echo/Say
GRPC_REPLY_BYTES=12
GRPC_HEADERS=(-H "content-type: application/grpc" -H "te: trailers")   # curl's, h2load's and nghttp's -H
GRPC_REQUEST=$work/grpc-request.bin
printf '\x00\x00\x00\x00\x05hello' >"$GRPC_REQUEST"

# Starts the case's gRPC upstream on LOAD_CPUS (beside h2load, like the other upstream);
# it is the case's auxiliary server: its CPU per call is reported, and run_case stops it.
# Sets GRPC_H2_PORT and GRPC_H1_PORT.
grpc_upstream() {
  take_port; GRPC_H2_PORT=$port
  take_port; GRPC_H1_PORT=$port
  {
    cat <<EOF
  server {
    listen 127.0.0.1:$GRPC_H2_PORT http2 backlog=4096;
    listen 127.0.0.1:$GRPC_H1_PORT backlog=4096;
    location = $GRPC_PATH {
      mirror /read-body;
      mirror_request_body on;
      root $work/www;
      log_not_found off;
      open_file_cache_errors on;
      error_page 404 =200 @reply;
    }
    location = /read-body { internal; return 204; }
    location @reply {
      default_type application/grpc;
      add_trailer grpc-status 0 always;
EOF
    printf '      return 200 "\x00\x00\x00\x00\x07goodbye";\n'   # nginx takes the NULs as they are
    printf '    }\n  }\n'
  } >"$work/grpc-upstream.servers"
  upstream_nginx "grpc-upstream-$port" "$GRPC_H2_PORT" "$GRPC_PATH" http --http2-prior-knowledge \
    --data-binary "@$GRPC_REQUEST" "${GRPC_HEADERS[@]}" <"$work/grpc-upstream.servers"
  CASE_AUX_PID=$started_pid
}

grpc_hooks() {
  h2c_hooks
  grpc_upstream
  CASE_PATH=$GRPC_PATH CASE_BODY_BYTES=$GRPC_REPLY_BYTES
  CASE_WRK_ARGS=(-d "$GRPC_REQUEST" "${GRPC_HEADERS[@]}")
  CASE_CURL_ARGS+=(--data-binary "@$GRPC_REQUEST" "${GRPC_HEADERS[@]}")
  CASE_PRECHECK=grpc_precheck CASE_POSTCHECK=grpc_postcheck
}

# To an HTTP/2 upstream: the gateway's upstream with protocol: h2 (prior knowledge, many
# streams on one connection), nginx's grpc_pass (HTTP/2, but one stream per upstream
# connection at a time: the keepalive pool holds as many connections as calls in flight),
# HAProxy's "server ... proto h2" (multiplexed). The upstream speaks h2c, so the forward
# floor and a direct row (h2load against the upstream itself) sit beside them.
case_grpc_h2c() {
  CASE_DESC="gRPC-like unary calls (h2c POST, h2load -c$H2_CONNECTIONS -m$H2_STREAMS), HTTP/2 upstream"
  grpc_hooks
  CASE_UP_PORT=$GRPC_H2_PORT CASE_DIRECT=1
  GW_UPSTREAM_EXTRA="    protocol: h2"
  NGINX_PASS=grpc
  HAPROXY_SERVER_EXTRA=" proto h2"
  write_configs "$1"
  forward_target "$1"
}

# The same calls to the same upstream over HTTP/1.1 keep-alive: each proxy's usual upstream
# settings (gateway protocol: http1, the default; nginx proxy_pass with HTTP/1.1
# keep-alive; HAProxy's plain server line). Real gRPC needs HTTP/2 end to end; this is the
# figure beside it. nginx's proxy module does not pass the upstream's trailers on.
case_grpc_h2c_http1() {
  CASE_DESC="the same gRPC-like calls, HTTP/1.1 keep-alive upstream (the reply chunked, its trailer in the chunked trailer)"
  grpc_hooks
  CASE_UP_PORT=$GRPC_H1_PORT
  write_configs "$1"
}

# One call through each target with nghttp: does the upstream's grpc-status trailer reach
# the client? Over an HTTP/2 upstream it must (else an anomaly); either way it is listed.
# (This and grpc_postcheck read run_case's locals case and pid_of.)
grpc_precheck() {
  local target out got
  for target in "${target_names[@]}"; do
    out=$(nghttp -nv -d "$GRPC_REQUEST" "${GRPC_HEADERS[@]}" \
      "http://127.0.0.1:${target_port[$target]}$CASE_PATH" 2>&1 | tr -d '\0' || true)
    got=none
    grep -q '^\[.*\] recv (stream_id=[0-9]*) grpc-status: 0$' <<<"$out" && got="grpc-status: 0"
    echo "$case/$target: trailer from the upstream: $got" >>"$checks"
    if [[ $got == none && $CASE_UP_PORT == "${GRPC_H2_PORT:-}" ]]; then
      echo "$case/$target: no grpc-status trailer in the answer to an nghttp call" >>"$notes"
    fi
  done
}

# The upstream connections each proxy holds (ss), counted 1 s into a 2-second load of its
# own (after a run, a proxy that served one call per connection has closed those whose
# calls h2load abandoned when it stopped): many calls on few connections over HTTP/2, one
# connection per call in flight over HTTP/1.1 and with nginx's grpc_pass.
grpc_postcheck() {
  local target pid n load line=""
  for target in "${target_names[@]}"; do
    [[ ${target_proxy[$target]} != direct && -n ${pid_of[$target]:-} ]] || continue
    run_wrk "http://127.0.0.1:${target_port[$target]}$CASE_PATH" /dev/null 2 &
    load=$!
    sleep 1
    n=0
    for pid in $(tree_pids "${pid_of[$target]}"); do
      n=$((n + $(ss -Htnp state established "( dport = :$CASE_UP_PORT )" | grep -c "pid=$pid," || true)))
    done
    wait "$load" || true
    line+=" $target $n,"
  done
  echo "$case: upstream connections in use under load:${line%,}" >>"$checks"
}

# The default filter chain of a security gateway against its nearest equivalents: the
# gateway's request_id, security_headers, cors, body_limit and a client_ip rate limit
# that never refuses; nginx with the same headers (add_header), $request_id, limit_req
# and client_max_body_size; HAProxy with set-header, a unique id, a stick-table rate
# track and a Content-Length check. The requests carry no Origin, so CORS only adds
# "Vary: Origin" (the peers add it too).
case_security_chain() {
  CASE_DESC="security default chain: request id, 6 security headers, CORS, 1 MiB body limit, a never-refusing client_ip rate limit"
  GW_FILTERS="  request_id: {}
  security_headers: {}
  cors: {allow_origins: [\"https://app.example\"]}
  body_limit: {max_bytes: 1MiB}
  rate_limit:
    limits:
      - {key: client_ip, requests: 100000000, per: 1s}"
  NGINX_HTTP_EXTRA="  limit_req_zone \$binary_remote_addr zone=perip:10m rate=100000000r/s;"
  NGINX_LOCATION_EXTRA="      limit_req zone=perip burst=100000000 nodelay;
      client_max_body_size 1m;
      proxy_set_header X-Request-ID \$request_id;
      proxy_hide_header X-Powered-By;
      add_header X-Request-ID \$request_id always;
      add_header X-Content-Type-Options nosniff always;
      add_header X-Frame-Options DENY always;
      add_header X-XSS-Protection 0 always;
      add_header Content-Security-Policy \"default-src 'self'; frame-ancestors 'none'\" always;
      add_header Referrer-Policy strict-origin-when-cross-origin always;
      add_header Permissions-Policy \"camera=(), microphone=(), geolocation=()\" always;
      add_header Vary Origin always;"
  HAPROXY_FRONTEND_EXTRA="  unique-id-format %[uuid()]
  stick-table type ip size 100k expire 30s store http_req_rate(1s)
  http-request track-sc0 src
  http-request deny deny_status 429 if { sc_http_req_rate(0) gt 100000000 }
  http-request deny deny_status 413 if { req.hdr_val(content-length) gt 1048576 }
  http-request set-header X-Request-ID %[unique-id]
  http-response del-header X-Powered-By
  http-response del-header Server
  http-response set-header X-Request-ID %[unique-id]
  http-response set-header X-Content-Type-Options nosniff
  http-response set-header X-Frame-Options DENY
  http-response set-header X-XSS-Protection 0
  http-response set-header Content-Security-Policy \"default-src 'self'; frame-ancestors 'none'\"
  http-response set-header Referrer-Policy strict-origin-when-cross-origin
  http-response set-header Permissions-Policy \"camera=(), microphone=(), geolocation=()\"
  http-response set-header Vary Origin"
  CASE_DIRECT=0
  write_configs "$1"
  target_expect[gateway]="^x-content-type-options: nosniff" target_expect[nginx]="^x-content-type-options: nosniff"
  target_expect[haproxy]="^x-content-type-options: nosniff"
}

# JWT_ALG tokens of JWT_USERS users signed by python3-jwt, once per run: the JWKS, a
# wrk script sending them round-robin, and one token for the checks.
JWT_ALG=${JWT_ALG:-ES256}
JWT_USERS=${JWT_USERS:-1000}
jwt_tokens() {
  [[ -s $work/jwt/tokens.lua ]] && return 0
  mkdir -p "$work/jwt"
  /usr/bin/python3 - "$work/jwt" "$JWT_USERS" "$JWT_ALG" <<'EOF' || die "token generation failed (python3-jwt and python3-cryptography are needed)"
import json, sys, time
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

out, users, alg = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if alg.startswith("ES"):
    curve = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}[alg]
    key = ec.generate_private_key(curve())
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
elif alg == "EdDSA":
    key = ed25519.Ed25519PrivateKey.generate()
    jwk = json.loads(OKPAlgorithm.to_jwk(key.public_key()))
else:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
jwk["kid"] = "bench"
json.dump({"keys": [jwk]}, open(f"{out}/jwks.json", "w"))
now = int(time.time())
tokens = [jwt.encode({"iss": "https://issuer.bench/", "aud": "api", "sub": f"user-{i}",
                      "iat": now, "exp": now + 86400, "scope": "read"},
                     key, algorithm=alg, headers={"kid": "bench"}) for i in range(users)]
with open(f"{out}/tokens.lua", "w") as f:
    f.write("tokens = {\n" + ",\n".join(f'"{t}"' for t in tokens) + "\n}\n")
    f.write("""
local n = #tokens
local i = 0
request = function()
  i = i + 1
  return wrk.format(nil, nil, {["Authorization"] = "Bearer " .. tokens[(i % n) + 1]})
end
""")
with open(f"{out}/token.txt", "w") as f:
    f.write(tokens[0])
EOF
}

# A JWT-protected route against the same route without authentication, in one gateway:
# every request of both carries "Authorization: Bearer <token>" (JWT_USERS users' tokens
# round-robin), so the bytes parsed are the same and only the jwt filter differs. Each
# user's token is verified once, then found in the verified-token cache.
case_jwt() {
  CASE_DESC="JWT $JWT_ALG route ($JWT_USERS users' tokens round-robin) vs the same route without authentication"
  jwt_tokens
  CASE_DIRECT=0
  CASE_WRK_ARGS=(-s "$work/jwt/tokens.lua")
  CASE_CURL_ARGS=(-H "Authorization: Bearer $(cat "$work/jwt/token.txt")")
  CASE_PRECHECK=jwt_precheck
  GW_TOP_EXTRA="jwt_providers:
  - name: bench
    issuer: https://issuer.bench/
    audiences: [api]
    jwks_file: $work/jwt/jwks.json
    algorithms: [$JWT_ALG]
    forward_claims: {sub: X-User-Id}"
  GW_ROUTES="  - name: jwt
    match: {path_prefix: /jwt/}
    upstream: upstream
    strip_prefix: /jwt
    filters:
      jwt: {provider: bench, scopes: [read]}
  - name: plain
    match: {path_prefix: /plain/}
    upstream: upstream
    strip_prefix: /plain"
  gateway_config "$1/gateway.yaml" "$GW_PORT" "$GW_ADMIN_PORT"
  add_target gateway gateway "$1/gateway.yaml" "$GW_PORT" /plain/small
  add_target gateway-jwt gateway "$1/gateway.yaml" "$GW_PORT" /jwt/small gateway
}
jwt_precheck() {  # the protected route must refuse a request without a token
  local got
  got=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$GW_PORT/jwt/small" || true)
  [[ $got == 401 ]] || echo "jwt: /jwt/small without a token answered '$got', expected 401" >>"$notes"
}

# The cost of a rate limit that never refuses: one client_ip limit with the in-process
# store and with the Redis store (redis-server on LOAD_CPUS, beside wrk), against the
# same gateway without it; nginx without and with limit_req beside them. The Redis
# server's CPU per request is reported apart.
case_rate_limit() {
  local i redis_port
  CASE_DESC="a never-refusing client_ip rate limit: memory store, Redis store, none; nginx limit_req"
  CASE_DIRECT=0
  command -v redis-server >/dev/null || die "rate_limit: redis-server is missing (scripts/install-deps.sh bench)"
  take_port; redis_port=$port
  start "redis-$redis_port" "$LOAD_CPUS" redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no
  CASE_AUX_PID=$started_pid
  for ((i = 0; i < 100; i++)); do
    { exec 3<>"/dev/tcp/127.0.0.1/$redis_port"; } 2>/dev/null && { exec 3>&-; break; }
    sleep 0.1
  done
  gateway_config "$1/gateway.yaml" "$GW_PORT" "$GW_ADMIN_PORT"
  add_target gateway gateway "$1/gateway.yaml" "$GW_PORT" "$CASE_PATH"
  GW_FILTERS="  rate_limit:
    limits:
      - {key: client_ip, requests: 100000000, per: 1s}"
  variant_gateway "$1" gateway-memory gateway "^ratelimit-remaining"
  GW_TOP_EXTRA="rate_limit_store:
  type: redis
  redis: {address: \"127.0.0.1:$redis_port\", timeout: 200ms, on_error: deny}"
  variant_gateway "$1" gateway-redis gateway-memory "^ratelimit-remaining"
  nginx_config "$1/nginx" "$NGINX_PORT"
  add_target nginx nginx "$1/nginx/nginx.conf" "$NGINX_PORT" "$CASE_PATH"
  NGINX_HTTP_EXTRA="  limit_req_zone \$binary_remote_addr zone=perip:10m rate=100000000r/s;"
  NGINX_LOCATION_EXTRA="      limit_req zone=perip burst=100000000 nodelay;"
  variant_nginx "$1" nginx-limit_req nginx
}

# Tracing (SPEC §10) on plain_small's path: the same gateway without it, with every
# request sampled (each span encoded, queued and exported in batches of 512 to the upstream
# nginx, which stands in for a collector: it takes the POSTs and drops them), and with
# tracing on but nothing sampled (ids, the sampling decision and the traceparent header
# only). The exporter thread's CPU is the gateway process's: it counts. The postcheck reads
# the traced gateway's counters: spans exported, none dropped, or the figure means nothing.
# With GATEWAY_BEFORE, that binary runs traced too (gateway-traced-before, base gateway).
case_tracing() {
  CASE_DESC="tracing off, on at ratio 1.0 (spans exported over OTLP/HTTP), on at ratio 0"
  CASE_DIRECT=0
  gateway_config "$1/gateway.yaml" "$GW_PORT" "$GW_ADMIN_PORT"
  add_target gateway gateway "$1/gateway.yaml" "$GW_PORT" "$CASE_PATH"
  local otlp="otlp: {endpoint: \"http://127.0.0.1:$UP_PORT/v1/traces\", batch: {max_spans: 512, max_delay: 1s}, queue: 8192}"
  GW_TOP_EXTRA="tracing:
  sampler: {ratio: 1.0}
  $otlp"
  take_port; TRACED_ADMIN_PORT=$port
  take_port
  gateway_config "$1/gateway-traced.yaml" "$port" "$TRACED_ADMIN_PORT"
  add_target gateway-traced gateway "$1/gateway-traced.yaml" "$port" "$CASE_PATH" gateway
  TRACED_BEFORE_ADMIN_PORT=""
  if [[ -n $GATEWAY_BEFORE ]]; then  # the older binary, traced the same way, in the same run
    take_port; TRACED_BEFORE_ADMIN_PORT=$port
    take_port
    gateway_config "$1/gateway-traced-before.yaml" "$port" "$TRACED_BEFORE_ADMIN_PORT"
    add_target gateway-traced-before gateway_before "$1/gateway-traced-before.yaml" "$port" \
      "$CASE_PATH" gateway
  fi
  GW_TOP_EXTRA="tracing:
  sampler: {ratio: 0}
  $otlp"
  variant_gateway "$1" gateway-unsampled gateway
  CASE_POSTCHECK=tracing_postcheck
}

tracing_postcheck() {
  local metrics exported dropped name admin
  sleep 2   # the last partial batch (max_delay 1s)
  for name in gateway-traced gateway-traced-before; do
    admin=$TRACED_ADMIN_PORT
    [[ $name == gateway-traced ]] || admin=$TRACED_BEFORE_ADMIN_PORT
    [[ -n $admin ]] || continue
    metrics=$(curl -s --max-time 5 "http://127.0.0.1:$admin/metrics" || true)
    exported=$(awk '$1 == "gateway_tracing_spans_exported_total" {print $2}' <<<"$metrics")
    dropped=$(awk '/^gateway_tracing_spans_dropped_total/ {s += $2} END {print s + 0}' <<<"$metrics")
    log "  $name: ${exported:-?} spans exported, $dropped dropped"
    [[ ${exported:-0} != 0 && $dropped == 0 ]] ||
      echo "tracing: $name exported ${exported:-no} spans and dropped $dropped" >>"$notes"
  done
}

# ------------------------------------------------------------------ running

results=$work/results.tsv
printf 'case\tpath\tworkers\tproxy\trun\tcpu_ticks\tsys_ticks\taux_ticks\tbase\trequests\tseconds\trps\tp50_us\tp99_us\tsocket_errors\tnon2xx\ttcp_segments\tswitches\n' >"$results"

run_wrk() {  # URL OUTPUT [SECONDS]
  local seconds=${3:-$DURATION}
  if [[ $CASE_TOOL == h2load ]]; then
    # No --warm-up-time: the proxy's CPU is read around the whole command, so its requests
    # must be counted over all of it (check_target's 1 s run is the warm-up, as for wrk).
    # --log-file OUTPUT.requests: a line per request (one write(2) each, on LOAD_CPUS) for
    # p50/p99, which h2load does not print; parse-wrk reads it.
    local log_args=()
    [[ $2 == /dev/null ]] || log_args=(--log-file="$2.requests")
    pinned "$LOAD_CPUS" timeout $((seconds + 30)) \
      h2load -t "$THREADS" -c "$H2_CONNECTIONS" -m "$H2_STREAMS" -D "$seconds" "${log_args[@]}" \
      "${CASE_WRK_ARGS[@]}" "$1" >"$2" 2>&1
    return
  fi
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

# start_proxy PROXY CONFIG PORT PATH NAME: starts it and waits for a 200 on PORT/PATH;
# sets proxy_pid.
start_proxy() {
  local proxy=$1 conf=$2 port=$3 path=$4 name=$5
  case $proxy in
    gateway) start "$name" "$CASE_CPUS" "$work/gateway" -c "$conf" ;;
    gateway_before) start "$name" "$CASE_CPUS" "$work/gateway_before" -c "$conf" ;;
    nginx) start "$name" "$CASE_CPUS" nginx -p "$(dirname "$conf")" -e "$(dirname "$conf")/nginx-error.log" -c "$conf" ;;
    haproxy) start "$name" "$CASE_CPUS" haproxy -f "$conf" -db ;;
    forward) start "$name" "$CASE_CPUS" "$work/l4_forward" "$port" "$CASE_UP_PORT" ;;
    *) die "unknown proxy $proxy" ;;
  esac
  proxy_pid=$started_pid
  if ! wait_ready "$proxy_pid" "$port" "$path" "$CASE_SCHEME" "${CASE_CURL_ARGS[@]}"; then
    echo "$name: did not answer 200 on :$port$path within 10 s; log: $(tail -5 "$work/logs/$name.log")" >>"$notes"
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
  if [[ $stopped_status != 0 && ! ($name == haproxy* && $stopped_status == 143) ]]; then
    echo "$name: exit status $stopped_status after SIGTERM" >>"$notes"
  fi
  # stderr lines at error level or worse (HAProxy's FD-limit alert is expected, see above)
  errors=$(grep -iE '"level": *"(error|critical)"|\[(error|alert|crit|emerg)\]|ALERT' "$work/logs/$name.log" |
    grep -cv 'FD limit' || true)
  [[ $errors == 0 ]] || echo "$name: $errors error lines in $work/logs/$name.log" >>"$notes"
}

# Checks one response's status, body size and expected header, then warms up
# (connection pools, caches).
check_target() {
  local case=$1 target=$2 url=$3 got headers expected="200 $CASE_BODY_BYTES"
  headers=$work/logs/check-$case-$target.txt
  [[ -z $CASE_HTTP_VERSION ]] || expected+=" HTTP/$CASE_HTTP_VERSION"
  got=$(curl -sk -D "$headers" -o /dev/null --max-time 5 -w '%{http_code} %{size_download} HTTP/%{http_version}' \
    "${CASE_CURL_ARGS[@]}" "$url" || true)
  [[ -n $CASE_HTTP_VERSION ]] || got=${got% HTTP/*}
  if [[ $got != "$expected" ]]; then
    echo "$case/$target: GET $url answered '$got', expected '$expected'" >>"$notes"
  fi
  if [[ -n ${target_expect[$target]} ]] && ! tr -d '\r' <"$headers" | grep -qiE "${target_expect[$target]}"; then
    echo "$case/$target: no header matching '${target_expect[$target]}' in the answer to $url" >>"$notes"
  fi
  run_wrk "$url" /dev/null 1 || true
}

# One wrk run against TARGET, with its process's CPU time over it (PID "-": the upstream
# itself) and the case's auxiliary server's.
measure() {
  local case=$1 target=$2 pid=$3 url=$4 run=$5 out cpu=- sys=- aux=- parsed
  local requests seconds rps p50 p99 errors non2xx before=(0 0) after aux_before=(0 0) aux_after
  local segments_before switches_before=0 switches=-
  out=$work/logs/wrk-$case-$target-$run.txt
  [[ $pid == - ]] || read -ra before <<<"$(cpu_ticks "$pid")"
  [[ $pid == - ]] || switches_before=$(context_switches "$pid")
  segments_before=$(tcp_out_segments)
  [[ $CASE_AUX_PID == - ]] || read -ra aux_before <<<"$(cpu_ticks "$CASE_AUX_PID")"
  if ! run_wrk "$url" "$out"; then
    echo "$case/$target run $run: $CASE_TOOL failed: $(tail -3 "$out")$([[ $pid == - ]] || alive "$pid" ||
      echo " (PID $pid is gone)")" >>"$notes"
    return 0
  fi
  local segments=$(($(tcp_out_segments) - segments_before))
  if [[ $pid != - ]]; then
    read -ra after <<<"$(cpu_ticks "$pid")"
    cpu=$((after[0] - before[0])) sys=$((after[1] - before[1]))
    switches=$(($(context_switches "$pid") - switches_before))
  fi
  if [[ $CASE_AUX_PID != - ]]; then
    read -ra aux_after <<<"$(cpu_ticks "$CASE_AUX_PID")"
    aux=$((aux_after[0] - aux_before[0]))
  fi
  # a run parse-wrk refuses (h2load: a request that failed, a non-2xx, not HTTP/2) is
  # reported and left out of the table
  if ! parsed=$(python3 "$helper" parse-wrk "$out" 2>&1); then
    echo "$case/$target run $run: refused: $parsed$([[ $pid == - ]] || alive "$pid" ||
      echo " (PID $pid is gone)")" >>"$notes"
    log "  run $run/$REPEATS $target: refused: $parsed"
    return 0
  fi
  [[ $KEEP == 1 ]] || rm -f "$out.requests"
  read -r requests seconds rps p50 p99 errors non2xx <<<"$parsed"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$case" "${target_path[$target]}" "$CASE_WORKERS" "$target" \
    "$run" "$cpu" "$sys" "$aux" "${target_base[$target]}" "$parsed" "$segments" "$switches" >>"$results"
  local line="  run $run/$REPEATS $target: ${rps%.*} req/s, p50 ${p50}us, p99 ${p99}us, errors $((errors + non2xx))"
  [[ $cpu == - ]] || line+=", proxy CPU $((cpu * 100 / CLK_TCK / DURATION))%, $((cpu * 1000000 / CLK_TCK / requests)) us/req"
  log "$line"
}

# Starts every process of the case at once (each on its own port; an idle one costs
# nothing) and interleaves the targets' runs, so that other load on the machine spreads
# over all of them rather than spoiling one.
run_case() {
  local case=$1 dir=$work/$1 target run conf name
  local -a targets=() pids=()
  local -A pid_of_conf=() pid_of=() url_of=()
  declare -F "case_$case" >/dev/null || die "unknown case '$case'"
  reset_case
  "case_$case" "$dir"
  log "[$case] $CASE_DESC"
  if [[ $CASE_TOOL != wrk ]] && ! command -v "$CASE_TOOL" >/dev/null; then
    local package=apache2-utils
    [[ $CASE_TOOL != h2load ]] || package=nghttp2-client
    echo "$case: skipped, $CASE_TOOL is missing ($package; scripts/install-deps.sh bench)" >>"$notes"
    log "  skipped: $CASE_TOOL is missing"
    return 0
  fi
  for target in "${target_names[@]}"; do
    conf=${target_conf[$target]}
    if [[ ${target_proxy[$target]} == direct ]]; then
      pid_of[$target]=-
    elif [[ -n ${pid_of_conf[$conf]:-} ]]; then
      pid_of[$target]=${pid_of_conf[$conf]}
    else
      start_proxy "${target_proxy[$target]}" "$conf" "${target_port[$target]}" "${target_path[$target]}" \
        "$target-$case" || continue
      pid_of_conf[$conf]=$proxy_pid pid_of[$target]=$proxy_pid
      pids+=("$target-$case" "$proxy_pid")
    fi
    targets+=("$target")
    local scheme=$CASE_SCHEME
    [[ ${target_proxy[$target]} != direct ]] || scheme=http
    url_of[$target]=$scheme://127.0.0.1:${target_port[$target]}${target_path[$target]}
  done
  [[ -z $CASE_PRECHECK ]] || "$CASE_PRECHECK"
  for target in "${targets[@]}"; do check_target "$case" "$target" "${url_of[$target]}"; done
  for ((run = 1; run <= REPEATS; run++)); do
    for target in "${targets[@]}"; do
      measure "$case" "$target" "${pid_of[$target]}" "${url_of[$target]}" "$run"
    done
  done
  [[ -z $CASE_POSTCHECK ]] || "$CASE_POSTCHECK"
  [[ $CASE_TOOL != h2load ]] || h2load_cases+=" $case"
  for ((i = 0; i < ${#pids[@]}; i += 2)); do stop_proxy "${pids[i]}" "${pids[i + 1]}"; done
  [[ $CASE_AUX_PID == - ]] || stop "$CASE_AUX_PID"
}

memory_case() {
  local dir=$work/memory target row
  reset_case
  CASE_DIRECT=0
  case_plain_small "$dir"
  printf 'proxy\tconns\trss_before\trss_after\tok\tfailed\n' >"$work/memory.tsv"
  log "[memory] $IDLE_CONNS idle keep-alive connections, one request each"
  for target in "${target_names[@]}"; do
    start_proxy "${target_proxy[$target]}" "${target_conf[$target]}" "${target_port[$target]}" \
      "$CASE_PATH" "$target-memory" || continue
    row=$(pinned "$LOAD_CPUS" timeout 300 python3 "$helper" idle-conns \
      --pid "$proxy_pid" --port "${target_port[$target]}" --path "$CASE_PATH" --n "$IDLE_CONNS") ||
      echo "memory/$target: idle-conns client failed" >>"$notes"
    if [[ -n $row ]]; then
      printf '%s\t%s\t%s\n' "$target" "$IDLE_CONNS" "$row" >>"$work/memory.tsv"
      log "  $target: $row"
    fi
    alive "$proxy_pid" || echo "memory/$target: the proxy died during the idle-connection test" >>"$notes"
    stop_proxy "$target-memory" "$proxy_pid"
  done
}

# A STREAM_BYTES (1 GiB) download from the upstream and the same upload to a sink that
# answers only once it has the whole body, through each proxy in turn (a fresh process
# each), with the proxy's RSS sampled every 10 ms: the peak over its RSS before.
# nginx would buffer both bodies in temp files by default: it is told to stream them, as an
# operator would for large transfers (proxy_buffering off, proxy_request_buffering off).
stream_case() {
  local dir=$work/stream target direction row sink_pid sink_port url
  [[ -e $work/www/1g ]] || truncate -s "$STREAM_BYTES" "$work/www/1g"   # sparse: no disk
  # Once straight from the upstream first: the first reader of the file pays for filling
  # the page cache, which would otherwise count against whichever proxy goes first.
  curl -s -o /dev/null --max-time 300 "http://127.0.0.1:$UP_PORT/1g" || die "the upstream does not serve /1g"
  take_port; sink_port=$port
  start sink "$LOAD_CPUS" python3 "$helper" sink --port "$sink_port"
  sink_pid=$started_pid
  printf 'proxy\tdirection\tbytes\tseconds\trss_before\trss_peak\n' >"$work/stream.tsv"
  log "[stream] $((STREAM_BYTES >> 20)) MiB download and upload through each proxy"
  for direction in download upload; do
    reset_case
    [[ $direction == download ]] || CASE_UP_PORT=$sink_port   # the proxies' upstream is now the sink
    CASE_DIRECT=0
    GW_LIMITS_EXTRA="  max_body_bytes: $((STREAM_BYTES * 2))"
    NGINX_LOCATION_EXTRA="      client_max_body_size 0;
      proxy_buffering off;
      proxy_request_buffering off;"
    write_configs "$dir/$direction"
    for target in "${target_names[@]}"; do
      # the sink answers GET /small too (an empty body)
      start_proxy "${target_proxy[$target]}" "${target_conf[$target]}" "${target_port[$target]}" \
        /small "$target-stream-$direction" || continue
      url=http://127.0.0.1:${target_port[$target]}/1g
      if [[ $direction == download ]]; then
        row=$(pinned "$LOAD_CPUS" python3 "$helper" stream --pid "$proxy_pid" --url "$url") || row=""
      else
        row=$(pinned "$LOAD_CPUS" python3 "$helper" stream --pid "$proxy_pid" --url "$url" \
          --upload "$work/www/1g") || row=""
      fi
      if [[ -n $row ]]; then
        printf '%s\t%s\t%s\n' "$target" "$direction" "$row" >>"$work/stream.tsv"
        log "  $target $direction: $row"
      else
        echo "stream/$target: the $direction failed" >>"$notes"
      fi
      stop_proxy "$target-stream-$direction" "$proxy_pid"
    done
  done
  stop "$sink_pid"
}

cp "$GATEWAY" "$work/gateway"   # others may rebuild build/gateway meanwhile
[[ -z $GATEWAY_BEFORE ]] || cp "$GATEWAY_BEFORE" "$work/gateway_before"
if [[ $FLOOR == 1 ]]; then
  cc -O2 -o "$work/l4_forward" "$here/l4_forward.c" || die "cannot build bench/l4_forward.c (FLOOR=0 skips it)"
fi
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
revision=$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)
log "compare.sh: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency, $REPEATS runs per proxy;" \
  "proxy on CPU $PROXY_CPUS, wrk + upstream on CPU $LOAD_CPUS; temp dir $work"
h2load_cases=""
for case in $CASES; do run_case "$case"; done
if [[ $MEMORY == 1 ]]; then memory_case; fi
if [[ $STREAM == 1 ]]; then stream_case; fi

# ------------------------------------------------------------------ report

echo
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), $("$work/gateway" --version 2>&1 | head -1) ($revision)"
echo "# wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency, median of $REPEATS runs;" \
  "proxy pinned to CPU $PROXY_CPUS (2-worker cases: $WIDE_CPUS), wrk + upstream to CPU $LOAD_CPUS"
echo "# load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine adds noise); nice $NICE"
if [[ " $CASES " == *" https_full_handshakes "* ]]; then
  echo "# https_full_handshakes: ab -q -r -s 5 -t $DURATION -c $CONNECTIONS (a new connection and TLS session per request), pinned like wrk"
fi
if [[ -n $h2load_cases ]]; then
  echo "#$h2load_cases: h2load -t$THREADS -c$H2_CONNECTIONS -m$H2_STREAMS -D $DURATION" \
    "($((H2_CONNECTIONS * H2_STREAMS)) streams in flight), pinned like wrk; p50/p99 from its --log-file"
fi
if [[ $h2load_cases == *grpc_* ]]; then
  echo "# grpc_*: POST $GRPC_PATH, h2load -d (10 bytes: a 5-byte message behind gRPC's prefix) ${GRPC_HEADERS[*]};" \
    "upstream: a second nginx on CPU $LOAD_CPUS, 200 + $GRPC_REPLY_BYTES bytes + trailer grpc-status: 0 (aux = its CPU)"
fi
echo
[[ $(wc -l <"$results") -lt 2 ]] || python3 "$helper" table --clk-tck "$CLK_TCK" "$results"
if [[ -f $work/memory.tsv ]]; then
  echo
  python3 "$helper" mem-table "$work/memory.tsv"
fi
if [[ -f $work/stream.tsv ]]; then
  echo
  python3 "$helper" stream-table "$work/stream.tsv"
fi
if [[ -s $checks ]]; then
  echo
  echo "Checks:"
  sed 's/^/  /' "$checks"
fi
if [[ -s $notes ]]; then
  echo
  echo "Anomalies:"
  sed 's/^/  /' "$notes"
fi
