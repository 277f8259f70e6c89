"""/metrics and the health endpoints (SPEC §4, §5; docs/observability.md): exact counts
after a known request mix, histogram invariants, the upstream and rejection counters,
connections, in-flight, build_info, process_*, `promtool check metrics` on real scrapes,
label escaping, and the /health document's shape."""

import json
import os
import re
import shutil
import subprocess
import time

import pytest

import prom
from client import Client
from harness import admin_get, gateway_config, run_gateway_cli

PROMTOOL = next((p for p in ("/usr/bin/promtool", shutil.which("promtool")) if p and os.access(p, os.X_OK)),
                None)
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
BUCKETS = ["0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
           "0.25", "0.5", "1", "2.5", "5", "7.5", "10", "+Inf"]
ODD_ROUTE = 'we"ird\\route'  # a quote and a backslash: both must be escaped in a label
SPEC_METRICS = {
    "gateway_requests_total": "counter",
    "gateway_request_duration_seconds": "histogram",
    "gateway_requests_in_flight": "gauge",
    "gateway_upstream_requests_total": "counter",
    "gateway_upstream_request_duration_seconds": "histogram",
    "gateway_upstream_connect_failures_total": "counter",
    "gateway_upstream_endpoint_healthy": "gauge",
    "gateway_circuit_breaker_open": "gauge",
    "gateway_rate_limited_total": "counter",
    "gateway_auth_failures_total": "counter",
    "gateway_cors_preflights_total": "counter",
    "gateway_request_rejected_total": "counter",
    "gateway_connections_active": "gauge",
    "gateway_connections_total": "counter",
    "gateway_tls_handshakes_total": "counter",
    "gateway_tls_handshake_errors_total": "counter",
    "gateway_config_reloads_total": "counter",
    "gateway_redis_errors_total": "counter",
    "gateway_build_info": "gauge",
    "process_cpu_seconds_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_start_time_seconds": "gauge",
}


def version() -> str:
    out = run_gateway_cli(["--version"]).stdout.split()
    assert out, "gateway --version printed nothing"
    return out[-1]


def promtool_check(text: str) -> None:
    if not PROMTOOL:
        pytest.skip("promtool not installed (Debian package prometheus)")
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
        f"promtool check metrics (exit {r.returncode}):\n{r.stdout}{r.stderr}"


@pytest.fixture
def gw(gateway_factory, upstream):
    return gateway_factory(gateway_config(
        upstreams={"up": [upstream]},
        routes=[{"name": "a", "match": {"path_prefix": "/a"}, "upstream": "up"},
                {"name": "b", "match": {"path_prefix": "/b", "methods": ["POST"]}, "upstream": "up"},
                {"name": ODD_ROUTE, "match": {"path_prefix": "/odd"}, "upstream": "up"}],
        limits={"max_body_bytes": 1000}))


def run_mix(gw):
    """5 GET 200 on a, 3 POST 201 on b, 2 GET 404 (no route), 1 POST 413 on a: four
    client connections."""
    with Client(gw.port) as c:
        for i in range(5):
            assert c.request("GET", f"/a/x{i}").status == 200
    with Client(gw.port) as c:
        for i in range(3):
            assert c.request("POST", f"/b/y{i}?status=201", body=b"hello").status == 201
    with Client(gw.port) as c:
        for i in range(2):
            assert c.request("GET", f"/nowhere{i}").status == 404
    with Client(gw.port) as c:
        c.send(b"POST /a/big HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
        assert c.read_response().status == 413
        assert c.closed_by_peer(5)


def series(samples, name):
    return {tuple(sorted(s.labels.items())): s.value for s in prom.find(samples, name)}


def test_counts_after_a_known_request_mix(gw, upstream):
    # the harness's readiness probe connected to the listener: let the gateway account
    # for it before taking the baseline
    time.sleep(0.3)
    before = prom.wait_value(gw, "gateway_connections_active", 0, timeout=5, listener="http")
    conns_before = prom.value(before, "gateway_connections_total", listener="http") or 0
    run_mix(gw)
    # the access log is written when a request is finished, after its metrics
    gw.wait_access_log(11)
    s = prom.wait_value(gw, "gateway_connections_active", 0, timeout=5, listener="http")

    assert series(s, "gateway_requests_total") == {
        (("code", "200"), ("method", "GET"), ("protocol", "HTTP/1.1"), ("route", "a")): 5,
        (("code", "201"), ("method", "POST"), ("protocol", "HTTP/1.1"), ("route", "b")): 3,
        (("code", "404"), ("method", "GET"), ("protocol", "HTTP/1.1"), ("route", "")): 2,
        (("code", "413"), ("method", "POST"), ("protocol", "HTTP/1.1"), ("route", "a")): 1,
    }
    assert series(s, "gateway_upstream_requests_total") == {
        (("code", "200"), ("upstream", "up")): 5,
        (("code", "201"), ("upstream", "up")): 3,
    }
    assert series(s, "gateway_request_rejected_total") == {
        (("reason", "no_route"), ("route", "")): 2,
        (("reason", "body_too_large"), ("route", "a")): 1,
    }
    assert prom.value(s, "gateway_request_duration_seconds_count", route="a") == 6
    assert prom.value(s, "gateway_request_duration_seconds_count", route="b") == 3
    assert prom.value(s, "gateway_request_duration_seconds_count", route="") == 2
    assert prom.value(s, "gateway_upstream_request_duration_seconds_count", upstream="up") == 8
    assert prom.value(s, "gateway_connections_total", listener="http") - conns_before == 4
    assert prom.value(s, "gateway_requests_in_flight") == 0
    assert prom.value(s, "gateway_upstream_connect_failures_total", upstream="up") in (None, 0)
    assert len(upstream.snapshot()) == 8, "the 404s and the 413 never reached the upstream"


def test_histograms_are_cumulative_and_end_at_count(gw):
    run_mix(gw)
    gw.wait_access_log(11)
    s = prom.scrape(gw)
    checked = 0
    for name, label in (("gateway_request_duration_seconds", "route"),
                        ("gateway_upstream_request_duration_seconds", "upstream")):
        for count in prom.find(s, name + "_count"):
            key = count.labels[label]
            buckets = [b for b in prom.find(s, name + "_bucket", **{label: key})]
            les = [b.labels["le"] for b in buckets]
            assert les[-1] == "+Inf" and [float(x) for x in les[:-1]] == \
                [float(x) for x in BUCKETS[:-1]], les
            values = [b.value for b in buckets]
            assert values == sorted(values), f"{name}{{{label}={key!r}}} not cumulative: {values}"
            assert values[-1] == count.value, f"+Inf bucket {values[-1]} != _count {count.value}"
            total = prom.value(s, name + "_sum", **{label: key})
            assert total is not None and 0 < total < count.value * 10
            checked += 1
    assert checked == 4  # routes a, b, "" and the upstream


def test_connections_active_while_open(gw):
    with Client(gw.port) as c1, Client(gw.port) as c2:
        assert c1.request("GET", "/a/1").status == 200
        assert c2.request("GET", "/a/2").status == 200
        s = prom.scrape(gw)
        assert prom.value(s, "gateway_connections_active", listener="http") == 2
    prom.wait_value(gw, "gateway_connections_active", 0, timeout=5, listener="http")


def test_in_flight_counts_a_request_being_served(gw):
    with Client(gw.port) as c:
        c.send(b"GET /a/slow?delay=800 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        assert prom.value(prom.scrape(gw), "gateway_requests_in_flight") == 1
        assert c.read_response().status == 200
    prom.wait_value(gw, "gateway_requests_in_flight", 0, timeout=5)


def test_every_spec_metric_has_help_and_type(gw):
    text = prom.scrape_text(gw)
    for name, kind in SPEC_METRICS.items():
        assert re.search(rf"^# HELP {name} \S", text, re.M), f"no HELP for {name}"
        assert re.search(rf"^# TYPE {name} {kind}$", text, re.M), f"no TYPE {kind} for {name}"


def test_build_info_and_process_metrics(gw):
    started = time.time()
    s = prom.scrape(gw)
    assert series(s, "gateway_build_info") == {(("version", version()),): 1}
    rss = prom.value(s, "process_resident_memory_bytes")
    assert 1 << 20 < rss < 1 << 32, rss
    assert prom.value(s, "process_virtual_memory_bytes") >= rss
    assert prom.value(s, "process_cpu_seconds_total") >= 0
    fds = prom.value(s, "process_open_fds")
    assert 3 <= fds <= prom.value(s, "process_max_fds")
    start = prom.value(s, "process_start_time_seconds")
    assert started - 120 < start <= time.time() + 1, (start, started)


def test_promtool_accepts_a_real_scrape_after_traffic(gw):
    run_mix(gw)
    with Client(gw.port) as c:
        assert c.request("GET", "/odd/1").status == 200
    gw.wait_access_log(12)
    promtool_check(prom.scrape_text(gw))


def test_label_values_are_escaped(gw):
    with Client(gw.port) as c:
        assert c.request("GET", "/odd/1").status == 200
    gw.wait_access_log(1)
    text = prom.scrape_text(gw)
    assert 'route="we\\"ird\\\\route"' in text, [l for l in text.splitlines() if "ird" in l]
    s = prom.parse(text)
    assert prom.value(s, "gateway_requests_total", route=ODD_ROUTE, method="GET", code="200",
                      protocol="HTTP/1.1") == 1
    assert prom.value(s, "gateway_request_duration_seconds_count", route=ODD_ROUTE) == 1
    promtool_check(text)


def test_metrics_answers_head_and_refuses_post(gw):
    with Client(gw.admin_port) as c:
        r = c.request("HEAD", "/metrics")
        assert r.status == 200 and r.header("content-type").startswith("text/plain")
        r = c.request("POST", "/metrics", body=b"x")
        assert r.status >= 400


# -- health endpoints -------------------------------------------------------------------


@pytest.fixture
def gw_two_upstreams(gateway_factory, upstream_factory):
    plain, checked = upstream_factory("plain"), upstream_factory("checked")
    g = gateway_factory(gateway_config(
        upstreams={"plain": [plain],
                   "checked": {"endpoints": [checked],
                               "health_check": {"path": "/healthz", "interval": "200ms",
                                                "timeout": "100ms"}}},
        routes=[{"name": "p", "match": {"path_prefix": "/p"}, "upstream": "plain"},
                {"name": "c", "match": {"path_prefix": "/c"}, "upstream": "checked"}]))
    return g, plain, checked


def admin_json(gw, path):
    with Client(gw.admin_port) as c:
        r = c.request("GET", path)
    assert r.header("content-type") == "application/json", r
    return r.status, r.json()


def test_health_document_shape(gw_two_upstreams):
    gw, plain, checked = gw_two_upstreams
    deadline = time.monotonic() + 5
    while True:
        status, doc = admin_json(gw, "/health")
        ep = doc["checks"]["upstream:checked"]["endpoints"][0]
        if ep["last_checked"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status == 200
    assert set(doc) == {"status", "version", "uptime_seconds", "checks"}, doc
    assert doc["status"] == "healthy"
    assert doc["version"] == version()
    assert isinstance(doc["uptime_seconds"], (int, float)) and 0 <= doc["uptime_seconds"] < 120
    assert set(doc["checks"]) == {"upstream:plain", "upstream:checked"}, doc["checks"]
    for name, u in (("plain", plain), ("checked", checked)):
        check = doc["checks"][f"upstream:{name}"]
        assert set(check) == {"status", "endpoints"}, check
        assert check["status"] == "healthy"
        assert len(check["endpoints"]) == 1
        ep = check["endpoints"][0]
        assert set(ep) == {"address", "status", "latency_ms", "last_checked"}, ep
        assert ep["address"] == u.address
    plain_ep = doc["checks"]["upstream:plain"]["endpoints"][0]
    assert plain_ep["status"] == "healthy", plain_ep  # counted healthy, never probed:
    assert plain_ep["latency_ms"] is None and plain_ep["last_checked"] is None, plain_ep
    checked_ep = doc["checks"]["upstream:checked"]["endpoints"][0]
    assert checked_ep["status"] == "healthy"
    assert isinstance(checked_ep["latency_ms"], (int, float)) and checked_ep["latency_ms"] >= 0
    assert TIMESTAMP.match(checked_ep["last_checked"]), checked_ep
    time.sleep(1.1)
    later = admin_json(gw, "/health")[1]
    assert later["uptime_seconds"] >= doc["uptime_seconds"] + 1


def test_health_probes(gw_two_upstreams):
    gw = gw_two_upstreams[0]
    assert admin_json(gw, "/health/live") == (200, {"status": "alive"})
    assert admin_json(gw, "/health/startup") == (200, {"status": "started"})
    assert admin_json(gw, "/health/ready") == (200, {"status": "ready"})
    status, body = admin_get(gw, "/health/nope")
    assert status == 404
    # Admin errors are the JSON of SPEC §3 too, request_id included.
    error = json.loads(body)
    assert error["error_code"] == "NOT_FOUND" and error["request_id"], error


def test_health_endpoints_are_not_on_the_public_listener(gw_two_upstreams):
    gw = gw_two_upstreams[0]
    with Client(gw.port) as c:
        for path in ("/health", "/health/ready", "/metrics"):
            r = c.request("GET", path)
            assert r.status == 404, (path, r)
