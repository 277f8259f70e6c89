"""`health_check.type: grpc` (SPEC §8): the gateway calls grpc.health.v1.Health/Check over
h2c on every endpoint, with the same interval, timeout and thresholds as HTTP checks.
Against the real grpcio server of grpc_upstream.py (SERVING, NOT_SERVING, SERVICE_UNKNOWN,
UNKNOWN, an unknown service, an error status, a hang, a SIGSTOP), a plain HTTP/1.1 server,
a socket that never answers, and a python-h2 server that answers wrongly in each way a
broken or hostile server could. Health is read from gateway_upstream_endpoint_healthy and
/health (traffic to h2 upstreams is for the gRPC proxying tests). `--check` refuses
malformed check blocks."""

import json
import socket
import threading
import time

import h2.config
import h2.connection
import h2.events
import pytest

import grpc_support as gs
import prom
from grpc_support import grpc_upstream_factory  # noqa: F401 (fixture)
from harness import admin_get, health_endpoint, gateway_config, run_gateway_cli, wait_until
from upstream import Upstream

CHECK = "/grpc.health.v1.Health/Check"
INTERVAL = 0.2
HEALTH_CHECK = {"type": "grpc", "interval": "200ms", "timeout": "150ms",
                "unhealthy_threshold": 3, "healthy_threshold": 2}
ROUTE = [{"name": "r", "match": {"path_prefix": "/"}, "upstream": "up"}]


def start(gateway_factory, endpoints, **check):
    cfg = gateway_config(upstreams={"up": {"endpoints": list(endpoints),
                                           "health_check": {**HEALTH_CHECK, **check}}},
                         routes=ROUTE)
    return gateway_factory(cfg)


gauge = prom.endpoint_healthy
wait_gauge = prom.wait_endpoint_healthy
entry = health_endpoint


def test_serving_is_healthy_and_not_serving_unhealthy_after_the_threshold(gateway_factory,
                                                                          grpc_upstream_factory):
    a, b = grpc_upstream_factory("a"), grpc_upstream_factory("b")
    gw = start(gateway_factory, [a.address, b.address])
    b.wait_calls(3, CHECK)
    e = entry(gw, b.address)
    assert e["status"] == "healthy" and e["latency_ms"] is not None and e["last_checked"], e
    assert gauge(gw, a.address) == 1 and gauge(gw, b.address) == 1

    switched = time.time()
    b.set_health("", gs.NOT_SERVING)
    wait_gauge(gw, b.address, 0)
    failed = [c for c in b.calls(CHECK) if c["time"] >= switched]
    assert len(failed) >= HEALTH_CHECK["unhealthy_threshold"], failed
    e = entry(gw, b.address)
    assert e["status"] == "unhealthy" and e["latency_ms"] is None, e
    assert entry(gw, a.address)["status"] == "healthy"
    assert admin_get(gw, "/health/ready")[0] == 200  # a is left

    a.set_health("", gs.NOT_SERVING)
    wait_gauge(gw, a.address, 0)
    assert admin_get(gw, "/health/ready")[0] == 503

    # Back to SERVING: healthy again after healthy_threshold successes.
    switched = time.time()
    b.set_health("", gs.SERVING)
    wait_gauge(gw, b.address, 1)
    assert len([c for c in b.calls(CHECK) if c["time"] >= switched]) >= HEALTH_CHECK["healthy_threshold"]
    assert admin_get(gw, "/health/ready")[0] == 200


def test_the_request_is_a_standard_health_check(gateway_factory, grpc_upstream_factory):
    up = grpc_upstream_factory(health={"": gs.SERVING})
    start(gateway_factory, [up.address])
    calls = up.wait_calls(2, CHECK)
    assert all(c["service"] == "" for c in calls)
    md = dict(calls[0]["metadata"])
    assert md.get("user-agent", "").startswith("gateway-health-check"), md
    # One connection per check, closed after it, as the HTTP checks do.
    assert len(up.peers(CHECK)) == len(up.calls(CHECK))


def test_a_named_service_is_sent(gateway_factory, grpc_upstream_factory):
    # Only the named service is SERVING: the whole server ("") would be NOT_SERVING.
    up = grpc_upstream_factory(health={"": gs.NOT_SERVING, "echo.Echo": gs.SERVING})
    gw = start(gateway_factory, [up.address], service="echo.Echo")
    calls = up.wait_calls(4, CHECK)
    assert {c["service"] for c in calls} == {"echo.Echo"}
    assert gauge(gw, up.address) == 1 and entry(gw, up.address)["latency_ms"] is not None


@pytest.mark.parametrize("status", [gs.NOT_SERVING, gs.SERVICE_UNKNOWN, gs.UNKNOWN, "missing",
                                    "error:UNAVAILABLE", "error:UNIMPLEMENTED", "hang"])
def test_anything_but_serving_is_unhealthy(gateway_factory, grpc_upstream_factory, status):
    """From the start the service answers `status` (missing: not in the table, NOT_FOUND;
    hang: no answer within the timeout): the endpoint goes down; SERVING brings it back."""
    table = {"": gs.SERVING} if status == "missing" else {"": gs.SERVING, "billing": status}
    up = grpc_upstream_factory(health=table)
    gw = start(gateway_factory, [up.address], service="billing")
    wait_gauge(gw, up.address, 0)
    assert len(up.calls(CHECK)) >= HEALTH_CHECK["unhealthy_threshold"]
    up.set_health("billing", gs.SERVING)
    wait_gauge(gw, up.address, 1)


def test_a_stopped_server_is_unhealthy_then_comes_back(gateway_factory, grpc_upstream_factory):
    up = grpc_upstream_factory()
    gw = start(gateway_factory, [up.address])
    up.wait_calls(1, CHECK)
    up.pause()  # SIGSTOP: the kernel accepts connections, nothing answers
    try:
        t = time.monotonic()
        wait_gauge(gw, up.address, 0)
        # unhealthy_threshold checks, each given up after the timeout
        assert time.monotonic() - t < HEALTH_CHECK["unhealthy_threshold"] * INTERVAL + 2
    finally:
        up.resume()
    wait_gauge(gw, up.address, 1)


def test_a_killed_server_is_unhealthy(gateway_factory, grpc_upstream_factory):
    up = grpc_upstream_factory()
    gw = start(gateway_factory, [up.address])
    up.wait_calls(1, CHECK)
    up.kill()
    wait_gauge(gw, up.address, 0)
    up.start()  # same port
    wait_gauge(gw, up.address, 1)


def test_an_http1_server_is_unhealthy(gateway_factory):
    # It answers every request, /healthz included, with 200: an HTTP check would pass.
    u = Upstream("plain")
    try:
        gw = start(gateway_factory, [u.address])
        wait_gauge(gw, u.address, 0)
    finally:
        u.stop()


def test_a_server_that_never_answers_is_unhealthy(gateway_factory):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)  # never accepted, never read: connects succeed, nothing comes back
    try:
        address = f"127.0.0.1:{s.getsockname()[1]}"
        gw = start(gateway_factory, [address])
        wait_gauge(gw, address, 0, timeout=3 * INTERVAL + 3)
        assert entry(gw, address)["latency_ms"] is None
    finally:
        s.close()


# ------------------------------------------------------------------ broken servers


def grpc_frame(message: bytes, compressed: bool = False) -> bytes:
    return bytes([int(compressed)]) + len(message).to_bytes(4, "big") + message


SERVING_MSG = b"\x08\x01"


class BrokenServer:
    """Each connection gets `mode`'s answer to its first request (python-h2 on the server
    side), or raw bytes (garbage, a PING flood)."""

    def __init__(self, mode: str):
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.closed = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        conn.settimeout(2)
        try:
            if self.mode == "garbage":
                conn.recv(65536)
                conn.sendall(bytes(range(256)) * 16)
            elif self.mode == "ping_flood":
                conn.recv(65536)
                settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
                ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"12345678"
                conn.sendall(settings + ping * 4000)  # 68 KB, past the 16 KiB a check reads
            else:
                self.h2(conn)
            time.sleep(0.5)
        except OSError:
            pass
        finally:
            conn.close()

    def h2(self, conn):
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                   header_encoding="utf-8"))
        h2c.initiate_connection()
        conn.sendall(h2c.data_to_send())
        while h2c.state_machine.state != h2.connection.ConnectionState.CLOSED:
            data = conn.recv(65536)
            if not data:
                return
            for ev in h2c.receive_data(data):
                if isinstance(ev, h2.events.DataReceived):
                    h2c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                if isinstance(ev, h2.events.StreamEnded):
                    self.answer(h2c, ev.stream_id)
            conn.sendall(h2c.data_to_send())

    def answer(self, c, sid):
        m = self.mode
        ok_headers = [(":status", "200"), ("content-type", "application/grpc")]
        if m == "rst":
            return c.reset_stream(sid, error_code=2)
        if m == "goaway":
            return c.close_connection(error_code=0, last_stream_id=0)
        if m == "http_503":
            return c.send_headers(sid, [(":status", "503"), ("content-type", "application/grpc"),
                                        ("grpc-status", "0")], end_stream=True)
        c.send_headers(sid, ok_headers)
        body = {"compressed": grpc_frame(SERVING_MSG, compressed=True),
                "two_messages": grpc_frame(SERVING_MSG) * 2,
                "truncated": grpc_frame(SERVING_MSG)[:-1],
                "garbage_message": grpc_frame(b"\x0b\xff\xff"),
                "big_message": grpc_frame(b"\x12\x80\x40" + b"x" * 8192 + SERVING_MSG),
                }.get(m, grpc_frame(SERVING_MSG))
        c.send_data(sid, body)
        if m == "no_grpc_status":
            return c.end_stream(sid)
        status = {"grpc_status_14": "14", "grpc_status_junk": "0x"}.get(m, "0")
        c.send_headers(sid, [("grpc-status", status)], end_stream=True)

    def close(self):
        self.sock.close()


def test_the_broken_server_stand_in_answers_correctly(gateway_factory):
    """Its correct answer is healthy: the failures below come from each defect alone."""
    s = BrokenServer("good")
    try:
        gw = start(gateway_factory, [s.address])
        wait_until(lambda: s.connections >= 4, timeout=5)
        assert gauge(gw, s.address) == 1
        assert entry(gw, s.address)["latency_ms"] is not None
    finally:
        s.close()


@pytest.mark.parametrize("mode", ["rst", "goaway", "http_503", "compressed", "two_messages",
                                  "truncated", "garbage_message", "big_message", "no_grpc_status",
                                  "grpc_status_14", "grpc_status_junk", "garbage", "ping_flood"])
def test_a_wrong_answer_is_unhealthy(gateway_factory, mode):
    s = BrokenServer(mode)
    try:
        gw = start(gateway_factory, [s.address])
        wait_gauge(gw, s.address, 0)
        assert entry(gw, s.address)["latency_ms"] is None
    finally:
        s.close()
    # The gateway took it in its stride.
    assert admin_get(gw, "/health/live")[0] == 200


# ------------------------------------------------------------------ configuration


def check_config(tmp_path, health_check):
    cfg = gateway_config(upstreams={"up": {"endpoints": ["127.0.0.1:9"], "health_check": health_check}},
                         routes=ROUTE)
    cfg["listeners"] = [{"name": "http", "address": "127.0.0.1:8080"}]
    p = tmp_path / "c.yaml"
    p.write_text(json.dumps(cfg, indent=2) + "\n")
    r = run_gateway_cli(["--check", "-c", str(p)])
    return r, p


@pytest.mark.parametrize("health_check", [
    {"type": "grpc"},
    {"type": "grpc", "service": "grpc.health.v1.Health", "interval": "1s", "timeout": "200ms"},
    {"type": "http", "path": "/ready"},
    {"path": "/ready"},
])
def test_check_accepts(tmp_path, health_check):
    r, _ = check_config(tmp_path, health_check)
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("health_check,key,message", [
    ({"type": "grpcs"}, "type", "'grpcs' is not one of: http, grpc"),
    ({"type": ["grpc"]}, "type", ""),
    ({"type": "grpc", "path": "/healthz"}, "path", "health_check path is for type: http"),
    ({"service": "echo.Echo"}, "service", "health_check service is for type: grpc"),
    ({"type": "http", "service": "echo.Echo"}, "service", "health_check service is for type: grpc"),
    ({"type": "grpc", "service": "a b"}, "service", "printable ASCII characters without spaces"),
    ({"type": "grpc", "service": "x" * 1025}, "service", "at most 1024"),
    ({"type": "grpc", "service": "caf\u00e9"}, "service", "printable ASCII"),
    ({"type": "grpc", "servce": "x"}, "servce", "servce"),
])
def test_check_refuses(tmp_path, health_check, key, message):
    r, p = check_config(tmp_path, health_check)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    assert len(lines) == 1, lines
    text = p.read_text()
    line = text[:text.index(f'"{key}"')].count("\n") + 1
    assert lines[0].startswith(f"{p}:{line}:"), (lines, line)
    assert message in lines[0], lines
