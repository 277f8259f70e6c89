"""Chaos soak: many concurrent clients doing hostile, randomised things to a gateway with
the whole filter chain, a plain and a TLS listener and a small bulkhead, while one upstream
endpoint is SIGKILLed and restarted, the other SIGSTOPped now and then, and the
configuration is reloaded (a new upstream pool each time), for a bounded time
(CHAOS_SECONDS, default 20 s of load; CHAOS_CLIENTS threads, default 12). It runs once with
the rate limits in process, then once per Redis mode (a single server, a 3+3 cluster, a
sentinel set-up) whose servers are SIGKILLed, restarted and SIGSTOPped too, for
CHAOS_REDIS_SECONDS each (default 5 s: each request then waits on an asynchronous filter).

What the clients do (each thread draws its actions from its own generator seeded from
CHAOS_SEED, which is printed and put in every failure message so that a run can be
repeated; fixed by default, CHAOS_SEED=random draws one): keep-alive GET/POST/HEAD, pipelined requests, closes mid-head, mid-body, right
after sending and while the response streams (some with RST: SO_LINGER 0), slow readers,
chunked bodies with random chunk sizes, oversized heads/URIs/bodies, garbage bytes,
`Expect: 100-continue`, WebSocket tunnels closed abruptly, and upstream misbehaviour
(reset, truncate, garbage, drop, a delay beyond the route timeout, close-delimited
bodies); about a third of the connections use TLS (without ALPN or with ALPN http/1.1),
and some send the TLS port garbage or half a handshake. HTTP/2 (h2c prior knowledge on
the plain listener, ALPN h2 on the TLS one): up to 8 concurrent streams of the same mix in
waves, uploads with and without content-length, RST_STREAM(CANCEL) mid-response, a pause
in reading, PINGs (a flood must get GOAWAY ENHANCE_YOUR_CALM), malformed requests
(RST_STREAM PROTOCOL_ERROR or 400), abrupt closes, garbage after the preface; a reload's
GOAWAY(NO_ERROR) lets the streams it took finish and the others go to a new connection,
and any other GOAWAY code is a failure.

Invariants, never timings: every complete response parses strictly, has a status the
SPEC allows for what was sent and, where its body is known (size=N, the echo of an
upload), the right bytes; no request hangs (a generous bound); afterwards the gateway is
alive, answers /health/live and a normal request, its connections_active gauge returns
to 0 and its RSS is bounded; then SIGTERM under the same load drains it to exit 0, and
its stderr holds no sanitizer report.

    CHAOS_SEED=123 CHAOS_SECONDS=60 GATEWAY_BIN=build-asan/gateway \
        python3 -m pytest -q -s tests/integration/test_chaos.py
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import signal
import ssl
import socket
import subprocess
import struct
import threading
import time
import traceback
import zlib
from contextlib import contextmanager

import h2.exceptions
import pytest
from hyperframe.frame import PingFrame

import prom
from h2client import ConnectionEnded, H2Client, H2Response, client_connection
from client import Client, ProtocolError, build_request, chunked_body, websocket_frame
from harness import (SOURCE_DIR, admin_get, gateway_config, is_sanitized_build, reserve_port,
                     wait_until)
from jwt_support import KeyPair, provider, sign
from redis_server import RedisCluster, RedisSentinels, RedisServer
from test_tls import TlsUpstream
from upstream import UpstreamProcess, pattern_crc, websocket_echo

# A fixed seed by default, so that ctest (and CI) repeats one known-clean run and a
# failure there is a regression, not a new seed's find; CHAOS_SEED=random explores.
_SEED_TEXT = os.environ.get("CHAOS_SEED", "20261207")
SEED = (random.SystemRandom().randrange(1 << 31) if _SEED_TEXT == "random" else int(_SEED_TEXT))
LOAD_SECONDS = float(os.environ.get("CHAOS_SECONDS", "20"))
CLIENTS = int(os.environ.get("CHAOS_CLIENTS", "12"))
REDIS_SECONDS = float(os.environ.get("CHAOS_REDIS_SECONDS", "5"))
HANG = 20.0  # seconds: no exchange may take longer (route timeout 1 s, header_read and body_read 2 s)

API_KEY = "chaos-key-0123456789"
BODY_LIMIT = 64 * 1024       # default_filters body_limit
SMALL_LIMIT = 100            # the /small route's body_limit
MAX_BODY = 256 * 1024        # limits.max_body_bytes
UPSTREAM_TRIES = {502, 503, 504}  # what a killed, resetting or slow upstream may give

# The gateway's own answers for bytes that are not a request it can take.
REFUSALS = {400, 408, 413, 414, 431, 501, 505}


class Closed(Exception):
    """The gateway closed the connection before a complete response."""


class Failure(AssertionError):
    pass


def chaos_template(cfg, tls_port, certs):
    """The config as a harness template: a plain and a TLS listener."""
    cfg = dict(cfg)
    cfg["listeners"] = [
        {"name": "http", "address": "127.0.0.1:@PORT@", "h2c": True},
        {"name": "https", "address": f"127.0.0.1:{tls_port}",
         "tls": {"certificates": [{"cert": str(certs / "server.crt"),
                                   "key": str(certs / "server.key")}]}}]
    cfg["admin"] = {"address": "127.0.0.1:@ADMIN_PORT@"}
    return json.dumps(cfg, indent=2) + "\n"


class ChaosRedis:
    """The Redis of one mode of the soak: its servers, the store's settings, and one random
    disturbance of a random server (SIGKILL then restart, or SIGSTOP then SIGCONT)."""

    def __init__(self, mode, tmp):
        self.mode = mode
        if mode == "single":
            self.servers = RedisServer(tmp).start()
            self.victims = [self.servers]
            self.settings = {"address": self.servers.address}
        elif mode == "cluster":
            self.servers = RedisCluster(tmp / "cluster").start()
            self.victims = self.servers.nodes
            self.settings = {"cluster": self.servers.addresses[:3]}
        else:
            self.servers = RedisSentinels(tmp / "sentinel").start()
            self.victims = [self.servers.master, self.servers.replica]
            self.settings = {"sentinel": {"master": self.servers.name,
                                          "addresses": self.servers.addresses}}

    def disturb(self, rng, stop):
        victim = rng.choice(self.victims)
        if rng.random() < 0.5:
            victim.kill()
            stop.wait(rng.uniform(0.1, 1.0))
            victim.start()
        else:
            os.kill(victim.proc.pid, signal.SIGSTOP)
            stop.wait(rng.uniform(0.1, 1.0))
            os.kill(victim.proc.pid, signal.SIGCONT)

    def stop(self):
        self.servers.stop()


def chaos_config(tmp, ep_a, ep_b, ws, secure, ca, variant=0, redis=None):
    # the bulkhead small enough that clients queue in it and vanish from it; a reload
    # that changes the endpoints' order and the balancing makes a new pool
    # variant 2 also drops the WebSocket route (tunnels open stay; new upgrades are 400)
    up = {"endpoints": [ep_a, ep_b] if variant == 0 else [ep_b, ep_a],
          "load_balancing": "round_robin" if variant == 0 else "least_request",
          "max_connections": 6 + variant, "max_pending": 6,
          "keepalive": {"max_idle": 8, "idle_timeout": "2s"},
          "health_check": {"path": "/healthz", "interval": "300ms", "timeout": "300ms",
                           "unhealthy_threshold": 2, "healthy_threshold": 1},
          "circuit_breaker": {"consecutive_failures": 25, "open_for": "300ms"},
          "retries": {"attempts": 1, "on": ["connect_failure", 502, 503], "backoff": "30ms"}}
    limited = 20 + 5 * variant
    ws_route = [] if variant == 2 else [
        {"name": "ws", "match": {"path_prefix": "/ws"}, "upstream": "ws", "websocket": True}]
    return gateway_config(
        upstreams={"up": up, "ws": {"endpoints": [ws]},
                   "secure": {"endpoints": [secure], "tls": {"ca": str(ca)}}},
        routes=ws_route + [
            {"name": "key", "match": {"path_prefix": "/key"}, "upstream": "up",
             "filters": {"api_key": {"set": "partners"}}},
            {"name": "jwt", "match": {"path_prefix": "/jwt"}, "upstream": "up",
             "filters": {"jwt": {"provider": "main"}}},
            {"name": "limited", "match": {"path_prefix": "/limited"}, "upstream": "up",
             "filters": {"rate_limit": {"limits": [
                 {"key": "route", "requests": limited, "per": "1s"}]}}},
            {"name": "small", "match": {"path_prefix": "/small"}, "upstream": "up",
             "filters": {"body_limit": {"max_bytes": SMALL_LIMIT}}},
            {"name": "tls", "match": {"path_prefix": "/tls"}, "upstream": "secure", "timeout": "1s"},
            {"name": "default", "match": {"path_prefix": "/"}, "upstream": "up", "timeout": "1s"},
        ],
        workers=2,
        logging={"level": "warn"},
        **({"rate_limit_store": {"type": "redis", "redis": {
            **redis, "timeout": "50ms", "on_error": "allow" if variant != 1 else "local"}}}
           if redis else {}),
        limits={"max_request_header_bytes": "8KiB", "max_uri_bytes": "2KiB",
                "max_body_bytes": MAX_BODY},
        timeouts={"header_read": "2s", "body_read": "2s", "idle": "3s",
                  "upstream_connect": "500ms", "upstream_response": "2s", "drain": "3s"},
        api_keys=[{"name": "partners", "keys_file": str(tmp / "keys.txt")}],
        jwt_providers=[provider(jwks_file=str(tmp / "jwks.json"), algorithms=["HS256"])],
        default_filters={
            "request_id": {},
            "security_headers": {"headers": {"X-Variant": str(variant)}},
            "cors": {"allow_origins": ["https://app.example.com"],
                     "allow_methods": ["GET", "POST", "PUT", "DELETE"],
                     "allow_headers": ["Content-Type", "X-Request-ID"], "max_age": "10m"},
            "body_limit": {"max_bytes": BODY_LIMIT},
            "rate_limit": {"limits": [{"key": "header:X-Tenant", "requests": 100000,
                                       "per": "1s"}]},
        })


# -- one client connection ----------------------------------------------------------------

class Abortable:
    """abort(): closes with RST (SO_LINGER 0) when `rst`, else an ordinary FIN."""

    def abort(self) -> None:
        if self.rst:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.close()


class ChaosClient(Abortable, Client):
    """A Client whose reads tell a close by the gateway (Closed) from bytes that do not
    parse (Failure), and whose writes treat a connection the gateway closed as Closed."""

    def __init__(self, port, rst=False, rcvbuf=None, tls=None):
        self.port = port
        self.timeout = HANG
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(HANG)
        s.connect(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            # an SSL error is the gateway going away mid-record, as a reset is
            self.peer_gone = (ConnectionResetError, ssl.SSLError)
            try:
                s = tls.wrap_socket(s, server_hostname="localhost")
            except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
                s.close()
                raise Closed(f"handshake: {e!r}")
        self.sock = s
        self.buf = bytearray()
        self.eof = False
        self.rst = rst

    def send(self, data) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError) as e:
            raise Closed(f"send: {e!r}")

    def response(self, head=False, allow_interim=False):
        try:
            return self.read_response(head_request=head, allow_interim=allow_interim)
        except ProtocolError as e:
            if self.eof and "connection closed" in str(e):
                raise Closed(str(e))
            raise Failure(f"malformed response: {e}")
        except socket.timeout:
            raise Failure(f"no response within {HANG}s (hang)")



def check_status(r, allowed, what):
    if r.status not in allowed:
        raise Failure(f"{what}: status {r.status} not in {sorted(allowed)}: {r!r}")
    if r.status >= 400 and r.header("Content-Type") == "application/json" and r.body:  # not HEAD
        try:
            doc = json.loads(r.body)
        except ValueError:
            raise Failure(f"{what}: a JSON error body that does not parse: {r!r}")
        # the gateway's own error (an upstream's echo has no error_code): SPEC §3
        if isinstance(doc, dict) and "error_code" in doc and \
                doc.get("request_id") != r.header("X-Request-ID"):
            raise Failure(f"{what}: error body request_id differs from the header: {r!r}")


def check_pattern(r, size, what):
    if r.status == 200 and (r.body_len != size or r.body_crc != pattern_crc(size)):
        raise Failure(f"{what}: body of {r.body_len} bytes (crc {r.body_crc}), expected "
                      f"{size} of the pattern")


# -- HTTP/2 ---------------------------------------------------------------------------------

# RFC 9113 §7 error codes
H2_NO_ERROR, H2_PROTOCOL_ERROR, H2_INTERNAL_ERROR, H2_REFUSED_STREAM, H2_CANCEL, \
    H2_ENHANCE_YOUR_CALM = 0x0, 0x1, 0x2, 0x7, 0x8, 0xB
# a complete HTTP/2 response never carries these (RFC 9113 §8.2.2)
H2_CONNECTION_FIELDS = ("connection", "keep-alive", "proxy-connection", "transfer-encoding",
                        "upgrade")
# requests RFC 9113 §8.2 refuses: RST_STREAM(PROTOCOL_ERROR), or a 400 before the upstream
H2_MALFORMED = [("X-Upper", "1"), ("connection", "keep-alive"), ("keep-alive", "5"),
                ("proxy-connection", "x"), ("transfer-encoding", "chunked"),
                ("upgrade", "websocket"), ("te", "gzip"), ("host", "other.test"),
                "late-pseudo", "length-mismatch"]


class ChaosH2(Abortable, H2Client):
    """An H2Client for the soak: every wait is bounded by HANG (TimeoutError: a hang), a
    write to a connection the gateway closed marks it closed (the next wait raises
    ConnectionEnded), and bytes python-h2 cannot take are kept in `error`, not hidden as a
    close."""

    def __init__(self, port, tls=None, rst=False):
        raw = socket.create_connection(("127.0.0.1", port), timeout=HANG)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            try:
                raw = tls.wrap_socket(raw, server_hostname="localhost")
            except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
                raw.close()
                raise Closed(f"handshake: {e!r}")
            if raw.selected_alpn_protocol() != "h2":
                raw.close()
                raise Failure(f"ALPN h2,http/1.1 on the TLS listener chose "
                              f"{raw.selected_alpn_protocol()!r}, not h2")
        self.sock = raw
        self.timeout = HANG
        self.auto_window = True
        self.rst = rst
        self.error = None
        self.conn = client_connection()
        self.conn.initiate_connection()
        # A browser-sized connection window: python-h2 never hands back the bytes of DATA
        # frames that arrive for a stream it has reset, and 64 KiB leak away quickly here.
        self.conn.increment_flow_control_window(1 << 26)
        self.responses = {}
        self._pending = bytearray()
        self.goaway = None
        self.closed = False
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data and not self.closed:
            self.send_raw(data)

    def send_raw(self, data: bytes):
        try:
            self.sock.settimeout(HANG)
            self.sock.sendall(data)
        except socket.timeout:
            raise TimeoutError(f"a write blocked for {HANG}s")
        except OSError:
            self.closed = True

    def linger(self, seconds: float):
        """Reads for a while (or until a GOAWAY)."""
        try:
            self.pump(lambda: self.goaway is not None, seconds)
        except TimeoutError:
            pass



# -- actions ------------------------------------------------------------------------------

class Actions:
    def __init__(self, port, rng: random.Random, token: str, tls_port=None, tls=None,
                 admin_port=None, tls_h1=None, tls_h2=None):
        self.port = port
        self.admin_port = admin_port
        self.rng = rng
        self.token = token
        self.tls_port = tls_port
        self.tls = tls        # no ALPN: HTTP/1.1
        self.tls_h1 = tls_h1  # ALPN http/1.1 only
        self.tls_h2 = tls_h2  # ALPN h2 and http/1.1: the gateway chooses h2
        self.closed: list[str] = []  # exchanges the gateway closed without a response

    @contextmanager
    def exchange(self, what: str, **kw):
        """A connection for one action, aborted at the end. A response cut short (by a
        killed upstream endpoint) is recorded under `what`, not failed."""
        c = self.connect(**kw)
        try:
            yield c
        except Closed as e:
            self.closed.append(f"{what}: {e}")
        finally:
            c.abort()

    def connect(self, **kw):
        rst = self.rng.random() < 0.5
        if self.tls is not None and self.rng.random() < 0.3:
            tls = self.tls_h1 if self.tls_h1 is not None and self.rng.random() < 0.5 else self.tls
            return ChaosClient(self.tls_port, rst=rst, tls=tls, **kw)
        return ChaosClient(self.port, rst=rst, **kw)

    def tls_garbage(self):
        """Not TLS, half a handshake, or a handshake cut by a reset, on the TLS listener."""
        if self.tls is None:
            return
        rng = self.rng
        c = ChaosClient(self.tls_port, rst=rng.random() < 0.5)
        try:
            kind = rng.randrange(3)
            if kind == 0:
                c.send(build_request("GET", "/plain-http-on-tls"))
            elif kind == 1:
                c.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(rng.randint(0, 600)))
            else:  # a real ClientHello, whole or in part, then nothing more
                incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
                obj = self.tls.wrap_bio(incoming, outgoing, server_hostname="localhost")
                try:
                    obj.do_handshake()
                except ssl.SSLWantReadError:
                    pass
                hello = outgoing.read()
                c.send(hello[:rng.randint(1, len(hello))])
            if rng.random() < 0.5:
                c.sock.settimeout(2)
                try:
                    c.sock.recv(65536)
                except (socket.timeout, OSError):
                    pass
        except Closed:
            pass
        finally:
            c.abort()

    def target(self):
        """A GET target on an upstream route and the statuses it may get."""
        rng = self.rng
        k = rng.randrange(10)
        if k < 4:
            size = rng.choice([0, 1, 100, 5000, 70000])
            chunked = rng.random() < 0.5
            return (f"/d?size={size}" + ("&chunked=1&chunk=%d" % rng.randint(1, 9000) if chunked else ""),
                    {200} | UPSTREAM_TRIES, size)
        if k == 4:
            st = rng.choice([201, 204, 304, 404, 418, 500, 503])
            return f"/s?status={st}", {st} | UPSTREAM_TRIES, None
        if k == 5:
            return "/limited/x", {200, 429} | UPSTREAM_TRIES, None
        if k == 6:
            good = rng.random() < 0.7
            return ("/key/x", {200} | UPSTREAM_TRIES if good else {401},
                    ("X-API-Key", API_KEY if good else "nope"))
        if k == 7:
            good = rng.random() < 0.7
            return ("/jwt/x", {200} | UPSTREAM_TRIES if good else {401},
                    ("Authorization", f"Bearer {self.token if good else 'x.y.z'}"))
        if k == 8:
            if rng.random() < 0.5:  # an upstream over TLS
                size = rng.choice([0, 100, 70000])
                return f"/tls/d?size={size}", {200} | UPSTREAM_TRIES, size
            return "/d?close=1&size=3000", {200} | UPSTREAM_TRIES, 3000
        interim = "?interim=1" if rng.random() < 0.3 else ""  # 100 and 103 before the 200
        return f"/e{rng.randrange(1000)}{interim}", {200} | UPSTREAM_TRIES, None

    def request_parts(self):
        target, allowed, extra = self.target()
        headers = [("X-Tenant", str(self.rng.randrange(5)))]
        size = None
        if isinstance(extra, tuple):
            headers.append(extra)
        elif isinstance(extra, int):
            size = extra
        if self.rng.random() < 0.2:
            headers.append(("Origin", "https://app.example.com"))
        return target, headers, allowed, size

    def keepalive(self):
        c = self.connect()
        last = "keepalive"
        try:
            version = "HTTP/1.0" if self.rng.random() < 0.1 else "HTTP/1.1"
            if version == "HTTP/1.0":
                c.rst = False
            for _ in range(self.rng.randint(1, 6)):
                target, headers, allowed, size = self.request_parts()
                method = self.rng.choice(["GET", "GET", "HEAD", "POST", "DELETE"])
                if version == "HTTP/1.0" and self.rng.random() < 0.5:
                    headers.append(("Connection", "keep-alive"))
                body = b""
                if method == "POST":
                    body = self.rng.randbytes(self.rng.choice([0, 10, 3000, 40000]))
                    if size is not None:
                        target += "&sink=1"
                c.request(method, target, headers=headers, body=body, read=False, version=version)
                last = f"keepalive {version} {method} {target}"
                r = c.response(head=method == "HEAD")
                check_status(r, allowed, f"{method} {target}")
                if method == "GET" and size is not None:
                    check_pattern(r, size, f"GET {target}")
                if r.header("Connection", "").lower() == "close" or r.close_delimited or (
                        version == "HTTP/1.0" and r.header("Connection", "").lower() != "keep-alive"):
                    break
        except Closed as e:
            # only a killed upstream endpoint cuts a response short; the request was fine
            self.closed.append(f"{last}: {e}")
        finally:
            c.abort()

    def pipelined(self):
        with self.exchange("pipelined") as c:
            burst = self.rng.random() < 0.2  # more than the input block holds
            n = self.rng.randint(30, 60) if burst else self.rng.randint(2, 6)
            reqs = []
            data = b""
            for k in range(n):
                if burst:  # small answers: nothing is read until everything is sent
                    target, allowed, size = f"/e{k}?status=204", {204} | UPSTREAM_TRIES, None
                    headers = [("X-Pad", "p" * self.rng.randint(500, 1500))]
                else:
                    target, headers, allowed, size = self.request_parts()
                method = self.rng.choice(["GET", "HEAD"])
                reqs.append((method, target, allowed, size))
                data += build_request(method, target, headers)
            c.send(data)
            for method, target, allowed, size in reqs:
                r = c.response(head=method == "HEAD")
                check_status(r, allowed, f"pipelined {method} {target}")
                if method == "GET" and size is not None:
                    check_pattern(r, size, f"pipelined GET {target}")
                if r.header("Connection", "").lower() == "close":
                    break

    def close_early(self):
        """Closes mid-head, mid-body, right after sending, or while the response streams."""
        rng = self.rng
        c = self.connect()
        try:
            kind = rng.randrange(7)
            if kind == 5:  # while retried (503: backoff) or queued in the bulkhead, or waiting
                target = rng.choice(["/s?status=503", "/s?delay=300", "/limited/x?delay=100",
                                     "/key/x?delay=50", "/m?reset=1"])
                c.send(build_request(rng.choice(["GET", "DELETE"]), target, [("X-API-Key", API_KEY)]))
                time.sleep(rng.random() * 0.15)
            elif kind == 6:  # half-close: the request still gets its answer
                target, headers, allowed, size = self.request_parts()
                body = b""
                if rng.random() < 0.5:  # a body, which may wait in the bulkhead queue
                    body = rng.randbytes(rng.randint(1, 20000))
                    target, allowed, size = "/u?sink=1", {200} | UPSTREAM_TRIES, None
                c.send(build_request("POST" if body else "GET", target, headers, body))
                if not isinstance(c.sock, ssl.SSLSocket):  # Python's TLS cannot half-close
                    c.sock.shutdown(socket.SHUT_WR)
                r = c.response()
                check_status(r, allowed, f"half-closed request {target}")
                if body and r.status == 200 and r.json()["body_len"] != len(body):
                    raise Failure(f"half-closed upload of {len(body)} bytes arrived as "
                                  f"{r.json()['body_len']}")
                if size is not None:
                    check_pattern(r, size, f"half-closed GET {target}")
            elif kind == 0:  # mid-head
                data = build_request("GET", "/x", [("X-Pad", "a" * rng.randint(0, 2000))])
                c.send(data[:rng.randint(1, len(data) - 1)])
            elif kind == 1:  # mid-body
                body = rng.randbytes(rng.randint(2, 50000))
                data = build_request("POST", rng.choice(["/u?sink=1", "/small", "/key/x"]),
                                     [("X-API-Key", API_KEY)], body)
                c.send(data[:len(data) - rng.randint(1, len(body))])
            elif kind == 2:  # mid chunked body
                body = rng.randbytes(rng.randint(10, 30000))
                enc = chunked_body(body, [rng.randint(1, 5000) for _ in range(4)])
                data = build_request("POST", "/u?sink=1", [("Transfer-Encoding", "chunked")]) + enc
                c.send(data[:rng.randint(1, len(data) - 1)])
            elif kind == 3:  # right after sending
                target, headers, _, _ = self.request_parts()
                c.send(build_request("GET", target, headers))
            else:  # while the response streams
                size = rng.choice([200000, 2000000, 8000000])
                c.send(build_request("GET", f"/d?size={size}" + ("&chunked=1" if rng.random() < .5 else "")))
                if rng.random() < 0.7:
                    c.sock.settimeout(HANG)
                    want = rng.randint(0, 300000)
                    got = 0
                    while got < want:
                        d = c.sock.recv(65536)
                        if not d:
                            break
                        got += len(d)
            if rng.random() < 0.3:
                time.sleep(rng.random() * 0.05)
        except (Closed, ConnectionResetError):
            pass
        finally:
            c.abort()

    def oddities(self):
        """Requests a proxy sees rarely: HTTP/1.0 without Host, absolute-form, chunk
        extensions and trailers, OPTIONS *, CONNECT, lower-case and repeated headers."""
        rng = self.rng
        c = self.connect()
        try:
            kind = rng.randrange(6)
            head = False
            if kind == 0:
                data, allowed = b"GET /old HTTP/1.0\r\n\r\n", {200} | UPSTREAM_TRIES
            elif kind == 1:
                data = b"GET http://example.test/abs?size=10 HTTP/1.1\r\nHost: example.test\r\n\r\n"
                allowed = {200, 400} | UPSTREAM_TRIES
            elif kind == 2:
                data = (b"POST /u?sink=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5;name=value\r\nhello\r\n3;a\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n")
                allowed = {200} | UPSTREAM_TRIES
            elif kind == 3:
                data, allowed = b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", REFUSALS | {200, 204, 404, 405} | UPSTREAM_TRIES
            elif kind == 4:
                data, allowed = b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n", REFUSALS | {404, 405}
            else:
                head = rng.random() < 0.5
                data = (f"{'HEAD' if head else 'GET'} /d?size=3000&chunked=1 HTTP/1.1\r\nhost: x\r\n"
                        "x-a: 1\r\nX-A: 2\r\naccept: */*\r\n\r\n").encode()
                allowed = {200} | UPSTREAM_TRIES
            c.send(data)
            r = c.response(head=head)
            check_status(r, allowed, f"oddity {data[:60]!r}")
        except Closed:
            pass
        finally:
            c.abort()

    def admin_abuse(self):
        """The admin listener gets pipelined scrapes, garbage, and clients that vanish while
        /metrics streams."""
        rng = self.rng
        c = ChaosClient(self.admin_port, rst=rng.random() < 0.5)
        try:
            kind = rng.randrange(3)
            if kind == 0:
                paths = [rng.choice(["/metrics", "/health", "/health/live", "/health/ready",
                                     "/nope"]) for _ in range(rng.randint(1, 5))]
                c.send(b"".join(build_request("GET", p) for p in paths))
                for p in paths:
                    r = c.response()
                    check_status(r, {404} if p == "/nope" else {200, 503}, f"admin {p}")
            elif kind == 1:
                c.send(rng.randbytes(rng.randint(1, 500)) + b"\r\n\r\n")
            else:
                c.send(build_request("GET", "/metrics"))
                c.sock.recv(rng.randint(1, 2000))
        except (Closed, ConnectionResetError):
            pass
        finally:
            c.abort()

    def stall(self):
        """Sends a head and part of its body, then nothing for longer than body_read: the
        gateway must end the exchange by itself."""
        rng = self.rng
        c = self.connect()
        try:
            n = rng.randint(10, 5000)
            data = build_request("POST", rng.choice(["/u?sink=1", "/small", "/limited/x"]),
                                 [("Content-Length", str(n))])
            c.send(data + rng.randbytes(rng.randint(0, n - 1)))
            c.sock.settimeout(HANG)
            r = c.response()
            check_status(r, {413, 429, 408} | UPSTREAM_TRIES, "stalled body")
        except Closed:
            pass
        finally:
            c.abort()

    def slow_reader(self):
        rng = self.rng
        c = self.connect(rcvbuf=4096)
        try:
            size = rng.choice([500000, 4000000])
            c.send(build_request("GET", f"/d?size={size}"))
            end = time.monotonic() + rng.uniform(0.2, 1.5)
            while time.monotonic() < end:
                d = c.sock.recv(rng.choice([1, 100, 2048]))
                if not d:
                    break
                time.sleep(0.005)
        except (Closed, ConnectionResetError):
            pass
        finally:
            c.abort()

    def upload(self):
        """POST with Content-Length or chunked (random chunk sizes); the echo checks the
        bytes that reached the upstream."""
        rng = self.rng
        with self.exchange("upload") as c:
            route, limit = rng.choice([("/u", BODY_LIMIT), ("/small", SMALL_LIMIT)])
            n = rng.choice([0, 1, 50, 99, 100, 101, 5000, BODY_LIMIT - 1, BODY_LIMIT, BODY_LIMIT + 1, 100000])
            body = rng.randbytes(n)
            chunked = rng.random() < 0.5
            if chunked:
                sizes = [rng.randint(1, 20000) for _ in range(rng.randint(1, 6))]
                data = build_request("POST", f"{route}?sink=1", [("Transfer-Encoding", "chunked")],
                                     chunked_body(body, sizes))
            else:
                data = build_request("POST", f"{route}?sink=1", body=body)
            # a chunked body passes the limit only once it is streamed: an upstream that
            # is down, full or slow may be answered for first
            allowed = ({413} | (UPSTREAM_TRIES if chunked else set()) if n > limit
                       else {200} | UPSTREAM_TRIES)
            try:
                c.send(data)
            except Closed:
                pass  # a 413 answered before the body and the connection closed: read it
            r = c.response()
            check_status(r, allowed, f"POST {route} {n} bytes chunked={chunked}")
            if r.status == 200:
                doc = r.json()
                if doc["body_len"] != n or doc["body_crc"] != zlib.crc32(body):
                    doc.pop("body", None)
                    raise Failure(f"upload of {n} bytes chunked={chunked} reached the upstream "
                                  f"as {doc['body_len']}: {doc}")

    def oversized(self):
        rng = self.rng
        with self.exchange("oversized") as c:
            kind = rng.randrange(3)
            if kind == 0:
                data, allowed = build_request("GET", "/x", [("X-Big", "b" * 10000)]), {431}
            elif kind == 1:
                data, allowed = build_request("GET", "/x?" + "q" * 3000), {414}
            else:
                data = build_request("POST", "/u", [("Content-Length", str(MAX_BODY + rng.randint(1, 10**6)))])
                allowed = {413}
            try:
                c.send(data)
            except Closed:
                pass
            r = c.response()
            check_status(r, allowed, f"oversized kind {kind}")

    def garbage(self):
        rng = self.rng
        with self.exchange("garbage") as c:
            prefix = rng.choice([b"", b"GET ", b"POST /x HTTP/1.1\r\n", b"\x16\x03\x01"])
            data = prefix + rng.randbytes(rng.randint(1, 3000)) + b"\r\n\r\n"
            c.send(data)
            if rng.random() < 0.5:
                r = c.response()
                check_status(r, REFUSALS | {404, 405}, f"garbage {data[:40]!r}")

    def expect_continue(self):
        rng = self.rng
        with self.exchange("expect_continue") as c:
            n = rng.choice([10, 5000, BODY_LIMIT + 10, MAX_BODY + 10])
            c.send(build_request("POST", "/u?sink=1", [("Expect", "100-continue"),
                                                      ("Content-Length", str(n))]))
            r = c.response(allow_interim=True)
            if r.status == 100:
                if rng.random() < 0.2:
                    return  # vanish after the 100
                c.send(rng.randbytes(n))
                r = c.response()
            check_status(r, {413} if n > BODY_LIMIT else {200} | UPSTREAM_TRIES,
                         f"100-continue {n}")

    def preflight(self):
        with self.exchange("preflight") as c:
            origin = self.rng.choice(["https://app.example.com", "https://evil.test"])
            r = c.request("OPTIONS", "/e", headers=[("Origin", origin),
                                                   ("Access-Control-Request-Method", "PUT")],
                          read=False)
            r = c.response()
            check_status(r, {204} if origin.startswith("https://app") else {403}, "preflight")

    def misbehaving_upstream(self):
        rng = self.rng
        c = self.connect()
        kind = "?"
        try:
            kind = rng.choice(["reset=1", "garbage=1", "drop=1", "delay=1500",
                               "truncate=%d&size=50000" % rng.randint(0, 49999),
                               "truncate=%d&size=50000&chunked=1" % rng.randint(0, 49999)])
            method = rng.choice(["GET", "POST"])
            kind = rng.choice(["/m", "/tls/m"]) + "?" + kind
            c.request(method, kind, body=b"x" * rng.randint(0, 10) if method == "POST" else b"",
                      read=False)
            r = c.response()
            check_status(r, UPSTREAM_TRIES, f"{method} {kind}")
        except Closed as e:
            if "truncate" not in kind:
                raise Failure(f"{kind}: closed without an answer: {e}")
            self.closed.append(f"misbehaving_upstream: {kind} {e}")
        finally:
            c.abort()

    def websocket(self):
        rng = self.rng
        c = self.connect()
        try:
            key = base64.b64encode(rng.randbytes(16)).decode()
            refused = rng.random() < 0.15  # the upstream answers the handshake with a 403
            path = "/ws/chat?status=403" if refused else "/ws/chat"
            head = (f"GET {path} HTTP/1.1\r\nHost: example.test\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    f"Sec-WebSocket-Version: 13\r\n\r\n").encode()
            first = websocket_frame(rng.randbytes(rng.randint(0, 300))) if rng.random() < .3 else b""
            c.send(head + first)
            if rng.random() < 0.2:
                return  # vanish before the 101
            r = c.response(allow_interim=True)
            # 400: a reload took the WebSocket route away (variant 2)
            check_status(r, {403, 400} if refused else {101, 400} | UPSTREAM_TRIES,
                         "websocket handshake")
            if r.status != 101:
                return
            sent = len(first)
            for _ in range(rng.randint(0, 5)):
                f = websocket_frame(rng.randbytes(rng.randint(0, 70000)))
                c.send(f)
                sent += len(f)
            if rng.random() < 0.5:
                # read part of the echo, then vanish
                want = rng.randint(0, sent)
                while len(c.buf) < want:
                    if not c.fill():
                        break
        except (Closed, ConnectionResetError):
            pass
        finally:
            c.abort()

    # -- HTTP/2 ---------------------------------------------------------------------------

    def h2_spec(self):
        """One stream of an HTTP/2 action: what to send and what may come back."""
        rng = self.rng
        k = rng.random()
        if k < 0.15:  # an upload to the echo, with or without content-length
            route, limit = rng.choice([("/u", BODY_LIMIT), ("/small", SMALL_LIMIT)])
            n = rng.choice([0, 1, 50, 100, 101, 5000, BODY_LIMIT, BODY_LIMIT + 1, 100000])
            length = rng.random() < 0.5
            # without a length the limit is found as the body streams: an upstream that is
            # down, full or slow may be answered for first
            allowed = ({413} | (set() if length else UPSTREAM_TRIES) if n > limit
                       else {200} | UPSTREAM_TRIES)
            return {"kind": "upload", "method": "POST", "path": f"{route}?sink=1",
                    "headers": [("content-length", str(n))] if length else [],
                    "body": rng.randbytes(n), "allowed": allowed, "size": None}
        if k < 0.25:  # a download this client resets mid-response (RST_STREAM CANCEL)
            size = rng.choice([70000, 300000, 2000000])
            chunked = "&chunked=1" if rng.random() < 0.5 else ""
            return {"kind": "cancel", "method": "GET", "path": f"/d?size={size}{chunked}",
                    "headers": [], "body": b"", "allowed": {200} | UPSTREAM_TRIES, "size": size,
                    "after": rng.randint(0, size)}
        if k < 0.33:  # refused by RFC 9113's checks: nothing reaches the upstream
            bad = rng.choice(H2_MALFORMED)
            spec = {"kind": "malformed", "method": "GET", "path": "/bad", "headers": [],
                    "body": b"", "allowed": {400}, "size": None, "bad": bad}
            if bad == "length-mismatch":
                declared, sent = rng.choice([(10, 5), (3, 8)])
                spec.update(method="POST", path="/u?sink=1", body=b"x" * sent,
                            headers=[("content-length", str(declared))])
            elif bad != "late-pseudo":
                spec["headers"] = [bad]
            return spec
        target, headers, allowed, size = self.request_parts()
        method = rng.choice(["GET", "GET", "GET", "HEAD", "DELETE"])
        return {"kind": "request", "method": method, "path": target,
                "headers": [(n.lower(), v) for n, v in headers], "body": b"",
                "allowed": allowed, "size": size if method == "GET" else None}

    def http2(self):
        """HTTP/2 on one connection (h2c prior knowledge on the plain listener, or TLS with
        ALPN h2): up to 8 concurrent streams from target()'s mix, uploads with and without
        content-length, downloads reset mid-response (RST_STREAM CANCEL), malformed requests
        (RST_STREAM PROTOCOL_ERROR or 400), a pause in reading (flow control), PINGs (a
        flood: GOAWAY ENHANCE_YOUR_CALM), an abrupt close, or garbage after the preface.
        A GOAWAY(NO_ERROR) (a reload sends one to every HTTP/2 connection) ends the
        connection once the streams it took have finished: the others go to a new one."""
        rng = self.rng
        tls = self.tls_h2 is not None and rng.random() < 0.4
        if rng.random() < 0.04:
            return self.h2_garbage(tls)
        specs = [self.h2_spec() for _ in range(rng.randint(1, 8))]
        for _ in range(3):
            specs = self.h2_connection(specs, tls)
            if not specs:
                return
        self.closed.append(f"http2: {len(specs)} streams not taken by three connections in a row")

    def h2_garbage(self, tls):
        """Garbage after the preface (and SETTINGS)."""
        rng = self.rng
        try:
            c = ChaosH2(self.tls_port if tls else self.port, self.tls_h2 if tls else None,
                        rst=rng.random() < 0.5)
        except Closed:
            return
        try:
            c.send_raw(rng.randbytes(rng.randint(1, 3000)))
            # the gateway ends it (a GOAWAY, or header_read for bytes that are not yet a
            # frame): never a hang, whatever GOAWAY code
            c.read_until_closed(HANG)
        finally:
            c.abort()

    def h2_begin(self, c, spec, scheme):
        if spec.get("bad") == "late-pseudo":  # a pseudo-header after a regular field
            sid = c.conn.get_next_available_stream_id()
            c.responses[sid] = H2Response(sid)
            c.conn.send_headers(sid, [(":method", "GET"), (":scheme", scheme), ("accept", "*/*"),
                                      (":path", "/late"), (":authority", "example.test")],
                                end_stream=True)
            c.flush()
            return sid
        return c.start(spec["method"], spec["path"], spec["headers"], spec["body"], scheme=scheme)

    def h2_connection(self, specs, tls):
        """Runs `specs` on one connection; returns those the gateway did not take (a GOAWAY
        with a lower last stream id came first), to go to a new connection."""
        rng = self.rng
        try:
            c = ChaosH2(self.tls_port if tls else self.port, self.tls_h2 if tls else None,
                        rst=rng.random() < 0.5)
        except Closed as e:
            self.closed.append(f"http2: {e}")
            return []
        scheme = "https" if tls else "http"
        zero_windows_before = self.h2_zero_windows()
        started: dict[int, dict] = {}
        ours: set[int] = set()      # the streams this client reset
        flood = False               # a PING flood sent: ENHANCE_YOUR_CALM is the answer
        abrupt = rng.random() < 0.1
        # the streams go in up to three waves, each once the one before has finished, so
        # that a reload's GOAWAY may come between them
        waves = set(rng.sample(range(1, len(specs)), min(len(specs) - 1, rng.randint(0, 2))))
        taken = 0  # specs[taken:] not started yet
        step = "start"
        log: list[str] = []  # what this client did, for a failure's message
        try:
            try:
                for i, spec in enumerate(specs):
                    if i in waves:
                        step = "wave"
                        c.pump(lambda: c.goaway is not None or all(c.done(s) for s in started))
                        if rng.random() < 0.5:  # and a moment more (under timeouts.idle)
                            c.linger(rng.uniform(0.05, 0.5))
                    if c.closed or c.goaway is not None:
                        break
                    started[self.h2_begin(c, spec, scheme)] = spec
                    taken = i + 1
                log.append(f"started {list(started)}")
                if rng.random() < 0.12:
                    step = "pings"
                    if rng.random() < 0.3:  # over the 50 per second of SPEC §7
                        flood = True
                        n = rng.randint(100, 400)
                        c.send_raw(PingFrame(0, opaque_data=rng.randbytes(8)).serialize() * n)
                    else:
                        n = rng.randint(1, 20)
                        for _ in range(n):
                            c.conn.ping(rng.randbytes(8))
                        c.flush()
                    log.append(f"{n} PINGs")
                if rng.random() < 0.2:  # nothing read: the windows close, the gateway waits
                    pause = rng.uniform(0.05, 1.0)
                    log.append(f"no reading for {pause:.2f}s")
                    time.sleep(pause)
                for sid, spec in started.items():
                    if spec["kind"] != "cancel" or rng.random() < 0.2:
                        continue
                    step = f"cancel {sid}"
                    r = c.responses[sid]
                    c.pump(lambda: c.done(sid) or len(r.body) >= spec["after"])
                    if not c.done(sid) and c.goaway is None and not c.closed:
                        c.conn.reset_stream(sid, H2_CANCEL)
                        c.flush()
                        ours.add(sid)
                        log.append(f"RST_STREAM(CANCEL) {sid} after {len(r.body)} bytes")
                if abrupt and started:  # close while something streams
                    step = "abrupt"
                    c.pump(lambda: any(r.body or c.done(s) for s, r in c.responses.items()))
                    log.append("closed")
                    return []
                step = "wait"
                waiting = [s for s in started if s not in ours]
                c.pump(lambda: all(c.done(s) or (c.goaway is not None and s > c.goaway.last_stream_id)
                                   for s in waiting))
                if flood:
                    step = "after the flood"
                    c.read_until_closed(HANG)  # a flood must end the connection
            except ConnectionEnded:
                pass
        except TimeoutError as e:
            raise Failure(f"http2 {scheme} ({step}): {e} within {HANG}s (hang): "
                          f"{self.h2_streams(c, started, log)}")
        finally:
            c.abort()
        if c.error:
            raise Failure(f"http2 {scheme}: the gateway sent what python-h2 refuses: {c.error}; "
                          f"{self.h2_streams(c, started, log)}")
        left = specs[taken:] if not (flood or abrupt) else []
        ended = c.goaway
        if (ended is not None and ended.error_code == H2_ENHANCE_YOUR_CALM and not flood
                and self.h2_zero_windows() > zero_windows_before):
            # The client did not read for timeouts.idle while a response waited (a thread of
            # this process starved under load): what the zero-window defence is for, and a
            # matter of timing, which the soak does not assert (test_http2.py does).
            self.closed.append(f"http2 {scheme}: zero-window GOAWAY after a stalled read")
            return []
        if ended is not None and ended.error_code != H2_NO_ERROR and not (
                flood and ended.error_code == H2_ENHANCE_YOUR_CALM):
            raise Failure(f"http2 {scheme}: GOAWAY error {ended.error_code} (flood sent: {flood}); "
                          f"{self.h2_errors()}; {self.h2_streams(c, started, log)}")
        for sid, spec in started.items():
            r = c.responses[sid]
            what = f"http2 {scheme} stream {sid} {spec['method']} {spec['path']} {spec['headers']}"[:300]
            if sid in ours:
                continue
            if r.ended:
                self.h2_check(r, spec, what)
            elif r.reset_code is not None:
                if spec["kind"] == "malformed":
                    if r.reset_code != H2_PROTOCOL_ERROR and r.status != 400:
                        raise Failure(f"{what}: reset with {r.reset_code}, not PROTOCOL_ERROR: {r!r}")
                elif r.reset_code in (H2_INTERNAL_ERROR, H2_CANCEL, H2_NO_ERROR):
                    # an upstream endpoint killed or misbehaving mid-response
                    self.closed.append(f"http2: {what}: reset {r.reset_code} {r!r}"[:300])
                else:
                    raise Failure(f"{what}: reset with {r.reset_code}: {r!r}")
            elif flood or abrupt:
                pass  # ended by the flood's GOAWAY, or by this client
            elif ended is not None and sid > ended.last_stream_id:
                left.append(spec)  # not taken: a new connection gets it
            elif ended is not None:
                raise Failure(f"{what}: GOAWAY(NO_ERROR, last stream {ended.last_stream_id}) "
                              f"and the connection closed before this stream finished: {r!r}")
            else:
                self.closed.append(f"http2: {what}: connection closed without GOAWAY: {r!r}"[:300])
        if left:
            self.closed.append(f"http2: GOAWAY {ended}: {len(left)} streams to a new connection")
        return left

    @staticmethod
    def h2_streams(c, started, log):
        return ("; ".join(f"{sid} {spec['method']} {spec['path']} {spec['headers']}"[:120] +
                          f": {c.responses[sid]!r}"[:100] for sid, spec in started.items())
                + f"; {c.goaway}; client: {', '.join(log)}")

    def h2_error_lines(self) -> list[str]:
        """The gateway's HTTP/2 defence counters (which one fired), as exposition lines."""
        try:
            _, text = admin_get(type("Gw", (), {"admin_port": self.admin_port}), "/metrics")
        except OSError as e:
            return [f"/metrics: {e!r}"]
        return [line for line in text.decode().splitlines()
                if line.startswith("gateway_http2_protocol_errors_total")]

    def h2_errors(self) -> str:
        return " ".join(self.h2_error_lines())

    def h2_zero_windows(self) -> float:
        """How many connections the zero-window defence has ended so far."""
        return sum(float(line.rsplit(" ", 1)[-1]) for line in self.h2_error_lines()
                   if 'reason="zero_window"' in line)

    def h2_check(self, r, spec, what):
        if r.status is None:
            raise Failure(f"{what}: END_STREAM without a response head")
        check_status(r, spec["allowed"], what)
        bad = [n for n, _ in r.headers if n in H2_CONNECTION_FIELDS or n != n.lower()]
        if bad:
            raise Failure(f"{what}: response fields HTTP/2 forbids: {bad}: {r.headers}")
        if spec["method"] == "HEAD" and r.body:
            raise Failure(f"{what}: a HEAD response with {len(r.body)} body bytes")
        size = spec["size"]
        if size is not None and r.status == 200 and (
                len(r.body) != size or zlib.crc32(r.body) != pattern_crc(size)):
            raise Failure(f"{what}: body of {len(r.body)} bytes (crc {zlib.crc32(r.body)}), "
                          f"expected {size} of the pattern")
        if spec["kind"] == "upload" and r.status == 200:
            doc = r.json()
            n = len(spec["body"])
            if doc["body_len"] != n or doc["body_crc"] != zlib.crc32(spec["body"]):
                doc.pop("body", None)
                raise Failure(f"{what}: upload of {n} bytes reached the upstream as "
                              f"{doc['body_len']}: {doc}")

    def run_one(self):
        name = self.rng.choices(
            ["keepalive", "pipelined", "close_early", "slow_reader", "upload", "oversized",
             "garbage", "expect_continue", "preflight", "misbehaving_upstream", "websocket",
             "tls_garbage", "stall", "oddities", "admin_abuse", "http2"],
            weights=[6, 3, 5, 1, 3, 2, 2, 2, 1, 3, 2, 1, 0.3, 1, 0.5, 5])[0]
        try:
            getattr(self, name)()
        except Exception as e:  # noqa: BLE001 (named and shortened for the report)
            raise Failure(f"{name}: {type(e).__name__}: {str(e)[:1500]}") from e
        return name


# -- the soak -----------------------------------------------------------------------------

def write_atomically(gw, config):
    text = gw.render(config)
    tmp = gw.config_path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, gw.config_path)


def make_certs(tmp_path):
    d = tmp_path / "tls"
    r = subprocess.run([str(SOURCE_DIR / "conf" / "make-test-certs.sh"), str(d)],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    client = ssl.create_default_context(cafile=str(d / "ca.crt"))
    return d, client


@pytest.mark.parametrize("store", ["memory", "single", "cluster", "sentinel"])
def test_chaos_soak(gateway_factory, upstream_factory, tmp_path, store):
    load_seconds = LOAD_SECONDS if store == "memory" else REDIS_SECONDS
    print(f"CHAOS_SEED={SEED} CHAOS_SECONDS={load_seconds} CHAOS_CLIENTS={CLIENTS} "
          f"store={store}")
    (tmp_path / "keys.txt").write_text(
        f"partners {hashlib.sha256(API_KEY.encode()).hexdigest()}\n")
    hs = KeyPair("oct", "chaos")
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [hs.jwk]}))
    token = sign(hs, "HS256", exp=int(time.time()) + 3600)
    certs, tls_client = make_certs(tmp_path)
    tls_h1 = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    tls_h1.set_alpn_protocols(["http/1.1"])
    tls_h2 = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    tls_h2.set_alpn_protocols(["h2", "http/1.1"])
    tls_reservation = reserve_port()
    tls_port = tls_reservation.getsockname()[1]

    ep_a = UpstreamProcess("a", tmp_path / "a.log")
    ep_b = UpstreamProcess("b", tmp_path / "b.log")
    ws = upstream_factory("ws")
    ws.handler = websocket_echo

    redis = ChaosRedis(store, tmp_path) if store != "memory" else None

    secure = TlsUpstream("secure", (certs / "upstream.crt", certs / "upstream.key"))

    def config(variant=0):
        return chaos_template(chaos_config(tmp_path, ep_a.address, ep_b.address, ws.address,
                                           secure.address, certs / "ca.crt", variant,
                                           redis and redis.settings), tls_port, certs)

    try:
        gw = gateway_factory(config())
        tls_reservation.close()
        rss_start = gw.rss_kib()
        failures: list[str] = []
        counts: dict[str, int] = {}
        closed: dict[str, int] = {}
        closed_notes: list[str] = []
        lock = threading.Lock()

        def client(i, stop, lenient=False):
            rng = random.Random(SEED * 1000 + i)
            actions = Actions(gw.port, rng, token, tls_port, tls_client, gw.admin_port,
                              tls_h1, tls_h2)
            while not stop.is_set():
                try:
                    name = actions.run_one()
                    for note in actions.closed:
                        with lock:
                            closed[note.split(":")[0]] = closed.get(note.split(":")[0], 0) + 1
                            closed_notes.append(f"client {i}: {note}")
                    actions.closed.clear()
                    with lock:
                        counts[name] = counts.get(name, 0) + 1
                except Exception as e:  # noqa: BLE001 (every failure is reported)
                    if lenient:  # the gateway is going away: only it crashing matters
                        if stop.wait(0.01):
                            return
                        continue
                    with lock:
                        failures.append(f"client {i}: {e}\n{traceback.format_exc()[-800:]}")
                    if len(failures) > 20:
                        stop.set()

        def chaos(stop):
            try:
                disturb(stop)
            except Exception as e:  # noqa: BLE001 (reported with the clients' failures)
                with lock:
                    failures.append(f"chaos: {e!r}\n{traceback.format_exc()[-800:]}")

        def disturb(stop):
            rng = random.Random(SEED)
            variant = 0
            next_kill = time.monotonic() + rng.uniform(1, 3)
            while not stop.wait(rng.uniform(0.05, 1.0)):
                for path in ("/metrics", "/health", "/health/ready"):
                    assert admin_get(gw, path)[0] in (200, 503), path
                variant = rng.choice([v for v in (0, 1, 2) if v != variant])
                write_atomically(gw, config(variant))
                gw.signal(signal.SIGHUP)
                if redis and rng.random() < 0.2:
                    redis.disturb(rng, stop)
                if rng.random() < 0.15:
                    ep_b.pause()
                    stop.wait(rng.uniform(0.2, 1.2))
                    ep_b.resume()
                if time.monotonic() > next_kill:
                    ep_a.kill()
                    if stop.wait(rng.uniform(0.2, 1.5)):
                        break
                    ep_a.restart()
                    next_kill = time.monotonic() + rng.uniform(1, 4)

        def run(stop, first, lenient=False):
            threads = [threading.Thread(target=client, args=(first + i, stop, lenient), daemon=True)
                       for i in range(CLIENTS)]
            for t in threads:
                t.start()
            return threads

        def join(threads):
            for t in threads:
                t.join(HANG + 10)
            return [t.name for t in threads if t.is_alive()]

        stop = threading.Event()
        threads = run(stop, 0)
        threads.append(threading.Thread(target=chaos, args=(stop,), daemon=True))
        threads[-1].start()
        stop.wait(load_seconds)
        stop.set()
        stuck = join(threads)
        if ep_a.proc.poll() is not None:
            ep_a.restart()
        print(f"actions: {counts}")
        print(f"closed without a complete response: {closed}")
        print("\n".join(closed_notes[:60]))
        ctx = f"(CHAOS_SEED={SEED}, store {store})"
        assert gw.running, f"gateway died {ctx}:\n{gw.app_log_text()}"
        assert not stuck, f"client threads stuck {stuck} {ctx}"
        assert not failures, f"{len(failures)} failures {ctx}:\n" + "\n".join(failures[:10])

        # alive, and serving again once the circuit breaker and health checks let it
        assert admin_get(gw, "/health/live")[0] == 200

        def normal_request():
            with Client(gw.port) as c:
                return c.request("GET", "/after").status == 200
        wait_until(normal_request, timeout=15, what=f"a normal request answered 200 {ctx}")
        with Client(gw.port) as c:
            r = c.request("GET", "/after?size=70000&chunked=1")
            assert r.status == 200 and r.body_crc == pattern_crc(70000), r

        # nothing stuck: every connection ends (header_read 2 s, idle 3 s)
        for listener in ("http", "https"):
            prom.wait_value(gw, "gateway_connections_active", 0, timeout=15, listener=listener)
        rss_end = gw.rss_kib()
        bound = 600 * 1024 if is_sanitized_build() else 64 * 1024
        print(f"RSS {rss_start} KiB -> {rss_end} KiB")
        assert rss_end - rss_start < bound, f"RSS grew {rss_start} -> {rss_end} KiB {ctx}"

        # SIGTERM under the same load: it drains and exits 0 whatever is in flight
        stop = threading.Event()
        threads = run(stop, CLIENTS)
        time.sleep(1.5)
        try:
            gw.stop()
        finally:
            stop.set()
            stuck = join(threads)
        assert not stuck, f"client threads stuck after the gateway exited {stuck} {ctx}"
        text = gw.stderr_path.read_text(errors="replace")
        assert "Sanitizer" not in text and "runtime error:" not in text, \
            f"sanitizer report {ctx}:\n{text[-20000:]}"
    finally:
        tls_reservation.close()
        ep_a.stop()
        ep_b.stop()
        secure.stop()
        if redis:
            redis.stop()
