#!/bin/bash
# The image's HEALTHCHECK: GET /health/live on the admin listener, with bash's /dev/tcp
# (the slim image has no curl). Exit 0 on a 200 answer, 1 otherwise.
#   gateway-healthcheck [HOST:PORT] [PATH]   default $GATEWAY_HEALTHCHECK_ADDRESS or 127.0.0.1:9901
set -u
address=${1:-${GATEWAY_HEALTHCHECK_ADDRESS:-127.0.0.1:9901}}
path=${2:-/health/live}
host=${address%:*}
port=${address##*:}
host=${host#[}
host=${host%]}
if ! { exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null; then
  echo "gateway-healthcheck: cannot connect to $address" >&2
  exit 1
fi
printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$address" >&3 || exit 1
IFS= read -r -t 3 status <&3 || { echo "gateway-healthcheck: no answer from $address" >&2; exit 1; }
exec 3<&-
case $status in
  "HTTP/1."?" 200 "*) exit 0 ;;
  *) echo "gateway-healthcheck: $path answered: ${status%$'\r'}" >&2; exit 1 ;;
esac
