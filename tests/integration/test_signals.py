"""Stopping (SPEC §1): SIGTERM and SIGINT drain and exit 0, whatever the state of the
connections: none, idle keep-alive clients, pooled upstream connections, a request in
flight (which completes)."""

import signal
import threading
import time

import pytest

from client import Client
from harness import Gateway, simple_config


@pytest.fixture
def gw(gateway_factory, upstream):
    return gateway_factory(simple_config(upstream))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_without_connections_exits_0(gw, sig):
    gw.signal(sig)
    assert gw.wait_exit(20) == 0, gw.app_log_text()


def test_sigterm_with_pooled_upstream_connections_exits_0(gw, upstream):
    for i in range(4):
        with Client(gw.port) as c:
            assert c.request("GET", f"/x{i}").status == 200
    gw.signal(signal.SIGTERM)
    assert gw.wait_exit(20) == 0, gw.app_log_text()


def test_sigterm_with_an_idle_keepalive_client_exits_0(gw):
    # an idle keep-alive connection is closed at once by the drain
    c = Client(gw.port)
    try:
        assert c.request("GET", "/x").status == 200
        gw.signal(signal.SIGTERM)
        assert c.closed_by_peer(10), "the idle keep-alive connection stays open"
        assert gw.wait_exit(20) == 0, gw.app_log_text()
    finally:
        c.close()


def test_sigterm_with_a_connection_that_sent_nothing_exits_0(gw):
    c = Client(gw.port)
    try:
        time.sleep(0.1)  # accepted by a worker
        gw.signal(signal.SIGTERM)
        assert gw.wait_exit(20) == 0, gw.app_log_text()
    finally:
        c.close()


def test_sigterm_lets_the_request_in_flight_finish(gw, upstream):
    c = Client(gw.port)
    try:
        c.send(b"GET /slow?delay=1000 HTTP/1.1\r\nHost: example.test\r\n\r\n")
        upstream.wait_requests(1)
        gw.signal(signal.SIGTERM)
        r = c.read_response()
        assert r.status == 200, r
        assert r.json()["path"] == "/slow"
        assert "close" in r.header("connection", "").lower(), "a draining gateway closes"
        assert c.closed_by_peer(10)
        assert gw.wait_exit(20) == 0, gw.app_log_text()
    finally:
        c.close()


def test_sigterm_stops_accepting(gw, upstream):
    c = Client(gw.port)
    try:
        c.send(b"GET /slow?delay=1500 HTTP/1.1\r\nHost: example.test\r\n\r\n")
        upstream.wait_requests(1)
        gw.signal(signal.SIGTERM)
        time.sleep(0.3)
        # new connections are refused (or closed unanswered) while the drain runs
        try:
            with Client(gw.port, timeout=3) as late:
                late.send(b"GET /late HTTP/1.1\r\nHost: example.test\r\n\r\n")
                data = late.read_all(5)
                assert data == b"", f"a draining gateway answered a new connection: {data[:200]!r}"
        except (ConnectionRefusedError, ConnectionResetError):
            pass
        assert c.read_response().status == 200
        assert gw.wait_exit(20) == 0, gw.app_log_text()
    finally:
        c.close()
    assert [q.path for q in upstream.snapshot()] == ["/slow"]


def test_drain_timeout_with_one_worker_already_done_exits_0(gateway_factory, upstream):
    # Two workers; one request outlives timeouts.drain on whichever worker took it, while
    # the other worker finishes draining at once. The drain timeout then tells every
    # worker to stop: waking the one that had already closed its loop aborted the process
    # (exit -6 with nothing on stderr).
    gw = gateway_factory(simple_config(upstream, workers=2, timeouts={"drain": "1s",
                                                                      "upstream_response": "30s"}))
    c = Client(gw.port)
    try:
        c.send(b"GET /slow?delay=5000 HTTP/1.1\r\nHost: example.test\r\n\r\n")
        upstream.wait_requests(1)
        t0 = time.monotonic()
        gw.signal(signal.SIGTERM)
        assert gw.wait_exit(20) == 0, gw.app_log_text()
        assert time.monotonic() - t0 < 4, "ended by the drain timeout, not by the request"
        assert "drain timeout" in gw.app_log_text()
    finally:
        c.close()
