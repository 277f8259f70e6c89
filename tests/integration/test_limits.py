"""Limits and slow clients (SPEC §2 Limits and timeouts, issue 3): 431, 414, 413 (by
Content-Length before the body is read, by a chunked body as soon as it passes the limit,
Expect: 100-continue answered 413 without 100 Continue, a route's body_limit), a head
trickled byte by byte (408 then close), max_connections and max_connections_per_ip
(refused promptly, existing connections unaffected, counted), and a client that stops
reading a large response (bounded memory, closed after the send timeout).

Covered elsewhere: a head that stops arriving → 408 and the idle keep-alive timeout
(test_errors.py), ambiguous framing → 400 (test_malformed.py), 100-continue accepted
(test_proxy.py)."""

import socket
import threading
import time

import pytest

import prom
from client import Client
from harness import gateway_config, is_sanitized_build

SANITIZED = is_sanitized_build()
PROMPT = 1.0  # seconds: an answer that must not wait for anything


def limits_config(upstream, limits=None, timeouts=None, **top):
    cfg = gateway_config(
        upstreams={"up": [upstream]},
        routes=[{"name": "small", "match": {"path_prefix": "/small"}, "upstream": "up",
                 "filters": {"body_limit": {"max_bytes": 100}}},
                {"name": "big", "match": {"path_prefix": "/big"}, "upstream": "up",
                 "filters": {"body_limit": {"max_bytes": 10000}}},
                {"name": "r", "match": {"path_prefix": "/"}, "upstream": "up"}],
        limits={"max_request_header_bytes": 2048, "max_uri_bytes": 1024,
                "max_body_bytes": 1000, **(limits or {})},
        **top)
    if timeouts:
        cfg["timeouts"].update(timeouts)
    return cfg


@pytest.fixture
def gw(gateway_factory, upstream):
    return gateway_factory(limits_config(upstream))


def send_quietly(c, data):
    """Sends, ignoring a connection the gateway already closed."""
    try:
        c.send(data)
    except OSError:
        pass


def assert_error(r, status, code):
    assert r.status == status, r
    assert r.header("content-type") == "application/json", r
    assert r.json()["error_code"] == code, r


def rejected(gw, reason, route):
    return prom.value(prom.scrape(gw), "gateway_request_rejected_total", route=route,
                      reason=reason) or 0


# -- head and URI -------------------------------------------------------------------------


def test_headers_within_the_limit_pass(gw, upstream):
    with Client(gw.port) as c:
        r = c.request("GET", "/ok", headers=[("X-Pad", "a" * 1500)])
        assert r.status == 200, r


@pytest.mark.parametrize("pad", [3000, 64 * 1024])
def test_headers_too_large_is_431_and_closes(gw, upstream, pad):
    with Client(gw.port) as c:
        send_quietly(c, b"GET /x HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * pad + b"\r\n\r\n")
        assert_error(c.read_response(), 431, "HEADERS_TOO_LARGE")
        assert c.closed_by_peer(5)
    assert upstream.snapshot() == []
    assert rejected(gw, "headers_too_large", "") == 1


def test_head_over_the_limit_in_two_writes_is_431(gw, upstream):
    head = b"GET /x HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 5000 + b"\r\n\r\n"
    with Client(gw.port) as c:
        c.send(head[:1000])  # within the limit so far
        time.sleep(0.2)
        send_quietly(c, head[1000:])
        assert_error(c.read_response(), 431, "HEADERS_TOO_LARGE")
    assert upstream.snapshot() == []


def test_many_small_headers_past_the_limit_is_431(gw, upstream):
    headers = "".join(f"X-H{i}: {'v' * 20}\r\n" for i in range(100)).encode()  # ~2.8 KiB
    with Client(gw.port) as c:
        send_quietly(c, b"GET /x HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        assert_error(c.read_response(), 431, "HEADERS_TOO_LARGE")
    assert upstream.snapshot() == []


def test_uri_within_the_limit_passes(gw, upstream):
    with Client(gw.port) as c:
        assert c.request("GET", "/ok?q=" + "a" * 900).status == 200


def test_uri_too_long_is_414(gw, upstream):
    with Client(gw.port) as c:
        r = c.request("GET", "/x?q=" + "a" * 1100)
        assert_error(r, 414, "URI_TOO_LONG")
    assert upstream.snapshot() == []
    assert rejected(gw, "uri_too_long", "") == 1


# -- bodies -------------------------------------------------------------------------------


def test_content_length_over_the_limit_is_413_before_the_body(gw, upstream):
    with Client(gw.port) as c:
        t = time.monotonic()
        c.send(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")  # no body sent
        r = c.read_response()
        assert time.monotonic() - t < PROMPT
        assert_error(r, 413, "PAYLOAD_TOO_LARGE")
        assert c.closed_by_peer(5)
    assert upstream.snapshot() == [], "the upstream saw a request whose body was too large"
    assert rejected(gw, "body_too_large", "r") == 1


def test_body_at_the_limit_passes(gw, upstream):
    with Client(gw.port) as c:
        r = c.request("POST", "/x", body=b"b" * 1000)
        assert r.status == 200 and r.json()["body_len"] == 1000


def test_route_body_limit_overrides_the_global_one(gw, upstream):
    with Client(gw.port) as c:
        assert_error(c.request("POST", "/small/x", body=b"s" * 101), 413, "PAYLOAD_TOO_LARGE")
    with Client(gw.port) as c:
        r = c.request("POST", "/big/x", body=b"b" * 5000)
        assert r.status == 200 and r.json()["body_len"] == 5000
    assert [q.path for q in upstream.snapshot()] == ["/big/x"]


def test_chunked_body_is_413_as_soon_as_it_passes_the_limit(gw, upstream):
    with Client(gw.port, timeout=5) as c:
        c.send(b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(2):  # 800 bytes: within the limit
            c.send(b"190\r\n" + b"c" * 400 + b"\r\n")
        assert c.still_open(0.3), "answered before the limit was passed"
        c.send(b"190\r\n" + b"c" * 400 + b"\r\n")  # 1200 bytes: past it
        t = time.monotonic()
        r = c.read_response()  # the rest of the body is never sent
        assert time.monotonic() - t < PROMPT
        assert_error(r, 413, "PAYLOAD_TOO_LARGE")
        assert c.closed_by_peer(5)
    assert upstream.connections == 1, "the body is streamed: the upstream request had started"
    # the upstream request, already started with the first 800 bytes, was aborted: its
    # connection closed mid-body (the upstream never saw a complete request)
    deadline = time.monotonic() + 3
    while upstream.open_connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert upstream.open_connections == 0, "the upstream still waits for the rest of the body"
    assert upstream.snapshot() == []


def test_expect_100_continue_with_too_large_a_body_is_413_without_100(gw, upstream):
    with Client(gw.port) as c:
        c.send(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
               b"Expect: 100-continue\r\n\r\n")
        r = c.read_response(allow_interim=True)
        assert r.status == 413, f"expected 413 first, got {r!r}"
        assert_error(r, 413, "PAYLOAD_TOO_LARGE")
        assert c.closed_by_peer(5)
    assert upstream.snapshot() == []


# -- slow heads -----------------------------------------------------------------------------


def trickle(c, data, every, stop):
    for i in range(len(data)):
        if stop.is_set():
            return
        try:
            c.send(data[i:i + 1])
        except OSError:
            return
        stop.wait(every)


@pytest.mark.parametrize("keepalive_first", [False, True])
def test_head_trickled_byte_by_byte_is_408_then_closed(gateway_factory, upstream, keepalive_first):
    gw = gateway_factory(limits_config(upstream, timeouts={"header_read": "1s"}))
    head = b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    with Client(gw.port, timeout=10) as c:
        if keepalive_first:  # the second request of a connection gets the same deadline
            assert c.request("GET", "/first").status == 200
        stop = threading.Event()
        t0 = time.monotonic()
        sender = threading.Thread(target=trickle, args=(c, head, 0.1, stop), daemon=True)
        sender.start()  # one byte every 100 ms: the head would take 23 s
        try:
            r = c.read_response()
            elapsed = time.monotonic() - t0
        finally:
            stop.set()
            sender.join(5)
        assert_error(r, 408, "REQUEST_TIMEOUT")
        assert 0.8 <= elapsed < 2.5, f"408 after {elapsed:.2f}s with header_read 1s"
        try:
            assert c.read_all(5) == b""
        except ConnectionResetError:
            pass
    assert [q.path for q in upstream.snapshot()] == (["/first"] if keepalive_first else [])


# -- connection limits ----------------------------------------------------------------------


class SourceClient(Client):
    """A Client whose connection comes from a given loopback address."""

    def __init__(self, port, source, timeout=10.0):
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False


def refused_promptly(c) -> bool:
    """The gateway closes a refused connection at once, without a byte."""
    try:
        c.send(b"GET /refused HTTP/1.1\r\nHost: x\r\n\r\n")
    except OSError:
        return True
    try:
        data = c.read_all(PROMPT * 2)
    except ConnectionResetError:
        return True
    except AssertionError:
        return False  # still open
    assert data == b"", f"a refused connection was answered: {data[:200]!r}"
    return True


def test_max_connections_refuses_new_ones_and_keeps_the_others(gateway_factory, upstream):
    gw = gateway_factory(limits_config(upstream, limits={"max_connections": 3}))
    time.sleep(0.3)  # the harness's readiness probe has come and gone
    held = [Client(gw.port) for _ in range(3)]
    try:
        for i, c in enumerate(held):
            assert c.request("GET", f"/held{i}").status == 200
        with Client(gw.port) as extra:
            t = time.monotonic()
            assert refused_promptly(extra)
            assert time.monotonic() - t < PROMPT * 2
        for i, c in enumerate(held):
            assert c.request("GET", f"/still{i}").status == 200
        s = prom.scrape(gw)
        assert prom.value(s, "gateway_connections_rejected_total", listener="http",
                          reason="max_connections") == 1
        # a slot freed is a slot available again
        held.pop().close()
        time.sleep(0.2)
        with Client(gw.port) as again:
            assert again.request("GET", "/again").status == 200
    finally:
        for c in held:
            c.close()
    assert not any(q.path == "/refused" for q in upstream.snapshot())


def test_max_connections_per_ip(gateway_factory, upstream):
    gw = gateway_factory(limits_config(upstream, limits={"max_connections_per_ip": 2}))
    time.sleep(0.3)
    try:
        probe = SourceClient(gw.port, "127.0.0.2")
        probe.close()
    except OSError:
        pytest.skip("cannot connect from 127.0.0.2 here")
    held = [SourceClient(gw.port, "127.0.0.1") for _ in range(2)]
    try:
        for c in held:
            assert c.request("GET", "/held").status == 200
        with SourceClient(gw.port, "127.0.0.1") as extra:
            assert refused_promptly(extra)
        with SourceClient(gw.port, "127.0.0.2") as other:
            assert other.request("GET", "/other-address").status == 200
        for c in held:
            assert c.request("GET", "/still").status == 200
        assert prom.value(prom.scrape(gw), "gateway_connections_rejected_total", listener="http",
                          reason="max_connections_per_ip") == 1
    finally:
        for c in held:
            c.close()


# -- a client that stops reading ------------------------------------------------------------


def test_client_that_stops_reading_is_closed_and_pins_no_memory(gateway_factory, upstream):
    gw = gateway_factory(limits_config(upstream, timeouts={"idle": "1s"}))
    with Client(gw.port) as c:  # warm the worker up without a pooled upstream connection
        assert c.request("GET", "/warm?q=" + "w" * 1100).status == 414
    assert upstream.open_connections == 0
    base = gw.rss_kib()
    peak = base
    size = 256 << 20
    c = Client(gw.port, timeout=10)
    try:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        c.send(f"GET /dl?size={size} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got = c.sock.recv(4096)
        assert got.startswith(b"HTTP/1.1 200"), got[:100]
        t0 = time.monotonic()
        upstream_closed_at = None
        while time.monotonic() - t0 < 4.0:  # the client reads nothing from here on
            peak = max(peak, gw.rss_kib())
            if upstream_closed_at is None and upstream.open_connections == 0:
                upstream_closed_at = time.monotonic() - t0
            time.sleep(0.05)
        assert upstream_closed_at is not None, \
            "the upstream connection of a stalled download is still open after 4 s"
        assert upstream_closed_at < 3.5, upstream_closed_at
        # the client side was closed too: what is buffered drains, then EOF, far short of
        # the body
        received = len(got)
        c.sock.settimeout(5)
        while True:
            try:
                d = c.sock.recv(1 << 20)
            except ConnectionResetError:
                break
            except TimeoutError:
                raise AssertionError(f"still open after {received} bytes")
            if not d:
                break
            received += len(d)
        assert received < size // 4, received
    finally:
        c.close()
    assert upstream.bytes_sent < 64 << 20, f"{upstream.bytes_sent >> 20} MiB pulled for a stalled client"
    if not SANITIZED:
        assert peak - base < 16 * 1024, f"RSS grew by {peak - base} KiB for a stalled client"
    with Client(gw.port) as c2:
        assert c2.request("GET", "/after").status == 200
