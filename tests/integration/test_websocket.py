"""WebSocket tunnels (SPEC §2 Routing `websocket: true`, issue 3): the 101 and its headers,
bytes both ways (small and 1 MiB, and bytes sent right behind the handshake), a close from
either side closing the other, the idle timeout of a tunnel; an upgrade on a route without
`websocket: true` is 400 and reaches nothing; h2c is answered in HTTP/1.1."""

import base64
import os
import threading
import time
import zlib

import pytest

from client import Client, websocket_frame
from harness import gateway_config
from upstream import websocket_accept, websocket_echo

IDLE = 1.0  # timeouts.idle of these gateways, seconds


@pytest.fixture
def ws_upstream(upstream_factory):
    u = upstream_factory("ws")
    u.handler = websocket_echo
    return u


@pytest.fixture
def gw(gateway_factory, ws_upstream):
    return gateway_factory(gateway_config(
        upstreams={"up": [ws_upstream]},
        routes=[{"name": "ws", "match": {"path_prefix": "/ws"}, "upstream": "up", "websocket": True},
                {"name": "plain", "match": {"path_prefix": "/"}, "upstream": "up"}],
        timeouts={"idle": f"{int(IDLE * 1000)}ms"}))


def handshake(port, path="/ws/chat", extra_headers=(), first_bytes=b""):
    """Opens a tunnel: (client, response, key). `first_bytes` go in the same write as the
    head."""
    c = Client(port, timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    head = (f"GET {path} HTTP/1.1\r\nHost: example.test\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
    for n, v in extra_headers:
        head += f"{n}: {v}\r\n"
    c.send(head.encode() + b"\r\n" + first_bytes)
    r = c.read_response(allow_interim=True)
    return c, r, key


def recv_exact(c, n, timeout=10.0):
    deadline = time.monotonic() + timeout
    out = bytearray(c.buf[:n])
    del c.buf[:n]
    c.sock.settimeout(1.0)
    try:
        while len(out) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"got {len(out)} of {n} tunnel bytes in {timeout}s")
            try:
                d = c.sock.recv(min(1 << 20, n - len(out)))
            except TimeoutError:
                continue
            if not d:
                raise AssertionError(f"tunnel closed after {len(out)} of {n} bytes")
            out += d
    finally:
        c.sock.settimeout(c.timeout)
    return bytes(out)


def wait_closed(c, timeout):
    """True when the peer closes within `timeout` (bytes before the close are dropped)."""
    deadline = time.monotonic() + timeout
    c.buf.clear()
    while time.monotonic() < deadline:
        c.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            d = c.sock.recv(1 << 16)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        if not d:
            return True
    return False


def test_handshake_is_tunnelled_with_the_101(gw, ws_upstream):
    c, r, key = handshake(gw.port, extra_headers=[("Sec-WebSocket-Protocol", "chat")])
    with c:
        assert r.status == 101, r
        assert r.header("upgrade", "").lower() == "websocket", r
        assert "upgrade" in r.header("connection", "").lower(), r
        assert len(r.header_all("upgrade")) == 1 and len(r.header_all("connection")) == 1, r
        assert r.header("sec-websocket-accept") == websocket_accept(key), r
        assert not r.has_header("content-length") and not r.has_header("transfer-encoding"), r
        msg = websocket_frame(b"hello")
        c.send(msg)
        assert recv_exact(c, len(msg)) == msg
    req = ws_upstream.last()
    assert req.path == "/ws/chat" and req.method == "GET"
    assert req.header("upgrade", "").lower() == "websocket"
    assert "upgrade" in req.header("connection", "").lower()
    assert req.header("sec-websocket-key") == key
    assert req.header("sec-websocket-version") == "13"
    assert req.header("sec-websocket-protocol") == "chat"


def test_bytes_behind_the_handshake_are_delivered(gw):
    early = websocket_frame(b"sent with the handshake")
    c, r, _ = handshake(gw.port, first_bytes=early)
    with c:
        assert r.status == 101, r
        assert recv_exact(c, len(early)) == early


def test_many_small_messages_both_ways(gw):
    c, r, _ = handshake(gw.port)
    with c:
        assert r.status == 101
        for i in range(50):
            msg = websocket_frame(f"message {i}".encode(), opcode=0x1)
            c.send(msg)
            assert recv_exact(c, len(msg)) == msg


def test_one_mebibyte_each_way(gw):
    payload = os.urandom(1 << 20)
    msg = websocket_frame(payload)
    c, r, _ = handshake(gw.port)
    with c:
        assert r.status == 101
        err = []

        def send():
            try:
                for i in range(0, len(msg), 64 * 1024):
                    c.send(msg[i:i + 64 * 1024])
            except OSError as e:
                err.append(e)

        t = threading.Thread(target=send, daemon=True)
        t.start()
        got = recv_exact(c, len(msg), timeout=30)
        t.join(10)
        assert not err, err
        assert zlib.crc32(got) == zlib.crc32(msg) and got == msg


def test_client_close_closes_the_upstream_side(gw, ws_upstream):
    c, r, _ = handshake(gw.port)
    assert r.status == 101
    msg = websocket_frame(b"x")
    c.send(msg)
    assert recv_exact(c, len(msg)) == msg
    assert ws_upstream.open_connections == 1
    c.close()
    deadline = time.monotonic() + 3
    while ws_upstream.open_connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ws_upstream.open_connections == 0, "the upstream side of the tunnel stayed open"


def test_upstream_close_closes_the_client_side(gw, ws_upstream):
    c, r, _ = handshake(gw.port)
    with c:
        assert r.status == 101
        msg = websocket_frame(b"x")
        c.send(msg)
        assert recv_exact(c, len(msg)) == msg
        ws_upstream.close_connections()
        assert wait_closed(c, 3), "the client side of the tunnel stayed open"


def test_idle_tunnel_is_closed_after_the_idle_timeout(gw, ws_upstream):
    c, r, _ = handshake(gw.port)
    with c:
        assert r.status == 101
        # traffic keeps it alive past the idle timeout
        t_end = time.monotonic() + 2.5 * IDLE
        while time.monotonic() < t_end:
            msg = websocket_frame(b"ping", opcode=0x9)
            c.send(msg)
            assert recv_exact(c, len(msg)) == msg
            last = time.monotonic()
            time.sleep(IDLE * 0.3)
        # then silence: closed about one idle timeout after the last byte
        assert wait_closed(c, IDLE * 4), "an idle tunnel stayed open"
        assert time.monotonic() - last >= IDLE * 0.8
    deadline = time.monotonic() + 3
    while ws_upstream.open_connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ws_upstream.open_connections == 0


def test_refused_handshake_is_an_ordinary_response(gw, ws_upstream):
    c, r, _ = handshake(gw.port, path="/ws/x?status=403")
    with c:
        assert r.status == 403, r
        assert r.header("upgrade") is None
        # the connection still speaks HTTP (or was closed cleanly)
        try:
            r2 = c.request("GET", "/plain/after")
        except AssertionError:
            r2 = None
        assert r2 is None or r2.status == 200


def test_upgrade_on_a_route_without_websocket_is_400(gw, ws_upstream):
    c, r, _ = handshake(gw.port, path="/plain/chat")
    with c:
        assert r.status == 400, r
        assert r.json()["error_code"] == "BAD_REQUEST"
        assert not r.has_header("upgrade")
    assert ws_upstream.snapshot() == [], "the refused upgrade reached the upstream"


def test_upgrade_with_a_body_is_400(gw, ws_upstream):
    c, r, _ = handshake(gw.port, extra_headers=[("Content-Length", "5")], first_bytes=b"hello")
    with c:
        assert r.status == 400, r
    assert ws_upstream.snapshot() == []


def test_h2c_upgrade_is_answered_in_http11(gw, ws_upstream):
    # on the websocket route too: only `Upgrade: websocket` opens a tunnel
    with Client(gw.port) as c:
        for path in ("/ws/h2", "/plain/h2"):
            r = c.request("GET", path, headers=[("Connection", "Upgrade, HTTP2-Settings"),
                                                ("Upgrade", "h2c"),
                                                ("HTTP2-Settings", "AAMAAABkAAQAAP__")])
            assert r.status == 200 and r.version == "HTTP/1.1", r
            assert not r.has_header("upgrade")
            assert r.json()["path"] == path
        assert c.request("GET", "/plain/next").status == 200
    for req in ws_upstream.snapshot():
        assert not req.has_header("upgrade") and not req.has_header("http2-settings"), req.headers
