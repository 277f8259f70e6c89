#!/usr/bin/env bash
# A JWT-protected route against the same route without authentication (issue 7), through
# one gateway in front of one fast upstream (nginx answering from memory), on 127.0.0.1.
#
#   bench/jwt_compare.sh                 3 x 10 s per route, interleaved
#   QUICK=1 bench/jwt_compare.sh         1 x 3 s
#
# Settings (environment): DURATION=10 REPEATS=3 CONNECTIONS=50 USERS=1000 ALG=ES256
#   LOAD_CPUS=0 PROXY_CPUS=1 GATEWAY=build/gateway KEEP=1 (keep the temp dir)
#
# Both routes get the same requests: every one carries `Authorization: Bearer <token>`,
# the tokens of USERS distinct users taken round-robin (wrk's Lua), so the bytes parsed
# are the same and only the jwt filter differs. Tokens are ES256, signed by python3-jwt.
# The gateway runs one worker pinned to PROXY_CPUS; wrk and nginx share LOAD_CPUS. As in
# compare.sh the figure of merit is the gateway's CPU time per request (utime+stime from
# /proc/PID/stat): on 2 cores wrk saturates its own core before the gateway does, so
# req/s alone would hide the difference. Ratio = plain CPU/req / jwt CPU/req (the req/s
# ratio the gateway would reach if it were the bottleneck); goal >= 0.9.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
helper=$here/compare_helper.py
export PATH=$PATH:/usr/sbin:/sbin

if [[ ${QUICK:-0} == 1 ]]; then DURATION=${DURATION:-3} REPEATS=${REPEATS:-1}; fi
DURATION=${DURATION:-10}
REPEATS=${REPEATS:-3}
CONNECTIONS=${CONNECTIONS:-50}
USERS=${USERS:-1000}
ALG=${ALG:-ES256}
LOAD_CPUS=${LOAD_CPUS:-0}
PROXY_CPUS=${PROXY_CPUS:-1}
GATEWAY=${GATEWAY:-$root/build/gateway}
KEEP=${KEEP:-0}
CLK_TCK=$(getconf CLK_TCK)

log() { printf '%s\n' "$*" >&2; }
die() { log "jwt_compare.sh: $*"; exit 1; }

for tool in nginx wrk taskset curl; do
  command -v "$tool" >/dev/null || die "missing $tool; install it with: scripts/install-deps.sh bench"
done
/usr/bin/python3 -c 'import jwt, cryptography' 2>/dev/null || die "missing python3-jwt / python3-cryptography"
[[ -x $GATEWAY ]] || die "no gateway binary at $GATEWAY; build it with: make build"

work=$(mktemp -d /tmp/gw-jwt-bench.XXXXXX)
chmod 755 "$work"
mkdir -p "$work/logs"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ $KEEP == 1 ]]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cpu_ticks() {  # utime+stime of PID, in clock ticks
  local stat fields
  stat=$(cat /proc/"$1"/stat)
  read -ra fields <<<"${stat##*) }"
  echo $((fields[11] + fields[12]))
}

wait_status() {  # URL STATUS [HEADER]: polls (10 s at most) until URL answers STATUS
  local i
  for ((i = 0; i < 100; i++)); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 ${3:+-H "$3"} "$1") == "$2" ]] && return 0
    sleep 0.1
  done
  return 1
}

read -r UP_PORT GW_PORT GW_ADMIN_PORT <<<"$(python3 "$helper" free-ports 3)"

# ------------------------------------------------------------------ tokens and keys
/usr/bin/python3 - "$work" "$USERS" "$ALG" <<'EOF'
import json, sys, time
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

work, users, alg = sys.argv[1], int(sys.argv[2]), sys.argv[3]
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
json.dump({"keys": [jwk]}, open(f"{work}/jwks.json", "w"))
now = int(time.time())
tokens = [jwt.encode({"iss": "https://issuer.bench/", "aud": "api", "sub": f"user-{i}",
                      "iat": now, "exp": now + 86400, "scope": "read"},
                     key, algorithm=alg, headers={"kid": "bench"}) for i in range(users)]
with open(f"{work}/tokens.lua", "w") as f:
    f.write("tokens = {\n" + ",\n".join(f'"{t}"' for t in tokens) + "\n}\n")
    f.write("""
local n = #tokens
local i = 0
request = function()
  i = i + 1
  return wrk.format(nil, nil, {["Authorization"] = "Bearer " .. tokens[(i % n) + 1]})
end
""")
with open(f"{work}/token.txt", "w") as f:
    f.write(tokens[0])
EOF

# ------------------------------------------------------------------ upstream and gateway
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
    location / { return 200 "hello, world\n"; }
  }
}
EOF
taskset -c "$LOAD_CPUS" nginx -p "$work" -e "$work/logs/upstream-error.log" -c "$work/upstream.conf" \
  >"$work/logs/upstream.log" 2>&1 &
pids+=($!)
wait_status "http://127.0.0.1:$UP_PORT/small" 200 || die "upstream nginx did not start"

cat >"$work/gateway.yaml" <<EOF
workers: 1
listeners:
  - {name: bench, address: 127.0.0.1:$GW_PORT}
admin: {address: 127.0.0.1:$GW_ADMIN_PORT}
logging: {level: info, access_log: off}
timeouts: {idle: 120s, drain: 2s}
upstreams:
  - name: upstream
    endpoints: [127.0.0.1:$UP_PORT]
    keepalive: {max_idle: 64, idle_timeout: 60s}
jwt_providers:
  - name: bench
    issuer: https://issuer.bench/
    audiences: [api]
    jwks_file: $work/jwks.json
    algorithms: [$ALG]
    forward_claims: {sub: X-User-Id}
routes:
  - name: jwt
    match: {path_prefix: /jwt/}
    upstream: upstream
    strip_prefix: /jwt
    filters:
      jwt: {provider: bench, scopes: [read]}
  - name: plain
    match: {path_prefix: /plain/}
    upstream: upstream
    strip_prefix: /plain
EOF
cp "$GATEWAY" "$work/gateway"
taskset -c "$PROXY_CPUS" "$work/gateway" -c "$work/gateway.yaml" >"$work/logs/gateway.log" 2>&1 &
GW_PID=$!
pids+=("$GW_PID")
token=$(cat "$work/token.txt")
wait_status "http://127.0.0.1:$GW_PORT/plain/small" 200 || die "gateway did not start: $(tail -5 "$work/logs/gateway.log")"
wait_status "http://127.0.0.1:$GW_PORT/jwt/small" 401 || die "the jwt route does not answer 401 without a token"
wait_status "http://127.0.0.1:$GW_PORT/jwt/small" 200 "Authorization: Bearer $token" ||
  die "the jwt route refuses a valid token"

# ------------------------------------------------------------------ runs
run_wrk() {  # PATH SECONDS OUTPUT
  taskset -c "$LOAD_CPUS" timeout $(($2 + 30)) wrk -t1 -c"$CONNECTIONS" -d"$2s" --timeout 5s \
    --latency -s "$work/tokens.lua" "http://127.0.0.1:$GW_PORT$1" >"$3" 2>&1
}

log "jwt_compare.sh: $ALG, $USERS users, wrk -t1 -c$CONNECTIONS -d${DURATION}s x $REPEATS per route;" \
  "gateway on CPU $PROXY_CPUS, wrk + nginx on CPU $LOAD_CPUS"
# Warm-up: connection pools, and every user's token verified once (then cached).
run_wrk /jwt/small 3 /dev/null
run_wrk /plain/small 1 /dev/null

results=$work/results.tsv
: >"$results"
for ((run = 1; run <= REPEATS; run++)); do
  for route in plain jwt; do
    out=$work/logs/wrk-$route-$run.txt
    before=$(cpu_ticks "$GW_PID")
    run_wrk "/$route/small" "$DURATION" "$out"
    after=$(cpu_ticks "$GW_PID")
    if ! parsed=$(python3 "$helper" parse-wrk "$out" 2>/dev/null); then
      log "  $route run $run: wrk failed: $(tail -3 "$out")"
      continue
    fi
    read -r requests seconds rps p50 p99 errors non2xx <<<"$parsed"
    ((errors + non2xx == 0)) || log "  $route run $run: $errors socket errors, $non2xx non-2xx"
    us=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')
    printf '%s\t%s\t%s\t%s\t%s\n' "$route" "$rps" "$us" "$p50" "$p99" >>"$results"
    log "  run $run/$REPEATS $route: ${rps%.*} req/s, gateway ${us} us CPU/req, p50 ${p50}us, p99 ${p99}us"
  done
done

[[ -s $results ]] || die "no run completed"
python3 - "$results" <<'EOF'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
if not {r[0] for r in rows} >= {"plain", "jwt"}:
    sys.exit("jwt_compare.sh: a route has no completed run")
def med(route, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == route)
rps_plain, rps_jwt = med("plain", 1), med("jwt", 1)
cpu_plain, cpu_jwt = med("plain", 2), med("jwt", 2)
print("| route | req/s (median) | gateway CPU/req | p50 | p99 |")
print("| --- | --- | --- | --- | --- |")
for route in ("plain", "jwt"):
    print(f"| {route} | {med(route, 1):,.0f} | {med(route, 2):.2f} us | {med(route, 3):.0f} us | "
          f"{med(route, 4):.0f} us |")
print(f"\nratio jwt/plain: req/s {rps_jwt / rps_plain:.3f}, "
      f"capacity (plain CPU/req / jwt CPU/req) {cpu_plain / cpu_jwt:.3f}")
EOF
