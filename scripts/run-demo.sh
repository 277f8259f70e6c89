#!/usr/bin/env bash
# Starts the demo upstream and runs the gateway in the foreground on conf/gateway.yaml.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
gateway=${1:-build/gateway}
config=${GATEWAY_CONFIG:-conf/gateway.yaml}

python3 tools/demo_upstream.py --port 9000 &
upstream=$!
trap 'kill $upstream 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 50); do
  (exec 3<>/dev/tcp/127.0.0.1/9000) 2>/dev/null && break
  sleep 0.1
done
echo "gateway: http://localhost:8080/  (admin: http://127.0.0.1:9901/health/live)  Ctrl-C to stop" >&2
"$gateway" -c "$config"
