"""Tokens and key sets for the jwt tests, made by an independent implementation (Debian's
python3-jwt with python3-cryptography), and a jwks_uri server whose keys can change while
the gateway runs."""

from __future__ import annotations

import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm, RSAAlgorithm

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
              "ES256", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512"]

ISSUER = "https://issuer.test/"
AUDIENCE = "api"


class KeyPair:
    """One signing key with its public JWK (kid included)."""

    def __init__(self, kind: str, kid: str):
        self.kid = kid
        self.kind = kind
        if kind == "rsa":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.jwk = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        elif kind in ("P-256", "P-384", "P-521"):
            curve = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1}[kind]
            self.private = ec.generate_private_key(curve())
            self.jwk = json.loads(ECAlgorithm.to_jwk(self.private.public_key()))
        elif kind == "Ed25519":
            self.private = ed25519.Ed25519PrivateKey.generate()
            self.jwk = json.loads(OKPAlgorithm.to_jwk(self.private.public_key()))
        elif kind == "oct":
            self.private = bytes(range(64))
            self.jwk = json.loads(HMACAlgorithm.to_jwk(self.private))
        else:
            raise ValueError(kind)
        self.jwk["kid"] = kid


def kind_for(alg: str) -> str:
    if alg[:2] in ("RS", "PS"):
        return "rsa"
    if alg == "EdDSA":
        return "Ed25519"
    if alg.startswith("HS"):
        return "oct"
    return {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}[alg]


class Keys:
    """One key per family; RS* and PS* share the RSA key (a JWK without "alg" serves both)."""

    def __init__(self, prefix: str = "k"):
        self.pairs = {kind: KeyPair(kind, f"{prefix}-{kind}")
                      for kind in ("rsa", "P-256", "P-384", "P-521", "Ed25519", "oct")}

    def pair(self, alg: str) -> KeyPair:
        return self.pairs[kind_for(alg)]

    def jwks(self, *kinds) -> dict:
        chosen = kinds or tuple(self.pairs)
        return {"keys": [self.pairs[k].jwk for k in chosen]}

    def token(self, alg: str = "ES256", claims: dict | None = None, headers: dict | None = None,
              **overrides) -> str:
        return sign(self.pair(alg), alg, claims, headers, **overrides)


def default_claims(**overrides) -> dict:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now - 5, "nbf": now - 5,
              "exp": now + 600}
    for k, v in overrides.items():
        if v is None:
            claims.pop(k, None)
        else:
            claims[k] = v
    return claims


def sign(pair: KeyPair, alg: str, claims: dict | None = None, headers: dict | None = None,
         **overrides) -> str:
    h = {"kid": pair.kid}
    h.update(headers or {})
    body = claims if claims is not None else default_claims(**overrides)
    return jwt.encode(body, pair.private, algorithm=alg, headers=h)


def provider(name: str = "main", **fields) -> dict:
    p = {"name": name, "issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": ALGORITHMS,
         "leeway": "5s"}
    p.update(fields)
    return p


class JwksServer:
    """Serves a JWKS document at /jwks.json (ThreadingHTTPServer on 127.0.0.1; HTTPS with a
    `tls` server context, the URL then naming localhost as the test certificates do). The
    document and the status can change at any time; every request is counted."""

    def __init__(self, document: dict | None = None, port: int = 0,
                 tls: ssl.SSLContext | None = None):
        self.document = document or {"keys": []}
        self.status = 200
        self.requests = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                with server._lock:
                    server.requests += 1
                    status, doc = server.status, server.document
                body = json.dumps(doc).encode() if status == 200 else b"unavailable"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = (f"https://localhost:{self.port}/jwks.json" if tls is not None
                    else f"http://127.0.0.1:{self.port}/jwks.json")
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def set(self, document: dict | None = None, status: int | None = None) -> None:
        with self._lock:
            if document is not None:
                self.document = document
            if status is not None:
                self.status = status

    def count(self) -> int:
        with self._lock:
            return self.requests

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)
