#!/usr/bin/env bash
# Scans a TLS listener of the gateway with testssl.sh (Debian package `testssl.sh`) and
# fails when it reports anything rated HIGH or CRITICAL.
#
# It makes fresh development certificates (conf/make-test-certs.sh) in a temporary
# directory, starts the gateway on them with a listener carrying an ECDSA and an RSA
# certificate and the default security headers, and tells testssl.sh to trust the dev
# CA. The upstream is a closed port: the gateway's own 503 answers are what the HTTP
# header checks see.
#
# Usage: scripts/tls-scan.sh [GATEWAY_BINARY]     (default build/gateway)
#   TESTSSL_ARGS="-p -s -f -P -S -h -U" scripts/tls-scan.sh    a selection of checks (about
#   half the time of the full scan: no client simulation); tests/integration/test_tls_scan.py
#   runs it that way. The scan fails too when testssl.sh could not scan at all (a FATAL
#   finding, or nothing rated).
# Known noise with testssl.sh 3.0 + OpenSSL 3: "Session Resumption: Connect problem"
# (WARN) because its s_client leaves before a TLS 1.3 ticket can arrive; resumption
# itself is covered by tests/gateway/tls_session_test.cc.
set -euo pipefail
cd "$(dirname "$0")/.."
gateway=$(realpath "${1:-build/gateway}")
if ! command -v testssl >/dev/null; then
  echo "testssl.sh is not installed (apt-get install testssl.sh)" >&2
  exit 2
fi

work=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
conf/make-test-certs.sh "$work/tls" 2>/dev/null
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}
port=$(free_port)
admin=$(free_port)
cat >"$work/gateway.yaml" <<EOF
workers: 1
listeners:
  - name: https
    address: 127.0.0.1:$port
    tls:
      certificates:
        - {cert: $work/tls/server.crt, key: $work/tls/server.key}
        - {cert: $work/tls/server-rsa.crt, key: $work/tls/server-rsa.key}
admin: {address: 127.0.0.1:$admin}
logging: {level: warn, access_log: "off"}
upstreams:
  - name: nowhere
    endpoints: [127.0.0.1:9]
default_filters:
  security_headers: {}
routes:
  - name: default
    match: {path_prefix: /}
    upstream: nowhere
EOF
"$gateway" -c "$work/gateway.yaml" >"$work/gateway.log" 2>&1 &
pid=$!
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

# shellcheck disable=SC2086 # TESTSSL_ARGS is a list of options
testssl --quiet --color 0 --warnings off ${TESTSSL_ARGS:-} --add-ca "$work/tls/ca.crt" \
  --jsonfile "$work/testssl.json" "127.0.0.1:$port" >"$work/testssl.txt" 2>&1 || true
python3 - "$work/testssl.json" "$work/testssl.txt" <<'EOF'
import json, sys
try:
    findings = json.load(open(sys.argv[1]))
except (OSError, ValueError) as e:
    print(f"testssl.sh wrote no usable JSON ({e}); its output:")
    print(open(sys.argv[2], errors="replace").read()[-3000:])
    sys.exit(1)
bad = [f for f in findings if f.get("severity") in ("HIGH", "CRITICAL")]
for f in findings:
    if f.get("severity") in ("LOW", "MEDIUM", "HIGH", "CRITICAL", "WARN", "FATAL"):
        print(f"{f['severity']:8} {f['id']}: {f['finding'][:120]}")
fatal = [f for f in findings if f.get("severity") == "FATAL"]
rated = [f for f in findings if f.get("severity") in ("OK", "LOW", "MEDIUM", "HIGH", "CRITICAL")]
if fatal or not rated:
    print("testssl.sh could not scan the listener (a FATAL finding, or nothing rated)")
    sys.exit(1)
print(f"testssl.sh: {len(findings)} findings, {len(bad)} rated HIGH or CRITICAL")
sys.exit(1 if bad else 0)
EOF
