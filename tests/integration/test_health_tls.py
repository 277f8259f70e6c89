"""Active health checks of upstreams with `tls` (SPEC §2, §8): a probe speaks TLS as the
upstream's connections do (its ca or the system store, sni, verify, client certificate),
offering ALPN http/1.1 for HTTP checks and h2 for gRPC ones. Real handshakes: Python's ssl
module behind the harness's HTTP upstream (test_tls.TlsUpstream) and the grpcio upstream
with a certificate. Health is read from gateway_upstream_endpoint_healthy and /health."""

import functools
import socket
import threading
import time

import pytest

import grpc_support as gs
import prom
from grpc_support import grpc_certs, grpc_upstream_factory  # noqa: F401 (fixtures)
from harness import gateway_config, health_endpoint
from test_tls import TlsUpstream
from client import Client

GRPC_CHECK = "/grpc.health.v1.Health/Check"
INTERVAL = 0.3
TIMEOUT = 0.25
CHECK = {"interval": "300ms", "timeout": "250ms", "unhealthy_threshold": 2,
         "healthy_threshold": 2}
ROUTE = [{"name": "r", "match": {"path_prefix": "/"}, "upstream": "up"}]


gauge = prom.endpoint_healthy
wait_gauge = functools.partial(prom.wait_endpoint_healthy, timeout=8.0)  # TLS handshakes too
entry = health_endpoint


def wait_checked_ok(gw, address, timeout=8.0):
    """Until a check succeeded (latency_ms is only set by a successful one): endpoints
    start healthy, so the gauge alone would not tell a probe that never got through."""
    deadline = time.monotonic() + timeout
    while True:
        e = entry(gw, address)
        if e["status"] == "healthy" and e["latency_ms"] is not None:
            return e
        assert time.monotonic() < deadline, f"no successful check of {address}: {e}"
        time.sleep(0.05)


def start(gateway_factory, endpoint, tls, check=None, **upstream):
    block = {"endpoints": [endpoint], "tls": tls,
             "health_check": {**CHECK, **(check or {})}, **upstream}
    return gateway_factory(gateway_config(upstreams={"up": block}, routes=ROUTE))


@pytest.fixture
def tls_up():
    made = []

    def make(pair, client_ca=None):
        u = TlsUpstream(f"tls{len(made)}", pair, client_ca)
        made.append(u)
        return u

    yield make
    for u in made:
        u.stop()


def pair(d, name):
    return (d / f"{name}.crt", d / f"{name}.key")


# ---------------------------------------------------------------- HTTP checks


@pytest.mark.parametrize("variant", ["ca", "sni", "mtls", "no_verify"])
def test_https_upstream_with_an_http_check_is_healthy_and_serves(gateway_factory, tls_up,
                                                                grpc_certs, variant):
    d = grpc_certs
    up = tls_up(pair(d, "upstream"), client_ca=d / "clients-ca.crt" if variant == "mtls" else None)
    tls = {"ca": str(d / "ca.crt")}
    if variant == "sni":
        tls["sni"] = "localhost"
    if variant == "mtls":
        tls.update(cert=str(d / "client.crt"), key=str(d / "client.key"))
    if variant == "no_verify":
        tls = {"verify": False}
    gw = start(gateway_factory, up, tls, {"path": "/healthz"})
    wait_checked_ok(gw, up.address)
    checks = [r for r in up.snapshot() if r.path == "/healthz"]
    assert checks and all(r.header("user-agent") == "gateway-health-check" for r in checks), \
        checks
    if variant == "sni":
        assert "localhost" in up.sni_seen, up.sni_seen
    if variant == "mtls":
        assert any(up.client_subjects), up.client_subjects
    # ... and still healthy a few intervals on: every check got through.
    time.sleep(4 * INTERVAL)
    assert gauge(gw, up.address) == 1
    with Client(gw.port) as c:
        r = c.request("GET", "/x", host="localhost")
        assert r.status == 200, r
        assert r.json()["path"] == "/x"


def test_mtls_upstream_refuses_a_check_without_the_client_certificate(gateway_factory, tls_up,
                                                                      grpc_certs):
    d = grpc_certs
    up = tls_up(pair(d, "upstream"), client_ca=d / "clients-ca.crt")
    gw = start(gateway_factory, up, {"ca": str(d / "ca.crt")})
    wait_gauge(gw, up.address, 0)
    assert up.handshake_errors


def test_an_untrusted_certificate_is_unhealthy_and_logged_once(gateway_factory, tls_up,
                                                              grpc_certs):
    d = grpc_certs
    up = tls_up(pair(d, "upstream"))
    # clients-ca did not sign the upstream's certificate
    gw = start(gateway_factory, up, {"ca": str(d / "clients-ca.crt")})
    wait_gauge(gw, up.address, 0)
    assert entry(gw, up.address)["status"] == "unhealthy"
    time.sleep(6 * INTERVAL)  # more failed checks: not logged again
    with Client(gw.port) as c:
        r = c.request("GET", "/x", host="localhost")
        assert r.status == 503, r
    tls_logs = [e for e in gw.app_log() if e.get("message") == "upstream health check TLS failure"]
    assert len(tls_logs) == 1, tls_logs
    assert "certificate verify failed" in tls_logs[0]["error"], tls_logs[0]
    assert tls_logs[0]["endpoint"] == up.address
    # every check was refused by the gateway before any request was sent
    assert not [r for r in up.snapshot() if r.path == "/healthz"]


def test_a_wrong_sni_is_unhealthy(gateway_factory, tls_up, grpc_certs):
    d = grpc_certs
    up = tls_up(pair(d, "upstream"))
    gw = start(gateway_factory, up, {"ca": str(d / "ca.crt"), "sni": "other.example.test"})
    wait_gauge(gw, up.address, 0)
    assert "other.example.test" in up.sni_seen


def test_a_tls_check_against_a_plaintext_server_is_unhealthy(gateway_factory, upstream,
                                                            grpc_certs):
    gw = start(gateway_factory, upstream, {"ca": str(grpc_certs / "ca.crt")})
    t = time.monotonic()
    wait_gauge(gw, upstream.address, 0)
    assert time.monotonic() - t < CHECK["unhealthy_threshold"] * (INTERVAL + TIMEOUT) + 2
    # what the plaintext server got was a ClientHello, never a GET
    assert not [r for r in upstream.snapshot() if r.path == "/healthz"]


@pytest.fixture
def silent_server():
    """Accepts connections and never says a word: the handshake must time out."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held, stop = [], threading.Event()

    def accept():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"127.0.0.1:{srv.getsockname()[1]}", held
    stop.set()
    t.join()
    for s in held:
        s.close()
    srv.close()


def test_a_handshake_without_an_answer_fails_within_the_timeout(gateway_factory, grpc_certs,
                                                               silent_server):
    address, held = silent_server
    gw = start(gateway_factory, address, {"ca": str(grpc_certs / "ca.crt")})
    t = time.monotonic()
    wait_gauge(gw, address, 0)
    assert time.monotonic() - t < CHECK["unhealthy_threshold"] * (INTERVAL + TIMEOUT) + 2
    assert len(held) >= CHECK["unhealthy_threshold"]


# ---------------------------------------------------------------- gRPC checks


def test_grpc_tls_upstream_serving_then_not_serving(gateway_factory, grpc_upstream_factory,
                                                    grpc_certs):
    d = grpc_certs
    up = grpc_upstream_factory(tls=pair(d, "upstream"))
    gw = start(gateway_factory, up.address, {"ca": str(d / "ca.crt")}, {"type": "grpc"},
               protocol="h2")
    calls = up.wait_calls(2, GRPC_CHECK)
    assert dict(calls[0]["metadata"]).get("user-agent", "").startswith("gateway-health-check")
    wait_checked_ok(gw, up.address)
    up.set_health("", gs.NOT_SERVING)
    wait_gauge(gw, up.address, 0)
    assert entry(gw, up.address)["status"] == "unhealthy"
    up.set_health("", gs.SERVING)
    wait_gauge(gw, up.address, 1)
    wait_checked_ok(gw, up.address)


def test_grpc_tls_upstream_with_client_certificate(gateway_factory, grpc_upstream_factory,
                                                   grpc_certs):
    d = grpc_certs
    up = grpc_upstream_factory(tls=pair(d, "upstream"))
    gw = start(gateway_factory, up.address,
               {"ca": str(d / "ca.crt"), "sni": "localhost", "cert": str(d / "client.crt"),
                "key": str(d / "client.key")}, {"type": "grpc"}, protocol="h2")
    up.wait_calls(2, GRPC_CHECK)
    wait_checked_ok(gw, up.address)


def test_grpc_check_needs_alpn_h2(gateway_factory, tls_up, grpc_certs):
    """A TLS endpoint that does not choose h2 (Python's ssl server selects no ALPN) fails
    a gRPC check, though the handshake itself succeeds."""
    d = grpc_certs
    up = tls_up(pair(d, "upstream"))
    gw = start(gateway_factory, up, {"ca": str(d / "ca.crt")}, {"type": "grpc"},
               protocol="h2")
    wait_gauge(gw, up.address, 0)
    assert not up.handshake_errors, up.handshake_errors
    assert any("ALPN h2" in e.get("error", "") for e in gw.app_log()
               if e.get("message") == "upstream health check TLS failure"), gw.app_log_text()


def test_grpc_tls_check_against_an_h2c_server_is_unhealthy(gateway_factory,
                                                           grpc_upstream_factory, grpc_certs):
    up = grpc_upstream_factory()  # h2c
    gw = start(gateway_factory, up.address, {"ca": str(grpc_certs / "ca.crt")},
               {"type": "grpc"}, protocol="h2")
    t = time.monotonic()
    wait_gauge(gw, up.address, 0)
    assert time.monotonic() - t < CHECK["unhealthy_threshold"] * (INTERVAL + TIMEOUT) + 2
    assert not up.calls(GRPC_CHECK)
