#!/usr/bin/env bash
# The cost of rate limiting (issue 6): req/s of a route with one client_ip limit that never
# refuses, with the memory store and with the Redis store (TCP, and a unix socket), as a
# ratio to the same route without limits; nginx without and with limit_req beside it.
# See docs/benchmarks.md.
#
#   bench/rate_limit.sh                 ~4 min: 5 targets x REPEATS runs of DURATION s
#   QUICK=1 bench/rate_limit.sh         smoke test
#
# Settings (environment): DURATION=10 REPEATS=3 CONNECTIONS=50 THREADS=1 WORKERS=1
#   LOAD_CPUS=0 PROXY_CPUS=1   wrk, the upstream and redis-server on LOAD_CPUS; the proxy
#                              alone on PROXY_CPUS (Redis shares the load generator's core)
#   TARGETS="gateway gateway_memory ..."   a subset (default: all six)
#   NICE=0                     e.g. -10: run everything ahead of other work on the machine
#   GATEWAY=build/gateway KEEP=1 (keep the temp dir)
# The figure of merit is req/s and the proxy's CPU time per request (from /proc), median
# of the runs; runs of the targets are interleaved so other load spreads over all.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
helper=$here/compare_helper.py
export PATH=$PATH:/usr/sbin:/sbin

if [[ ${QUICK:-0} == 1 ]]; then DURATION=${DURATION:-3} REPEATS=${REPEATS:-1}; fi
DURATION=${DURATION:-10}
REPEATS=${REPEATS:-3}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-1}
WORKERS=${WORKERS:-1}
LOAD_CPUS=${LOAD_CPUS:-0}
PROXY_CPUS=${PROXY_CPUS:-1}
GATEWAY=${GATEWAY:-$root/build/gateway}
KEEP=${KEEP:-0}
NICE=${NICE:-0}
CLK_TCK=$(getconf CLK_TCK)

log() { printf '%s\n' "$*" >&2; }
die() { log "rate_limit.sh: $*"; exit 1; }

for tool in nginx wrk taskset curl python3 redis-server; do
  command -v "$tool" >/dev/null || die "missing $tool (scripts/install-deps.sh bench)"
done
[[ -x $GATEWAY ]] || die "no gateway binary at $GATEWAY"
nice -n "$NICE" true 2>/dev/null || die "NICE=$NICE: not permitted"

work=$(mktemp -d /tmp/gw-ratelimit.XXXXXX)
chmod 755 "$work"
mkdir -p "$work/logs"
started=()

alive() { [[ -e /proc/$1 ]] && [[ $(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) != Z ]]; }
start() {  # NAME CPUS CMD...; sets started_pid
  local name=$1 cpus=$2
  shift 2
  nice -n "$NICE" taskset -c "$cpus" "$@" >"$work/logs/$name.log" 2>&1 &
  started_pid=$!
  started+=("$started_pid")
}
stop() {
  local pid=$1 i
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
  alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local pid
  for pid in "${started[@]}"; do stop "$pid"; done
  if [[ $KEEP == 1 ]]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cpu_ticks() {  # utime+stime of PID and its children (nginx workers)
  local pid total=0 fields
  for pid in $1 $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    read -ra fields <<<"$(sed 's/^.*) //' /proc/"$pid"/stat 2>/dev/null)" || continue
    total=$((total + fields[11] + fields[12]))
  done
  echo "$total"
}
wait_ready() {  # PID PORT
  local i
  for ((i = 0; i < 100; i++)); do
    alive "$1" || return 1
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$2/small") == 200 ]] && return 0
    sleep 0.1
  done
  return 1
}

read -r UP_PORT REDIS_PORT P1 P2 P3 P4 P5 P6 A1 A2 A3 A6 <<<"$(python3 "$helper" free-ports 12)"

# ------------------------------------------------------------------ upstream and Redis
cat >"$work/upstream.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $work/upstream.pid;
error_log $work/logs/upstream-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  server {
    listen 127.0.0.1:$UP_PORT backlog=4096;
    location = /small { return 200 "hello, world\n"; }
  }
}
EOF
start upstream "$LOAD_CPUS" nginx -p "$work" -e "$work/logs/upstream-error.log" -c "$work/upstream.conf"
wait_ready "$started_pid" "$UP_PORT" || die "upstream did not start"
start redis "$LOAD_CPUS" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --unixsocket "$work/redis.sock" --unixsocketperm 700
REDIS_PID=$started_pid

# ------------------------------------------------------------------ proxies
# gateway_config NAME PORT ADMIN_PORT STORE(none|memory|redis|redis_unix)
gateway_config() {
  local filters="{}" store=""
  if [[ $4 != none ]]; then
    filters='
      rate_limit:
        limits:
          - {key: client_ip, requests: 100000000, per: 1s}'
  fi
  if [[ $4 == redis* ]]; then
    local address=127.0.0.1:$REDIS_PORT
    [[ $4 == redis_unix ]] && address=unix:$work/redis.sock
    store="rate_limit_store:
  type: redis
  redis: {address: \"$address\", timeout: 200ms, on_error: deny}"
  fi
  cat >"$work/$1.yaml" <<EOF
workers: $WORKERS
listeners: [{name: bench, address: 127.0.0.1:$2}]
admin: {address: 127.0.0.1:$3}
logging: {level: info, access_log: "off"}
timeouts: {idle: 120s, drain: 2s}
$store
upstreams:
  - name: upstream
    endpoints: [127.0.0.1:$UP_PORT]
    keepalive: {max_idle: 64, idle_timeout: 60s}
routes:
  - name: all
    match: {path_prefix: /}
    upstream: upstream
    filters: $filters
EOF
}

# nginx_config NAME PORT LIMIT(0|1)
nginx_config() {
  local zone="" limit=""
  if [[ $3 == 1 ]]; then
    zone="limit_req_zone \$binary_remote_addr zone=perip:10m rate=100000000r/s;"
    limit="limit_req zone=perip burst=100000000 nodelay;"
  fi
  mkdir -p "$work/$1"
  cat >"$work/$1/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $WORKERS;
pid $work/$1/nginx.pid;
error_log $work/$1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  client_body_temp_path $work/$1/tmp;
  proxy_temp_path $work/$1/tmp;
  upstream upstream { server 127.0.0.1:$UP_PORT; keepalive 64; }
  $zone
  server {
    listen 127.0.0.1:$2 backlog=4096;
    location / {
      $limit
      proxy_pass http://upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
EOF
}

cp "$GATEWAY" "$work/gateway"  # others may rebuild build/gateway meanwhile
read -ra targets <<<"${TARGETS:-gateway gateway_memory gateway_redis gateway_redis_unix nginx nginx_limit_req}"
declare -A port_of=([gateway]=$P1 [gateway_memory]=$P2 [gateway_redis]=$P3 [gateway_redis_unix]=$P6
  [nginx]=$P4 [nginx_limit_req]=$P5)
declare -A pid_of
gateway_config gateway "$P1" "$A1" none
gateway_config gateway_memory "$P2" "$A2" memory
gateway_config gateway_redis "$P3" "$A3" redis
gateway_config gateway_redis_unix "$P6" "$A6" redis_unix
nginx_config nginx "$P4" 0
nginx_config nginx_limit_req "$P5" 1
for t in gateway gateway_memory gateway_redis gateway_redis_unix; do
  [[ " ${targets[*]} " == *" $t "* ]] || continue
  start "$t" "$PROXY_CPUS" "$work/gateway" -c "$work/$t.yaml"
  pid_of[$t]=$started_pid
done
for t in nginx nginx_limit_req; do
  [[ " ${targets[*]} " == *" $t "* ]] || continue
  start "$t" "$PROXY_CPUS" nginx -p "$work/$t" -e "$work/$t/error.log" -c "$work/$t/nginx.conf"
  pid_of[$t]=$started_pid
done
for t in "${targets[@]}"; do
  wait_ready "${pid_of[$t]}" "${port_of[$t]}" || die "$t did not start: $(tail -3 "$work/logs/$t.log")"
  headers=$(curl -s -D - -o /dev/null "http://127.0.0.1:${port_of[$t]}/small")
  if [[ $t == gateway_* ]] && ! grep -qi '^ratelimit-remaining' <<<"$headers"; then
    die "$t: no RateLimit fields: $headers"
  fi
  nice -n "$NICE" taskset -c "$LOAD_CPUS" wrk -t"$THREADS" -c"$CONNECTIONS" -d1s "http://127.0.0.1:${port_of[$t]}/small" >/dev/null
done

results=$work/results.tsv
: >"$results"
for ((run = 1; run <= REPEATS; run++)); do
  for t in "${targets[@]}"; do
    out=$work/logs/wrk-$t-$run.txt
    before=$(cpu_ticks "${pid_of[$t]}")
    redis_before=$(cpu_ticks "$REDIS_PID")
    nice -n "$NICE" taskset -c "$LOAD_CPUS" timeout $((DURATION + 30)) wrk -t"$THREADS" -c"$CONNECTIONS" \
      -d"${DURATION}s" --timeout 5s --latency "http://127.0.0.1:${port_of[$t]}/small" >"$out" 2>&1
    cpu=$(($(cpu_ticks "${pid_of[$t]}") - before))
    redis_cpu=$(($(cpu_ticks "$REDIS_PID") - redis_before))
    read -r requests seconds rps p50 p99 errors non2xx <<<"$(python3 "$helper" parse-wrk "$out")"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$run" "$rps" "$p50" "$p99" "$((errors + non2xx))" \
      "$cpu" "$redis_cpu" >>"$results"
    log "  run $run $t: ${rps%.*} req/s, p50 ${p50}us, p99 ${p99}us, errors $((errors + non2xx)), proxy $((cpu * 1000000 / CLK_TCK / requests)) us/req"
  done
done

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, median of $REPEATS;" \
  "proxy ($WORKERS worker) on CPU $PROXY_CPUS, wrk + upstream + redis-server on CPU $LOAD_CPUS; nice $NICE; load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$results" "$CLK_TCK" "$DURATION" <<'EOF'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
tck, duration = int(sys.argv[2]), float(sys.argv[3])
by = {}
for t, run, rps, p50, p99, errors, cpu, rcpu in rows:
    by.setdefault(t, []).append((float(rps), float(p50), float(p99), int(errors), int(cpu), int(rcpu)))
def med(t, i): return statistics.median(r[i] for r in by[t])
base = {t: ("nginx" if t.startswith("nginx") else "gateway") for t in by}
print(f"| target | req/s | ratio to no limit | p50 | p99 | proxy CPU us/req | redis CPU us/req | errors |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for t in by:
    rps = med(t, 0)
    us = statistics.median(r[4] / tck / (r[0] * duration) * 1e6 for r in by[t])
    rus = statistics.median(r[5] / tck / (r[0] * duration) * 1e6 for r in by[t])
    print(f"| {t} | {rps:,.0f} | {rps / med(base[t], 0):.2f} | {med(t, 1):.0f} us | {med(t, 2):.0f} us "
          f"| {us:.1f} | {rus:.1f} | {sum(r[3] for r in by[t])} |")
EOF
