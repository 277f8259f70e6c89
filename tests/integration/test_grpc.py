"""gRPC through the gateway (SPEC §8), end to end with real parts: grpcio's server behind
it (grpc_upstream.py) and grpcio's client in front, on messages compiled from
tests/integration/protos/ at test time. Over h2c and over TLS (ALPN h2 both ways), every
call kind streams through, trailers and metadata arrive intact, the route's filters answer
in gRPC's terms, deadlines hold, and many calls share few upstream connections."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time

import grpc
import pytest

import grpc_support as gs
from grpc_support import grpc_certs, grpc_upstream_factory  # noqa: F401 (fixtures)
from harness import gateway_config
from jwt_support import Keys, provider
from h2client import H2Client
from prom import scrape, value


def msg(text="", payload=b""):
    return gs.pb().echo.Msg(text=text, payload=payload)


@pytest.fixture(params=["h2c", "tls"])
def transport(request):
    return request.param


def start(gateway_factory, up, transport, grpc_certs, tmp_path, routes=None, upstream=None, **top):
    """A gateway in front of `up`: the client side and the upstream side both h2c, or
    both TLS (the upstream's certificate checked against the test CA)."""
    up_block = dict(upstream or {})
    if transport == "tls":
        up_block["tls"] = {"ca": str(grpc_certs / "ca.crt"), "sni": "localhost"}
    cfg = gs.grpc_gateway_config([up], certs=grpc_certs if transport == "tls" else None,
                                 upstream=up_block, routes=routes, **top)
    return gateway_factory(cfg)


def channel(gw, transport, grpc_certs):
    if transport == "tls":
        return gs.secure_channel(gw.port, grpc_certs / "ca.crt")
    return gs.insecure_channel(gw.port)


def grpc_upstream(grpc_upstream_factory, transport, grpc_certs, **kw):
    if transport == "tls":
        kw["tls"] = (grpc_certs / "upstream.crt", grpc_certs / "upstream.key")
    return grpc_upstream_factory(**kw)


def test_every_call_kind_streams_through(gateway_factory, grpc_upstream_factory, grpc_certs,
                                         tmp_path, transport):
    up = grpc_upstream(grpc_upstream_factory, transport, grpc_certs)
    gw = start(gateway_factory, up, transport, grpc_certs, tmp_path)
    with channel(gw, transport, grpc_certs) as ch:
        stub = gs.echo_stub(ch)
        # Unary, with request metadata echoed back and the upstream's trailers intact.
        reply, call = stub.Unary.with_call(msg("hi", b"\x00\x01payload"), timeout=10,
                                           metadata=[("x-echo-metadata", "1"), ("x-custom", "v1"),
                                                     ("x-data-bin", b"\xff\x00")])
        assert reply.payload == b"\x00\x01payload" and reply.count == 1
        initial = gs.metadata(call.initial_metadata())
        assert initial["x-custom"] == "v1" and initial["x-data-bin"] == b"\xff\x00"
        trailing = gs.metadata(call.trailing_metadata())
        assert trailing["x-trailer"] == "ok" and trailing["x-trailer-bin"] == b"\x00\x01\xfe\xff"
        assert call.code() == grpc.StatusCode.OK

        # Server streaming: 40 messages of 32 KiB, in order.
        got = list(stub.ServerStream(gs.pb().echo.StreamReq(count=40, size=32768), timeout=20))
        assert [m.text for m in got] == [str(i) for i in range(40)]
        assert all(m.payload == bytes([i % 256]) * 32768 for i, m in enumerate(got))

        # Client streaming: the server saw every message and byte.
        reply = stub.ClientStream(iter([msg(str(i), b"x" * 1000) for i in range(50)]), timeout=20)
        assert reply.count == 50 and reply.bytes == 50000

        # Bidirectional, in lock step: each answer comes before the next message is sent,
        # so nothing on the way may wait for the end of the stream.
        requests, answers = _LockStep(), []
        call = stub.Bidi(iter(requests), timeout=20)
        for i in range(10):
            requests.send(msg(str(i), b"y" * 100))
            answer = next(call)
            answers.append(answer)
            assert answer.text == str(i) and answer.count == i + 1
        requests.close()
        assert list(call) == []
        assert call.code() == grpc.StatusCode.OK
    log = gw.find_access(lambda e: e["path"] == "/echo.Echo/Bidi")
    assert log["protocol"] == "HTTP/2" and log["status"] == 200 and log["grpc_status"] == "0"


class _LockStep:
    """A request iterator the test feeds one message at a time."""

    def __init__(self):
        self._items, self._cv, self._closed = [], threading.Condition(), False

    def send(self, item):
        with self._cv:
            self._items.append(item)
            self._cv.notify()

    def close(self):
        with self._cv:
            self._closed = True
            self._cv.notify()

    def __iter__(self):
        return self

    def __next__(self):
        with self._cv:
            while not self._items and not self._closed:
                self._cv.wait()
            if self._items:
                return self._items.pop(0)
            raise StopIteration


def test_upstream_statuses_and_messages_pass_through(gateway_factory, grpc_upstream_factory,
                                                      grpc_certs, tmp_path):
    up = grpc_upstream_factory()
    gw = start(gateway_factory, up, "h2c", grpc_certs, tmp_path)
    with gs.insecure_channel(gw.port) as ch:
        stub = gs.echo_stub(ch)
        with pytest.raises(grpc.RpcError) as e:
            stub.Unary(msg(), timeout=10, metadata=[("x-abort-code", "NOT_FOUND"),
                                                   ("x-abort-message", "no such thing: 50% off")])
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        assert e.value.details() == "no such thing: 50% off"
        # Mid-stream: the messages before the error arrive, then the status.
        call = stub.ServerStream(gs.pb().echo.StreamReq(count=10, size=10), timeout=10,
                                 metadata=[("x-abort-code", "DATA_LOSS"), ("x-abort-after", "3")])
        got = []
        with pytest.raises(grpc.RpcError) as e:
            for m in call:
                got.append(m)
        assert len(got) == 3 and e.value.code() == grpc.StatusCode.DATA_LOSS
    entry = gw.find_access(lambda e: e["path"] == "/echo.Echo/ServerStream")
    assert entry["grpc_status"] == "15" and entry["status"] == 200
    samples = scrape(gw)
    assert value(samples, "gateway_grpc_responses_total", route="grpc", grpc_status="5") == 1
    assert value(samples, "gateway_grpc_responses_total", route="grpc", grpc_status="15") == 1


def _refused(call_fn):
    with pytest.raises(grpc.RpcError) as e:
        call_fn()
    err = e.value
    md = {**gs.metadata(err.initial_metadata() or ()), **gs.metadata(err.trailing_metadata() or ())}
    return err.code(), err.details(), md


def test_the_gateways_own_answers_are_grpc_statuses(gateway_factory, grpc_upstream_factory,
                                                     grpc_certs, tmp_path, transport):
    keys = Keys("grpc")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(keys.jwks()))
    up = grpc_upstream(grpc_upstream_factory, transport, grpc_certs)
    routes = [
        {"name": "unary", "match": {"path": "/echo.Echo/Unary"}, "upstream": "grpc",
         # The rate limit runs before the token check: the refused call counts too.
         "filters": {"jwt": {"provider": "main"},
                     "rate_limit": {"limits": [{"key": "client_ip", "requests": 3, "per": "1h"}]}}},
        {"name": "stream", "match": {"path_prefix": "/echo.Echo/"}, "upstream": "grpc",
         "filters": {"body_limit": {"max_bytes": "1KiB"}}},
    ]
    gw = start(gateway_factory, up, transport, grpc_certs, tmp_path, routes=routes,
               jwt_providers=[provider(jwks_file=str(jwks))])
    token = keys.token("ES256")
    with channel(gw, transport, grpc_certs) as ch:
        stub = gs.echo_stub(ch)
        # No token: UNAUTHENTICATED, with the request id as a header, nothing upstream.
        code, details, md = _refused(lambda: stub.Unary(msg(), timeout=10))
        assert code == grpc.StatusCode.UNAUTHENTICATED and details
        assert md.get("x-request-id")
        assert up.calls("/echo.Echo/Unary") == []
        # With one: through, twice; then the rate limit: RESOURCE_EXHAUSTED.
        auth = [("authorization", "Bearer " + token)]
        for _ in range(2):
            assert stub.Unary(msg("ok"), timeout=10, metadata=auth).count == 1
        code, details, md = _refused(lambda: stub.Unary(msg(), timeout=10, metadata=auth))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "too many" in details.lower()
        assert md.get("retry-after")
        # No route: UNIMPLEMENTED.
        code, _, _ = _refused(lambda: ch.unary_unary("/no.Such/Method")(b"", timeout=10))
        assert code == grpc.StatusCode.UNIMPLEMENTED
        # A client stream past the route's body limit: RESOURCE_EXHAUSTED.
        code, _, _ = _refused(lambda: stub.ClientStream(iter([msg(payload=b"z" * 600)] * 4), timeout=10))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    entries = gw.wait_access_log(6)
    statuses = sorted(e["grpc_status"] for e in entries)
    assert statuses == ["0", "0", "12", "16", "8", "8"], entries
    assert all(e["status"] == 200 for e in entries)
    refused = [e for e in entries if e["grpc_status"] == "16"][0]
    assert refused["error_code"] and refused["route"] == "unary"


def test_upstream_down_is_unavailable_and_slow_is_deadline_exceeded(
        gateway_factory, grpc_upstream_factory, grpc_certs, tmp_path):
    up = grpc_upstream_factory()
    routes = [{"name": "slow", "match": {"path_prefix": "/"}, "upstream": "grpc", "timeout": "300ms"}]
    gw = start(gateway_factory, up, "h2c", grpc_certs, tmp_path, routes=routes)
    with gs.insecure_channel(gw.port) as ch:
        stub = gs.echo_stub(ch)
        # The route's timeout: the gateway answers DEADLINE_EXCEEDED itself.
        t0 = time.monotonic()
        code, details, _ = _refused(lambda: stub.Unary(msg(), timeout=10, metadata=[("x-delay-ms", "3000")]))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "timeout" in details.lower()
        assert 0.25 < time.monotonic() - t0 < 2.5
        # The service dies: UNAVAILABLE.
        up.kill()
        code, _, _ = _refused(lambda: stub.Unary(msg(), timeout=10))
        assert code == grpc.StatusCode.UNAVAILABLE


def test_a_shorter_grpc_timeout_is_the_upstream_timeout(gateway_factory, upstream):
    # An upstream that does not read grpc-timeout (the HTTP/1.1 test upstream, told to wait
    # 4 s) and a client that waits past it (python-h2, not grpcio, which would give up
    # itself): the gateway must end the call at the client's deadline, not the route's 5 s.
    cfg = gateway_config(upstreams={"up": [upstream]},
                         routes=[{"name": "r", "match": {"path_prefix": "/"}, "upstream": "up"}])
    cfg["listeners"] = [{"name": "h2c", "address": "127.0.0.1:@PORT@", "h2c": True}]
    cfg["admin"] = {"address": "127.0.0.1:@ADMIN_PORT@"}
    gw = gateway_factory(json.dumps(cfg))
    body = msg("late").SerializeToString()
    frame = b"\x00" + len(body).to_bytes(4, "big") + body
    headers = [("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", "300m")]
    with H2Client(gw.port, timeout=10) as c:
        t0 = time.monotonic()
        r = c.request("POST", "/echo.Echo/Unary?delay=4000", headers=headers, body=frame)
        elapsed = time.monotonic() - t0
    assert r.status == 200 and r.header("grpc-status") == "4", r.headers
    assert r.header("content-type") == "application/grpc" and r.header("x-request-id")
    assert 0.25 < elapsed < 2.5, elapsed
    entry = gw.find_access(lambda e: e["path"] == "/echo.Echo/Unary")
    assert entry["grpc_status"] == "4" and entry["error_code"] == "GATEWAY_TIMEOUT", entry
    # Without grpc-timeout the route's timeout holds: the same call is answered.
    with H2Client(gw.port, timeout=10) as c:
        r = c.request("POST", "/echo.Echo/Unary?delay=500", headers=headers[:2], body=frame)
    assert r.status == 200 and r.header("grpc-status") is None, r.headers


def test_many_calls_share_few_upstream_connections(gateway_factory, grpc_upstream_factory,
                                                   grpc_certs, tmp_path):
    up = grpc_upstream_factory()
    gw = start(gateway_factory, up, "h2c", grpc_certs, tmp_path)
    with gs.insecure_channel(gw.port) as ch:
        stub = gs.echo_stub(ch)
        gs.wait_ready(ch)
        with concurrent.futures.ThreadPoolExecutor(200) as pool:
            futures = [pool.submit(stub.Unary, msg(str(i)), timeout=30, metadata=[("x-delay-ms", "500")])
                       for i in range(200)]
            replies = [f.result() for f in futures]
    assert sorted(r.text for r in replies) == sorted(str(i) for i in range(200))
    # 200 calls at once over a handful of connections: two workers, at most 100 streams each
    # (until the upstream's SETTINGS say otherwise).
    peers = up.peers("/echo.Echo/Unary")
    assert 1 <= len(peers) <= 4, peers


def test_the_upstreams_stream_limit_and_the_bulkhead(gateway_factory, grpc_upstream_factory,
                                                    grpc_certs, tmp_path):
    # The upstream takes 2 streams per connection; the gateway may open 1 connection and
    # queue 3 more calls: 5 at once → 2 run, 3 wait, and the rest are refused at once.
    up = grpc_upstream_factory(max_concurrent_streams=2)
    gw = start(gateway_factory, up, "h2c", grpc_certs, tmp_path,
               upstream={"max_connections": 1, "max_pending": 3}, workers=1)
    with gs.insecure_channel(gw.port) as ch:
        stub = gs.echo_stub(ch)
        gs.wait_ready(ch)
        # Warm up: the upstream's SETTINGS are known before the burst.
        stub.Unary(msg("warm"), timeout=10)
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(stub.Unary.with_call, msg(str(i)), timeout=20,
                                   metadata=[("x-delay-ms", "400")]) for i in range(8)]
            outcomes = []
            for f in futures:
                try:
                    f.result()
                    outcomes.append("ok")
                except grpc.RpcError as e:
                    outcomes.append(e.code())
    elapsed = time.monotonic() - t0
    assert outcomes.count("ok") == 5, outcomes
    assert outcomes.count(grpc.StatusCode.UNAVAILABLE) == 3, outcomes
    assert elapsed > 1.0  # three waves of at most two calls of 400 ms
    assert len(up.peers("/echo.Echo/Unary")) == 1


def test_auto_speaks_http2_where_alpn_chooses_it(gateway_factory, grpc_upstream_factory, grpc_certs,
                                                 tmp_path):
    # `auto` over TLS: the upstream chooses h2. The first call, queued as HTTP/1.1 while the
    # handshake ran, goes again as HTTP/2 on that same connection; the next calls share it.
    up = grpc_upstream(grpc_upstream_factory, "tls", grpc_certs)
    gw = start(gateway_factory, up, "tls", grpc_certs, tmp_path, upstream={"protocol": "auto"}, workers=1)
    with channel(gw, "tls", grpc_certs) as ch:
        stub = gs.echo_stub(ch)
        for i in range(5):
            reply, call = stub.Unary.with_call(msg(str(i), b"p" * 3000), timeout=10)
            assert reply.text == str(i) and reply.bytes == 3000
            assert gs.metadata(call.trailing_metadata())["x-trailer"] == "ok"
    assert len(up.peers("/echo.Echo/Unary")) == 1
