#!/usr/bin/env bash
# Makes self-signed development certificates in conf/tls/ (git ignores *.key and *.crt
# there). Never use them in production: the CA keys sit next to the certificates.
#
#   ca.crt / ca.key                 a development CA ("Gateway Dev CA")
#   server.crt / server.key         localhost, 127.0.0.1, ::1 (ECDSA P-256;
#                                   server.crt holds the leaf only: the CA is the root)
#   server-rsa.crt / server-rsa.key the same names with an RSA 2048 key
#   upstream-ca.crt                 = ca.crt, for `upstreams[].tls.ca`
#   upstream.crt / upstream.key     an upstream's certificate (localhost, 127.0.0.1)
#   clients-ca.crt / clients-ca.key a separate CA for client certificates (mTLS)
#   client.crt / client.key         a client certificate (CN=dev-client) from it
#
# Idempotent: what exists, matches its key and stays valid for 30 more days is kept.
# --force remakes everything. Usage: conf/make-test-certs.sh [--force] [DIR]
set -euo pipefail

force=0
if [[ "${1:-}" == "--force" ]]; then
  force=1
  shift
fi
dir=${1:-"$(cd "$(dirname "$0")" && pwd)/tls"}
days=825  # the longest lifetime Apple platforms accept for a server certificate
mkdir -p "$dir"
cd "$dir"
umask 077  # keys readable by their owner only

# True when NAME.crt and NAME.key exist, match, and are good for another 30 days.
usable() {
  local name=$1
  [[ $force -eq 0 && -s $name.crt && -s $name.key ]] || return 1
  openssl x509 -in "$name.crt" -noout -checkend $((30 * 86400)) >/dev/null 2>&1 || return 1
  [[ "$(openssl x509 -in "$name.crt" -noout -pubkey 2>/dev/null)" == \
     "$(openssl pkey -in "$name.key" -pubout 2>/dev/null)" ]]
}

key() {  # key FILE ec|rsa
  if [[ $2 == rsa ]]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null
  else
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
  fi
}

ca() {  # ca NAME "Common Name"
  usable "$1" && return 0
  key "$1.key" ec
  openssl req -new -x509 -key "$1.key" -out "$1.crt" -days 3650 -sha256 \
    -subj "/O=Gateway Dev/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash"
  force_leaves=1  # a new CA invalidates whatever it signed before
}

leaf() {  # leaf NAME CA "Common Name" ec|rsa serverAuth|clientAuth [SANS]
  local name=$1 issuer=$2 cn=$3 type=$4 usage=$5 sans=${6:-}
  if [[ $force_leaves -eq 0 ]] && usable "$name" &&
     openssl verify -CAfile "$issuer.crt" "$name.crt" >/dev/null 2>&1; then
    return 0
  fi
  key "$name.key" "$type"
  local ext
  ext=$(mktemp)
  {
    echo "basicConstraints=critical,CA:FALSE"
    if [[ $type == rsa ]]; then
      echo "keyUsage=critical,digitalSignature,keyEncipherment"
    else
      echo "keyUsage=critical,digitalSignature"
    fi
    echo "extendedKeyUsage=$usage"
    echo "subjectKeyIdentifier=hash"
    echo "authorityKeyIdentifier=keyid:always"
    # Where a real CA publishes revocations; nothing serves it, but scanners (testssl.sh
    # rates a certificate without one HIGH) then judge the server, not the dev certificate.
    echo "crlDistributionPoints=URI:http://localhost/gateway-dev-ca.crl"
    [[ -n $sans ]] && echo "subjectAltName=$sans"
  } >"$ext"
  openssl req -new -key "$name.key" -subj "/O=Gateway Dev/CN=$cn" |
    openssl x509 -req -CA "$issuer.crt" -CAkey "$issuer.key" -CAcreateserial \
      -days "$days" -sha256 -extfile "$ext" -out "$name.crt" 2>/dev/null
  rm -f "$ext"
}

force_leaves=$force
ca ca "Gateway Dev CA"
server_names="DNS:localhost,IP:127.0.0.1,IP:::1"
leaf server ca localhost ec serverAuth "$server_names"
leaf server-rsa ca localhost rsa serverAuth "$server_names"
leaf upstream ca localhost ec serverAuth "DNS:localhost,IP:127.0.0.1"
cp ca.crt upstream-ca.crt

force_leaves=$force
ca clients-ca "Gateway Dev Clients CA"
leaf client clients-ca dev-client ec clientAuth
rm -f ./*.srl

chmod 644 ./*.crt
echo "TLS development certificates in $dir:" >&2
for f in server server-rsa upstream client; do
  printf '  %-11s %s\n' "$f.crt" "$(openssl x509 -in "$f.crt" -noout -subject -enddate |
    tr '\n' ' ')" >&2
done
