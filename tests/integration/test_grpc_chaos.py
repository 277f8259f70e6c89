"""gRPC under faults (SPEC §8): real grpcio clients make every kind of call, and cancel
some, through the gateway to a real grpcio service over HTTP/2, while the service is
killed and restarted, stopped (SIGSTOP) and resumed, and the gateway reloads. Every call
must end within its deadline with a status a client can act on. The gateway must not
crash (ASan in CI), must not leak calls in flight, and must exit 0."""

from __future__ import annotations

import random
import signal
import threading
import time

import grpc

import grpc_support as gs
from grpc_support import grpc_certs, grpc_upstream_factory  # noqa: F401 (fixtures)
from harness import is_sanitized_build, wait_until
from prom import scrape, value

DURATION = 20.0
# What a call may end with while its service dies and comes back: the service's answer,
# the gateway's UNAVAILABLE (upstream down, breaker open, bulkhead) or DEADLINE_EXCEEDED
# (service stopped), INTERNAL (a response cut mid-way: RST_STREAM INTERNAL_ERROR), or the
# client's own cancel.
ACCEPTABLE = {"OK", "UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "CANCELLED"}


def _one_call(stub, rng):
    pb = gs.pb().echo
    kind = rng.choice(["unary", "server", "client", "bidi", "cancel"])
    if kind == "unary":
        stub.Unary(pb.Msg(payload=b"x" * rng.randint(0, 70000)), timeout=3)
    elif kind == "server":
        for _ in stub.ServerStream(pb.StreamReq(count=20, size=20000), timeout=3):
            pass
    elif kind == "client":
        stub.ClientStream(iter([pb.Msg(payload=b"y" * 5000)] * 20), timeout=3)
    elif kind == "bidi":
        list(stub.Bidi(iter([pb.Msg(payload=b"z" * 100)] * 10), timeout=3))
    else:
        f = stub.Unary.future(pb.Msg(), timeout=3, metadata=[("x-delay-ms", "500")])
        time.sleep(rng.random() * 0.1)
        f.cancel()
        return "CANCELLED"
    return "OK"


def test_grpc_calls_survive_a_failing_service(gateway_factory, grpc_upstream_factory, grpc_certs):
    up = grpc_upstream_factory()
    gw = gateway_factory(gs.grpc_gateway_config(
        [up], upstream={"circuit_breaker": {"consecutive_failures": 5, "open_for": "1s"},
                        "max_connections": 4}))
    stop_at = time.monotonic() + DURATION
    outcomes: dict[str, int] = {}
    lock = threading.Lock()

    def client(seed):
        rng = random.Random(seed)
        with gs.insecure_channel(gw.port) as ch:
            stub = gs.echo_stub(ch)
            while time.monotonic() < stop_at:
                t0 = time.monotonic()
                try:
                    result = _one_call(stub, rng)
                except grpc.RpcError as e:
                    result = e.code().name
                except grpc.FutureCancelledError:
                    result = "CANCELLED"
                # Deadlines hold: nothing waits past its 3 s (plus scheduling slack).
                assert time.monotonic() - t0 < 8, ("a call outlived its deadline", result)
                with lock:
                    outcomes[result] = outcomes.get(result, 0) + 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    step = 0
    while time.monotonic() < stop_at - 2:
        time.sleep(1.5)
        step += 1
        if step % 3 == 0:
            up.kill()
            time.sleep(0.5)
            up.restart()
        elif step % 3 == 1:
            gw.signal(signal.SIGHUP)
        else:
            up.pause()
            time.sleep(0.7)
            up.resume()
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "a client thread hung"

    assert set(outcomes) <= ACCEPTABLE, outcomes
    assert outcomes.get("OK", 0) > 50, outcomes
    # Once the service is steady again, calls succeed and nothing is left in flight.
    with gs.insecure_channel(gw.port) as ch:
        stub = gs.echo_stub(ch)
        wait_until(lambda: _ok(stub), timeout=15, what="a call succeeds after the chaos")
    wait_until(lambda: value(scrape(gw), "gateway_requests_in_flight") == 0, timeout=10,
               what="no request left in flight")
    samples = scrape(gw)
    assert value(samples, "gateway_grpc_responses_total", route="grpc", grpc_status="0") > 50
    if not is_sanitized_build():
        assert gw.rss_kib() < 64 * 1024, gw.rss_kib()


def _ok(stub) -> bool:
    try:
        return stub.Unary(gs.pb().echo.Msg(text="after"), timeout=3).text == "after"
    except grpc.RpcError:
        return False
