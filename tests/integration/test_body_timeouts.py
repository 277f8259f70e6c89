"""Who a slow request body is charged to (issue 20): a client that stalls its body gets 408
from timeouts.body_read (reset by each piece of the body) and never counts against the
upstream or its circuit breaker; upstream_response runs only once the whole request is
sent, so a slow but steady upload is not cut short; an upstream that stops reading the body
is bounded by upstream_response (504)."""

import json
import socket
import threading
import time

import prom
from client import Client
from harness import admin_get, gateway_config
from test_errors import assert_error_body

BREAKER = {"consecutive_failures": 3, "open_for": "30s"}


def start(gateway_factory, endpoint, body_read="1s", upstream_response="1s", top=None, **up):
    return gateway_factory(gateway_config(
        upstreams={"up": {"endpoints": [endpoint], **up}},
        routes=[{"name": "r", "match": {"path_prefix": "/"}, "upstream": "up"}],
        timeouts={"body_read": body_read, "upstream_response": upstream_response}, **(top or {})))


def test_stalled_bodies_get_408_and_never_open_the_breaker(gateway_factory, upstream):
    gw = start(gateway_factory, upstream, circuit_breaker=BREAKER)
    clients = [Client(gw.port) for _ in range(3)]
    try:
        for c in clients:
            c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n1234567")
        began = time.monotonic()
        for c in clients:
            assert_error_body(c.read_response(), 408, "REQUEST_TIMEOUT")
            assert c.closed_by_peer()
        assert time.monotonic() - began < 4
    finally:
        for c in clients:
            c.close()
    # Three stalls opened the breaker (and unreadied the gateway) before: now nothing is
    # held against the upstream.
    with Client(gw.port) as c:
        assert c.request("GET", "/after").status == 200
    assert admin_get(gw, "/health/ready")[0] == 200
    samples = prom.scrape(gw)
    assert prom.value(samples, "gateway_circuit_breaker_open", upstream="up") == 0
    assert prom.total(samples, "gateway_upstream_requests_total", upstream="up", code="504") == 0
    assert prom.value(samples, "gateway_request_rejected_total", route="r", reason="timeout") == 3
    log = [e for e in gw.wait_access_log(4) if e["path"] == "/upload"]
    assert [e["status"] for e in log] == [408] * 3 and all(
        e["error_code"] == "REQUEST_TIMEOUT" for e in log), log


def test_huge_declared_chunk_that_never_arrives_gets_408(gateway_factory, upstream):
    gw = start(gateway_factory, upstream, circuit_breaker=BREAKER)
    with Client(gw.port) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"fffffff\r\nabc")
        assert_error_body(c.read_response(), 408, "REQUEST_TIMEOUT")


def test_slow_steady_upload_outlasts_both_timeouts(gateway_factory, upstream):
    # 600 KB at ~200 KB/s takes 3 s: three times upstream_response and body_read (which
    # each piece resets). The response timeout used to run from the head: 504 at 1 s.
    gw = start(gateway_factory, upstream)
    body = bytes(range(256)) * (600_000 // 256)
    with Client(gw.port) as c:
        c.send(b"PUT /slow HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body))
        began = time.monotonic()
        for i in range(0, len(body), 20_000):
            c.sock.sendall(body[i:i + 20_000])
            time.sleep(0.1)
        r = c.read_response()
        assert time.monotonic() - began > 2.5
    assert r.status == 200, r
    assert r.json()["body_len"] == len(body)
    assert upstream.last().body == body


def test_upstream_that_stops_reading_the_body_gets_504(gateway_factory):
    # The response timeout does not run while the body is sent; the same duration bounds
    # each wait for the upstream to take more of it.
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    held = []

    def accept():
        lsock.settimeout(10)
        try:
            s, _ = lsock.accept()
        except OSError:
            return
        held.append(s)
        s.recv(4096)  # the head and a little body, then nothing more is read
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    port = lsock.getsockname()[1]
    gw = start(gateway_factory, f"127.0.0.1:{port}", body_read="30s",
               top={"limits": {"max_body_bytes": "1GiB"}})
    total = 64 << 20
    with Client(gw.port) as c:
        c.send(b"PUT /stuck HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % total)

        def pump():
            block = b"x" * (1 << 20)
            try:
                for _ in range(total >> 20):
                    c.sock.sendall(block)
            except OSError:
                pass  # the gateway answered and closed
        sender = threading.Thread(target=pump, daemon=True)
        sender.start()
        began = time.monotonic()
        assert_error_body(c.read_response(), 504, "GATEWAY_TIMEOUT")
        assert time.monotonic() - began < 8
    for s in held:
        s.close()
    lsock.close()


def test_body_read_is_documented_and_validated(tmp_path):
    from harness import run_gateway_cli
    config = gateway_config(upstreams={"u": ["127.0.0.1:1"]}, routes=[
        {"name": "r", "match": {"path_prefix": "/"}, "upstream": "u"}],
        listeners=[{"name": "h", "address": "127.0.0.1:0"}])
    p = tmp_path / "c.yaml"
    for value, errors in (("20s", []), ("0s", ["duration must be at least 1ms, got '0s'"])):
        config["timeouts"]["body_read"] = value
        p.write_text(json.dumps(config))
        res = run_gateway_cli(["--check", "-c", str(p)])
        # The message, not the path (which holds the test's name): an unknown key fails too.
        got = [line.split(": ", 1)[1] for line in res.stdout.splitlines() if line.startswith(str(p))]
        assert got == errors and res.returncode == (1 if errors else 0), res
