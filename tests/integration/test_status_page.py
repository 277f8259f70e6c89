"""The operator's view (SPEC §11): GET /status on the admin listener, the status page
GET / in headless Chromium, and `gateway --explain`."""

import json

from client import Client
from harness import admin_get, gateway_config, wait_until

ODD_NAME = "r<img src=x onerror=alert(1)>&\"'"


def status(gw) -> dict:
    code, body = admin_get(gw, "/status")
    assert code == 200, body
    return json.loads(body)


def route(doc: dict, name: str) -> dict:
    return next(r for r in doc["routes"] if r["name"] == name)


def endpoint(doc: dict, upstream: str, address: str) -> dict:
    u = next(u for u in doc["upstreams"] if u["name"] == upstream)
    return next(e for e in u["endpoints"] if e["address"] == address)


def status_config(a, b) -> dict:
    return gateway_config(
        upstreams={"api": {"endpoints": [a, b],
                           "health_check": {"path": "/healthz", "interval": "200ms", "timeout": "200ms",
                                            "unhealthy_threshold": 1, "healthy_threshold": 1}}},
        routes=[
            {"name": "limited", "match": {"path_prefix": "/limited"}, "upstream": "api",
             "filters": {"rate_limit": {"limits": [{"key": "client_ip", "requests": 2, "per": "1m"}]}}},
            {"name": ODD_NAME, "match": {"path_prefix": "/"}, "upstream": "api"},
        ],
        default_filters={"request_id": {}, "security_headers": {}},
    )


def test_status_numbers_move_and_a_killed_endpoint_goes_unhealthy(upstream_factory, gateway_factory):
    a, b = upstream_factory("a"), upstream_factory("b")
    gw = gateway_factory(status_config(a, b))
    doc = status(gw)
    for key in ("version", "uptime_seconds", "config", "listeners", "routes", "upstreams", "jwks"):
        assert key in doc, key
    assert doc["config"]["loaded_at"].endswith("Z")
    assert doc["config"]["last_reload"] == {"at": None, "result": None}
    assert doc["listeners"][0]["connections"] == {"HTTP/1.1": 0, "HTTP/2": 0}
    assert "redis" not in doc
    odd = route(doc, ODD_NAME)
    assert odd["filters"] == ["request_id", "security_headers"]
    assert route(doc, "limited")["filters"] == ["request_id", "rate_limit", "security_headers"]
    assert odd["requests_per_second"] == 0 and odd["p50_ms"] == 0

    with Client(gw.port) as c:
        for i in range(20):
            assert c.request("GET", f"/x{i}").status == 200
        assert c.request("GET", "/x?status=503").status == 503
        statuses = [c.request("GET", "/limited").status for _ in range(5)]
        assert statuses.count(429) == 3, statuses
        # This connection is open while /status is read.
        doc = status(gw)
    assert doc["listeners"][0]["connections"]["HTTP/1.1"] == 1
    odd = route(doc, ODD_NAME)
    assert odd["requests_per_second"] > 0
    assert 0 < odd["error_rate"] < 0.2  # 1 of 21
    assert 0 < odd["p50_ms"] <= odd["p99_ms"]
    limited = route(doc, "limited")
    assert limited["rate_limited_per_second"] > 0
    assert abs(limited["error_rate"] - 0.6) < 0.01  # the 429s are the gateway's refusals

    for e in (a, b):
        assert endpoint(doc, "api", e.address)["status"] == "healthy"
        assert endpoint(doc, "api", e.address)["breaker"] == "closed"
    b.stop()
    wait_until(lambda: endpoint(status(gw), "api", b.address)["status"] == "unhealthy",
               timeout=10, what="the stopped endpoint marked unhealthy")
    assert endpoint(status(gw), "api", a.address)["status"] == "healthy"


def test_status_records_a_reload(upstream_factory, gateway_factory):
    import signal
    a, b = upstream_factory("a"), upstream_factory("b")
    gw = gateway_factory(status_config(a, b))
    gw.write_config("routes: [oops")
    gw.signal(signal.SIGHUP)
    wait_until(lambda: status(gw)["config"]["last_reload"]["result"] == "failure", timeout=10,
               what="the refused reload on /status")
