"""SPEC §10 tracing: W3C Trace Context through the gateway, and OTLP/HTTP export to a
collector stand-in (otlp_collector.py) that decodes every body with python3-protobuf and
message definitions of its own (an encoder of ours checked by an independent decoder)."""

import http.client
import json
import os
import signal
import ssl
import subprocess
import time

import pytest

import prom
from harness import SOURCE_DIR, is_sanitized_build, refusing_address, simple_config, wait_until
from otlp_collector import Collector, compile_otlp

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def otlp(tmp_path_factory):
    return compile_otlp(tmp_path_factory.mktemp("otlp"))


@pytest.fixture
def collector_factory(otlp):
    made = []

    def make(**kw):
        c = Collector(otlp, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


def tracing(endpoint, ratio=1.0, parent_based=True, max_spans=512, max_delay="100ms",
            queue=1000, timeout="1s", headers=None):
    otlp = {"endpoint": endpoint, "timeout": timeout, "queue": queue,
            "batch": {"max_spans": max_spans, "max_delay": max_delay}}
    if headers:
        otlp["headers"] = headers
    return {"service_name": "edge-test", "sampler": {"ratio": ratio},
            "parent_based": parent_based, "otlp": otlp}


def config(upstream, **top):
    """simple_config with request_id, so that a response names its access-log line."""
    return simple_config(upstream, default_filters={"request_id": {}}, **top)


def get(gw, path, headers=None, timeout=10.0):
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        r.read()
        return r
    finally:
        c.close()


def attributes(span):
    out = {}
    for kv in span.attributes:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind)
    return out


def traceparent_parts(value):
    version, trace, span, flags = value.split("-")
    assert version == "00" and len(trace) == 32 and len(span) == 16 and len(flags) == 2, value
    assert trace == trace.lower() and span == span.lower()
    assert int(trace, 16) != 0 and int(span, 16) != 0
    return trace, span, flags


def test_a_callers_trace_is_continued_to_the_upstream_and_the_collector(
        upstream, gateway_factory, collector_factory, otlp):
    col = collector_factory()
    cfg = config(upstream, tracing=tracing(col.endpoint, ratio=0.0,
                                                  headers={"X-Tenant": "t-1"}))
    gw = gateway_factory(cfg)
    before_ns = time.time_ns()
    r = get(gw, "/api/items?x=1", {"traceparent": f"00-{TRACE}-{PARENT}-01",
                                   "tracestate": "vendor=abc,other=1",
                                   "User-Agent": "trace-test/1.0", "Host": "shop.example:8443"})
    after_ns = time.time_ns()
    assert r.status == 200
    request_id = r.getheader("X-Request-ID")
    up = upstream.last()
    trace, span_id, flags = traceparent_parts(up.header("traceparent"))
    assert trace == TRACE and flags == "01"
    assert span_id != PARENT
    assert up.header_all("traceparent") == [up.header("traceparent")]
    assert up.header("tracestate") == "vendor=abc,other=1"

    span = col.span_of(TRACE)
    assert span.span_id.hex() == span_id
    assert span.parent_span_id.hex() == PARENT
    assert span.trace_state == "vendor=abc,other=1"
    assert span.kind == otlp.Span.SPAN_KIND_SERVER
    assert span.name == "GET api"
    # The span ends when the gateway is done with the request, a little after the client
    # may have read the whole response.
    assert before_ns <= span.start_time_unix_nano <= span.end_time_unix_nano
    assert span.start_time_unix_nano <= after_ns < span.end_time_unix_nano + 1_000_000_000
    assert span.status.code == otlp.Status.STATUS_CODE_UNSET
    assert span.flags & 0xff == 0x01
    assert attributes(span) == {
        "http.request.method": "GET", "url.path": "/api/items", "url.scheme": "http",
        "http.route": "api", "http.response.status_code": 200,
        "server.address": "shop.example", "client.address": "127.0.0.1",
        "user_agent.original": "trace-test/1.0", "network.protocol.version": "1.1",
        "gateway.request_id": request_id, "gateway.upstream": "up"}

    events = [(e.name, {kv.key: kv.value.string_value for kv in e.attributes}, e.time_unix_nano)
              for e in span.events]
    assert [(n, a) for n, a, _ in events] == [
        ("upstream request", {}),
        ("upstream response", {"gateway.upstream.endpoint": upstream.address})]
    assert (span.start_time_unix_nano <= events[0][2] <= events[1][2]
            <= span.end_time_unix_nano)

    _, path, headers, request = col.posts[0]
    assert path == "/v1/traces"
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["X-Tenant"] == "t-1"
    resource = {kv.key: kv.value.string_value for kv in request.resource_spans[0].resource.attributes}
    assert resource == {"service.name": "edge-test"}
    assert request.resource_spans[0].scope_spans[0].scope.name == "gateway"

    log = gw.find_access(lambda e: e.get("request_id") == request_id)
    assert log["trace_id"] == TRACE and log["span_id"] == span_id


@pytest.mark.parametrize("bad", [
    f"ff-{TRACE}-{PARENT}-01",              # version ff
    f"0g-{TRACE}-{PARENT}-01",              # not hex
    f"00-{TRACE.upper()}-{PARENT}-01",      # upper case
    f"00-{'0' * 32}-{PARENT}-01",           # all-zero trace id
    f"00-{TRACE}-{'0' * 16}-01",            # all-zero parent id
    f"00-{TRACE[1:]}-{PARENT}-01",          # short trace id
    f"00-{TRACE}-{PARENT}0-01",             # long parent id
    f"00-{TRACE}-{PARENT}-1",               # short flags
    f"00-{TRACE}-{PARENT}-01-extra",        # version 00 with another field
    f"cc-{TRACE}-{PARENT}-01.future",       # a later version whose next field lacks its '-'
    None,                                   # no traceparent at all
])
def test_an_invalid_or_missing_traceparent_starts_a_new_trace(
        bad, upstream, gateway_factory, collector_factory):
    col = collector_factory()
    gw = gateway_factory(config(upstream, tracing=tracing(col.endpoint, ratio=1.0)))
    headers = {"tracestate": "vendor=abc"}
    if bad is not None:
        headers["traceparent"] = bad
    assert get(gw, "/x", headers).status == 200
    up = upstream.last()
    trace, span_id, flags = traceparent_parts(up.header("traceparent"))
    assert trace != TRACE
    assert flags == "01"  # sampled by the ratio
    assert not up.has_header("tracestate")  # it belonged to the trace that was refused
    span = col.span_of(trace)
    assert span.span_id.hex() == span_id
    assert span.parent_span_id == b""
    assert span.trace_state == ""


def test_a_later_version_with_more_fields_is_continued(upstream, gateway_factory, collector_factory):
    col = collector_factory()
    gw = gateway_factory(config(upstream, tracing=tracing(col.endpoint, ratio=0.0)))
    assert get(gw, "/x", {"traceparent": f"cc-{TRACE}-{PARENT}-01-what-the-future-will-be-like"}).status == 200
    trace, span_id, _ = traceparent_parts(upstream.last().header("traceparent"))
    assert trace == TRACE
    assert col.span_of(TRACE).parent_span_id.hex() == PARENT


def test_two_traceparents_start_a_new_trace(upstream, gateway_factory, collector_factory):
    col = collector_factory()
    gw = gateway_factory(config(upstream, tracing=tracing(col.endpoint, ratio=1.0)))
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    c.putrequest("GET", "/x")
    c.putheader("traceparent", f"00-{TRACE}-{PARENT}-01")
    c.putheader("traceparent", f"00-{'1' * 32}-{PARENT}-01")
    c.endheaders()
    assert c.getresponse().status == 200
    c.close()
    up = upstream.last()
    assert len(up.header_all("traceparent")) == 1
    trace, _, _ = traceparent_parts(up.header("traceparent"))
    assert trace not in (TRACE, "1" * 32)


def test_parent_based_sampling_follows_the_callers_flag(upstream, gateway_factory, collector_factory):
    col = collector_factory()
    # Ratio 1: only the caller's "not sampled" can keep these spans out.
    gw = gateway_factory(config(upstream, tracing=tracing(col.endpoint, ratio=1.0)))
    unsampled = "a" * 32
    assert get(gw, "/x", {"traceparent": f"00-{unsampled}-{PARENT}-00"}).status == 200
    trace, span_id, flags = traceparent_parts(upstream.last().header("traceparent"))
    assert (trace, flags) == (unsampled, "00") and span_id != PARENT
    # A sampled request after it: once its span is in, the unsampled one would be too.
    assert get(gw, "/x", {"traceparent": f"00-{TRACE}-{PARENT}-01"}).status == 200
    col.span_of(TRACE)
    time.sleep(0.3)
    assert [s for s in col.spans() if s.trace_id.hex() == unsampled] == []


def test_without_parent_based_the_ratio_decides(upstream, gateway_factory, collector_factory):
    col = collector_factory()
    gw = gateway_factory(config(upstream, tracing=tracing(col.endpoint, ratio=0.0,
                                                                 parent_based=False)))
    assert get(gw, "/x", {"traceparent": f"00-{TRACE}-{PARENT}-01"}).status == 200
    trace, _, flags = traceparent_parts(upstream.last().header("traceparent"))
    assert (trace, flags) == (TRACE, "00")  # the trace continues, unsampled
    time.sleep(0.5)
    assert col.spans() == []
    assert prom.total(prom.scrape(gw), "gateway_tracing_spans_exported_total") == 0


def test_error_status_for_the_gateways_answers_and_5xx(upstream, gateway_factory, collector_factory, otlp):
    col = collector_factory()
    cfg = config(upstream, tracing=tracing(col.endpoint, ratio=1.0))
    cfg["upstreams"].append({"name": "dead", "endpoints": [refusing_address()]})
    cfg["routes"].insert(0, {"name": "dead", "match": {"path_prefix": "/dead"}, "upstream": "dead"})
    cfg["routes"] = [r for r in cfg["routes"] if r["name"] != "default"]
    gw = gateway_factory(cfg)
    cases = {
        "/nowhere": (404, "NOT_FOUND", True),            # no route: the gateway answers
        "/dead/x": (503, "SERVICE_UNAVAILABLE", True),   # the upstream refuses connections
        "/api/x?garbage=1": (502, "BAD_GATEWAY", True),  # it answers what is not HTTP
        "/api/x?status=503": (503, None, True),          # the upstream's own 5xx
        "/api/x?status=404": (404, None, False),         # the upstream's 4xx is not an error
        "/api/x": (200, None, False),
    }
    traces = {}
    for path, (status, _, _) in cases.items():
        r = get(gw, path)
        assert r.status == status, path
        log = gw.find_access(lambda e, rid=r.getheader("X-Request-ID"): e.get("request_id") == rid)
        traces[path] = log["trace_id"]
    for path, (status, error_code, error) in cases.items():
        span = col.span_of(traces[path])
        attrs = attributes(span)
        assert attrs["http.response.status_code"] == status, path
        assert attrs.get("gateway.error_code") == error_code, path
        expected = otlp.Status.STATUS_CODE_ERROR if error else otlp.Status.STATUS_CODE_UNSET
        assert span.status.code == expected, path
        assert span.status.message == (error_code or ""), path
    assert [e.name for e in col.span_of(traces["/nowhere"]).events] == []  # never sent
    assert [e.name for e in col.span_of(traces["/api/x?garbage=1"]).events] == [
        "upstream request", "upstream failure"]
    assert [e.name for e in col.span_of(traces["/api/x?status=503"]).events] == [
        "upstream request", "upstream response"]
    assert "http.route" not in attributes(col.span_of(traces["/nowhere"]))
    assert col.span_of(traces["/nowhere"]).name == "GET"
    assert attributes(col.span_of(traces["/dead/x"]))["gateway.upstream"] == "dead"


def test_spans_go_in_batches_of_max_spans_or_after_max_delay(upstream, gateway_factory, collector_factory):
    col = collector_factory()
    gw = gateway_factory(config(upstream, tracing=tracing(col.endpoint, ratio=1.0, max_spans=5,
                                                                 max_delay="3s")))
    start = time.monotonic()
    for _ in range(12):
        assert get(gw, "/x").status == 200
    # Two full batches go at once; the last two spans wait for the delay.
    wait_until(lambda: len(col.posts) >= 2, timeout=2.5, what="two full batches")
    assert time.monotonic() - start < 2.5
    with col.lock:
        sizes = [len(req.resource_spans[0].scope_spans[0].spans) for _, _, _, req in col.posts]
    assert sizes == [5, 5]
    wait_until(lambda: len(col.posts) >= 3, timeout=6, what="the partial batch")
    assert len(col.posts[2][3].resource_spans[0].scope_spans[0].spans) == 2
    assert col.posts[2][0] - start >= 2.0
    assert len({s.span_id for s in col.spans()}) == 12
    samples = prom.scrape(gw)
    assert prom.total(samples, "gateway_tracing_spans_exported_total") == 12
    assert prom.value(samples, "gateway_tracing_export_requests_total", result="success") == 3


def test_retry_after_from_the_collector_is_honoured(upstream, gateway_factory, collector_factory):
    col = collector_factory(answers=[(503, {"Retry-After": "2"}), (429, {"Retry-After": "1"})])
    gw = gateway_factory(config(upstream, tracing=tracing(col.endpoint, ratio=1.0)))
    assert get(gw, "/x").status == 200
    wait_until(lambda: len(col.posts) >= 3, timeout=10, what="two retries")
    times = [t for t, _, _, _ in col.posts]
    assert times[1] - times[0] >= 1.9  # Retry-After: 2
    assert 0.9 <= times[2] - times[1] < 2.9  # Retry-After: 1
    ids = [[s.span_id for s in req.resource_spans[0].scope_spans[0].spans] for _, _, _, req in col.posts]
    assert ids[0] == ids[1] == ids[2] and len(ids[0]) == 1
    samples = prom.wait_value(gw, "gateway_tracing_spans_exported_total", 1)
    samples = prom.scrape(gw)
    assert prom.value(samples, "gateway_tracing_export_requests_total", result="retry") == 2
    assert prom.value(samples, "gateway_tracing_export_requests_total", result="success") == 1
    assert prom.total(samples, "gateway_tracing_spans_dropped_total") == 0


def batch_of_five(gw, col, posts):
    """Five requests (one full batch of max_spans=5), then waits for its post."""
    for _ in range(5):
        assert get(gw, "/x").status == 200
    wait_until(lambda: len(col.posts) >= posts, timeout=10, what=f"post {posts}")
    prom.wait_value(gw, "gateway_tracing_spans_exported_total", 5 * posts)


def test_one_collector_connection_serves_batch_after_batch(upstream, gateway_factory, collector_factory):
    col = collector_factory()
    gw = gateway_factory(config(upstream, tracing=tracing(col.endpoint, ratio=1.0, max_spans=5,
                                                          max_delay="1h")))
    for n in range(1, 5):
        batch_of_five(gw, col, n)
    assert len({s.span_id for s in col.spans()}) == 20
    assert col.connections == 1
    assert all(headers.get("Connection") is None for _, _, headers, _ in col.posts)


def test_a_collector_closing_the_connection_loses_no_span(upstream, gateway_factory, collector_factory):
    # Batch 1 is answered and its connection closed (seen while idle), batch 2 is answered
    # with Connection: close, batch 3's connection is closed with no answer (a failure the
    # exporter retries on a new connection), batch 4 goes on the connection of the retry.
    col = collector_factory(closes=["close", "header", "drop"])
    gw = gateway_factory(config(upstream, tracing=tracing(col.endpoint, ratio=1.0, max_spans=5,
                                                          max_delay="1h")))
    for n in range(1, 5):
        batch_of_five(gw, col, n)
        time.sleep(0.2)  # the collector's FIN reaches the exporter before the next batch
    assert len({s.span_id for s in col.spans()}) == 20
    assert col.connections == 4
    samples = prom.scrape(gw)
    assert prom.value(samples, "gateway_tracing_export_requests_total", result="retry") == 1
    assert prom.value(samples, "gateway_tracing_export_requests_total", result="success") == 4
    assert prom.total(samples, "gateway_tracing_spans_dropped_total") == 0


def latencies(gw, n, path="/x"):
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    out = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            out.append(time.perf_counter() - t)
            assert r.status == 200
    finally:
        c.close()
    out.sort()
    return out


def p99(values):
    return values[int(len(values) * 0.99) - 1]


@pytest.mark.parametrize("collector_kind", ["dead", "slow"])
def test_a_dead_or_slow_collector_slows_no_request_and_grows_no_memory(
        collector_kind, upstream, gateway_factory, collector_factory):
    baseline_gw = gateway_factory(config(upstream), name="baseline")
    latencies(baseline_gw, 200)
    baseline = p99(latencies(baseline_gw, 1000))
    baseline_gw.stop()

    if collector_kind == "dead":
        endpoint = f"http://{refusing_address()}/v1/traces"
    else:
        endpoint = collector_factory(delay=30).endpoint  # answers long after the timeout
    cfg = config(upstream, tracing=tracing(endpoint, ratio=1.0, max_spans=10,
                                                  max_delay="20ms", queue=50, timeout="200ms"))
    gw = gateway_factory(cfg)
    latencies(gw, 200)
    rss_before = gw.rss_kib()
    traced = p99(latencies(gw, 3000))
    rss_after = gw.rss_kib()
    samples = prom.scrape(gw)
    dropped = prom.value(samples, "gateway_tracing_spans_dropped_total", reason="queue_full")
    # 3,200 sampled spans, a queue of 50 and exports that all fail: most were dropped.
    assert dropped >= 3000, dropped
    assert prom.value(samples, "gateway_tracing_export_requests_total", result="retry") >= 1
    assert prom.total(samples, "gateway_tracing_spans_exported_total") == 0
    slack = 10 if is_sanitized_build() else 1
    assert traced < max(3 * baseline, 0.005) * slack, (traced, baseline)
    if not is_sanitized_build():  # ASan's quarantine keeps freed memory resident
        assert rss_after - rss_before < 4096, (rss_before, rss_after)


def test_spans_still_queued_are_sent_at_a_graceful_stop(upstream, gateway_factory, collector_factory):
    col = collector_factory()
    # A delay no test waits for: only the stop can send these.
    gw = gateway_factory(config(upstream, tracing=tracing(col.endpoint, ratio=1.0, max_spans=500,
                                                          max_delay="1h")))
    for _ in range(7):
        assert get(gw, "/x").status == 200
    time.sleep(0.3)
    assert col.posts == []
    assert gw.stop() == 0
    assert len(col.spans()) == 7


def test_a_dead_collector_delays_the_exit_by_one_timeout_at_most(upstream, gateway_factory):
    endpoint = f"http://{refusing_address()}/v1/traces"
    gw = gateway_factory(config(upstream, tracing=tracing(endpoint, ratio=1.0, max_delay="1h",
                                                          timeout="300ms")))
    for _ in range(5):
        assert get(gw, "/x").status == 200
    start = time.monotonic()
    assert gw.stop() == 0
    assert time.monotonic() - start < 3


def test_a_trace_continues_over_http2_too(upstream, gateway_factory, collector_factory):
    from h2client import H2Client
    col = collector_factory()
    cfg = config(upstream, tracing=tracing(col.endpoint, ratio=0.0))
    cfg["listeners"] = [{"name": "both", "address": "127.0.0.1:@PORT@", "h2c": True}]
    cfg["admin"] = {"address": "127.0.0.1:@ADMIN_PORT@"}
    gw = gateway_factory(json.dumps(cfg))
    with H2Client(gw.port) as c:
        r = c.request("GET", "/api/h2", headers=[("traceparent", f"00-{TRACE}-{PARENT}-01"),
                                                  ("tracestate", "v=1"), ("user-agent", "h2-test")])
    assert r.status == 200
    up = upstream.last()
    trace, span_id, flags = traceparent_parts(up.header("traceparent"))
    assert (trace, flags) == (TRACE, "01") and span_id != PARENT
    assert up.header("tracestate") == "v=1"
    span = col.span_of(TRACE)
    assert span.span_id.hex() == span_id and span.parent_span_id.hex() == PARENT
    attrs = attributes(span)
    assert attrs["network.protocol.version"] == "2"
    assert attrs["user_agent.original"] == "h2-test"
    assert attrs["url.path"] == "/api/h2" and attrs["http.route"] == "api"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    subprocess.run([str(SOURCE_DIR / "conf" / "make-test-certs.sh"), str(d)], check=True,
                   capture_output=True, timeout=120)
    return d


@pytest.mark.parametrize("trusted", [True, False])
def test_an_https_collector_is_verified(trusted, certs, upstream, gateway_factory, collector_factory):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs / "server.crt", certs / "server.key")
    col = collector_factory(tls=ctx)
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    if trusted:
        env["SSL_CERT_FILE"] = str(certs / "ca.crt")
    gw = gateway_factory(config(upstream, tracing=tracing(col.endpoint, ratio=1.0, timeout="500ms")),
                         env=env)
    assert get(gw, "/x", {"traceparent": f"00-{TRACE}-{PARENT}-01"}).status == 200
    if trusted:
        col.span_of(TRACE)
        # Batch after batch (max_delay 100ms) over the one TLS connection.
        for n in (2, 3):
            assert get(gw, "/x").status == 200
            wait_until(lambda: len(col.posts) >= n, timeout=10, what=f"post {n}")
        assert col.connections == 1
        return
    # Refused before any byte of a span left: retried, then given up and counted.
    prom.wait_value(gw, "gateway_tracing_spans_dropped_total", 1, timeout=30, reason="export_failed")
    assert col.posts == []
    assert "trace export failed" in gw.app_log_text()


def reload(gw, cfg):
    before = prom.value(prom.scrape(gw), "gateway_config_reloads_total", result="success")
    gw.write_config(cfg)
    gw.signal(signal.SIGHUP)
    prom.wait_value(gw, "gateway_config_reloads_total", before + 1, result="success")


def test_a_reload_moves_export_to_a_new_collector_and_can_turn_tracing_off(
        upstream, gateway_factory, collector_factory):
    first, second = collector_factory(), collector_factory()
    gw = gateway_factory(config(upstream, tracing=tracing(first.endpoint, ratio=1.0)))
    assert get(gw, "/x", {"traceparent": f"00-{TRACE}-{PARENT}-01"}).status == 200
    first.span_of(TRACE)
    reload(gw, config(upstream, tracing=tracing(second.endpoint, ratio=1.0)))
    other = "b" * 32
    assert get(gw, "/x", {"traceparent": f"00-{other}-{PARENT}-01"}).status == 200
    second.span_of(other)
    assert [s for s in first.spans() if s.trace_id.hex() == other] == []
    reload(gw, config(upstream))
    sent = f"00-{'c' * 32}-{PARENT}-01"
    assert get(gw, "/x", {"traceparent": sent}).status == 200
    assert upstream.last().header_all("traceparent") == [sent]  # untouched again
    time.sleep(0.5)
    assert len(first.spans()) + len(second.spans()) == 2


def test_a_reload_can_turn_tracing_on(upstream, gateway_factory, collector_factory):
    col = collector_factory()
    gw = gateway_factory(config(upstream))
    reload(gw, config(upstream, tracing=tracing(col.endpoint, ratio=1.0)))
    assert get(gw, "/x", {"traceparent": f"00-{TRACE}-{PARENT}-01"}).status == 200
    assert col.span_of(TRACE).parent_span_id.hex() == PARENT
    assert prom.value(prom.scrape(gw), "gateway_tracing_spans_dropped_total", reason="queue_full") == 0


def test_without_tracing_trace_context_passes_untouched(upstream, gateway_factory):
    gw = gateway_factory(config(upstream))
    odd = f"00-{TRACE.upper()}-{PARENT}-01"
    r = get(gw, "/x", {"traceparent": odd, "tracestate": "a=b"})
    assert r.status == 200
    up = upstream.last()
    assert up.header_all("traceparent") == [odd]
    assert up.header("tracestate") == "a=b"
    log = gw.find_access(lambda e: e.get("request_id") == r.getheader("X-Request-ID"))
    assert "trace_id" not in log and "span_id" not in log
    assert prom.find(prom.scrape(gw), "gateway_tracing_spans_dropped_total") == []


def test_metrics_pass_promtool(upstream, gateway_factory, collector_factory):
    import shutil
    if not shutil.which("promtool"):
        pytest.skip("promtool not installed")
    col = collector_factory()
    gw = gateway_factory(config(upstream, tracing=tracing(col.endpoint, ratio=1.0)))
    get(gw, "/x")
    prom.wait_value(gw, "gateway_tracing_spans_exported_total", 1)
    text = prom.scrape_text(gw)
    for name in ("gateway_tracing_spans_dropped_total", "gateway_tracing_spans_exported_total",
                 "gateway_tracing_export_requests_total"):
        assert f"# TYPE {name} counter" in text
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
