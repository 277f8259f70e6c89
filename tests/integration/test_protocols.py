"""The same requests over HTTP/1.1 and HTTP/2 (SPEC §7: "each stream is one request through
the same router, filters, upstreams, limits, errors, metrics and logs"). One gateway, one
listener with `h2c: true` carrying both; every case runs once per protocol and must give
the same answer, the same upstream request and the same access-log line but for
`protocol`."""

import hashlib
import json

import pytest

import prom
from client import Client
from h2client import H2Client
from harness import gateway_config, refusing_address, wait_until

PROTOCOLS = ["HTTP/1.1", "HTTP/2"]
APP = "https://app.example.com"
KEY = "partner-secret-key-1"


@pytest.fixture
def gw(gateway_factory, upstream, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text(f"acme {hashlib.sha256(KEY.encode()).hexdigest()}\n")
    cfg = gateway_config(
        upstreams={"up": [upstream], "down": [refusing_address()]},
        api_keys=[{"name": "partners", "header": "X-API-Key", "keys_file": str(keys)}],
        default_filters={
            "request_id": {}, "security_headers": {},
            "cors": {"allow_origins": [APP], "allow_methods": ["GET", "POST"], "max_age": "10m"},
            "body_limit": {"max_bytes": "1KiB"}},
        routes=[
            {"name": "limited", "match": {"path_prefix": "/limited"}, "upstream": "up",
             "filters": {"rate_limit": {"limits": [{"key": "client_ip", "requests": 2, "per": "1h"}]}}},
            {"name": "partners", "match": {"path_prefix": "/partners"}, "upstream": "up",
             "filters": {"api_key": {"set": "partners"}}},
            {"name": "down", "match": {"path_prefix": "/down"}, "upstream": "down"},
            {"name": "api", "match": {"path_prefix": "/api"}, "upstream": "up", "strip_prefix": "/api"},
        ])
    cfg["listeners"] = [{"name": "both", "address": "127.0.0.1:@PORT@", "h2c": True}]
    cfg["admin"] = {"address": "127.0.0.1:@ADMIN_PORT@"}
    return gateway_factory(json.dumps(cfg))


class Answer:
    def __init__(self, status, headers, body):
        self.status, self.body = status, bytes(body)
        self.headers = {n.lower(): v for n, v in headers}

    def json(self):
        return json.loads(self.body)


def send(gw, protocol, method, path, headers=(), body=b""):
    if protocol == "HTTP/2":
        with H2Client(gw.port) as c:
            r = c.request(method, path, headers=[(n.lower(), v) for n, v in headers], body=body)
            assert r.reset_code is None, r
            return Answer(r.status, r.headers, r.body)
    with Client(gw.port) as c:
        r = c.request(method, path, headers=dict(headers), body=body)
        return Answer(r.status, r.headers, r.body)


@pytest.fixture(params=PROTOCOLS)
def protocol(request):
    return request.param


def logged(gw, request_id):
    return gw.find_access(lambda e: e.get("request_id") == request_id)


def test_proxied_request(gw, upstream, protocol):
    a = send(gw, protocol, "POST", "/api/items?x=1", [("Content-Type", "text/plain"), ("X-Request-ID", "req-proxied")],
             b"0123456789")
    assert a.status == 200
    doc = a.json()
    assert doc["target"] == "/items?x=1" and doc["body_len"] == 10
    assert a.headers["x-request-id"] == "req-proxied"
    assert a.headers["x-content-type-options"] == "nosniff"
    seen = upstream.last()
    assert seen.header("x-request-id") == "req-proxied" and seen.header("host") == "example.test"
    e = logged(gw, "req-proxied")
    assert (e["protocol"], e["route"], e["status"], e["bytes_in"] >= 10) == (protocol, "api", 200, True)
    wait_until(lambda: prom.total(prom.scrape(gw), "gateway_requests_total", route="api", protocol=protocol) == 1,
               what="counted with its protocol")


@pytest.mark.parametrize("case", ["no_route", "body_limit", "rate_limit", "api_key", "upstream_down"])
def test_gateway_answers_are_the_same(gw, upstream, protocol, case):
    status, code = {"no_route": (404, "NOT_FOUND"), "body_limit": (413, "PAYLOAD_TOO_LARGE"),
                    "rate_limit": (429, "RATE_LIMITED"), "api_key": (401, "UNAUTHORIZED"),
                    "upstream_down": (503, "SERVICE_UNAVAILABLE")}[case]
    if case == "no_route":
        a = send(gw, protocol, "GET", "/nowhere")
    elif case == "body_limit":
        a = send(gw, protocol, "POST", "/api/big", [("Content-Length", "2000")], b"x" * 2000)
    elif case == "rate_limit":
        for _ in range(2):
            assert send(gw, protocol, "GET", "/limited/x").status == 200
        a = send(gw, protocol, "GET", "/limited/x")
        assert int(a.headers["retry-after"]) > 0
    elif case == "api_key":
        a = send(gw, protocol, "GET", "/partners/x", [("X-API-Key", "wrong")])
        assert send(gw, protocol, "GET", "/partners/x", [("X-API-Key", KEY)]).status == 200
    else:
        a = send(gw, protocol, "GET", "/down/x")
    assert a.status == status, (a.status, a.body)
    body = a.json()
    assert body["error_code"] == code and a.headers["content-type"] == "application/json"
    assert a.headers["x-request-id"] == body["request_id"]
    assert a.headers["x-frame-options"] == "DENY"
    e = logged(gw, body["request_id"])
    assert (e["protocol"], e["status"], e["error_code"]) == (protocol, status, code)
    if case != "api_key":
        assert all(q.path != "/big" for q in upstream.snapshot())


def test_cors_preflight_is_answered_by_the_gateway(gw, upstream, protocol):
    a = send(gw, protocol, "OPTIONS", "/api/x", [("Origin", APP), ("Access-Control-Request-Method", "POST")])
    assert a.status == 204
    assert a.headers["access-control-allow-origin"] == APP
    assert "POST" in a.headers["access-control-allow-methods"]
    assert upstream.snapshot() == []


def test_upstream_status_and_headers_pass_through(gw, upstream, protocol):
    a = send(gw, protocol, "GET", "/api/x?status=201&hdr=X-Custom:yes&body=made")
    assert (a.status, a.headers["x-custom"], a.body) == (201, "yes", b"made")
    a = send(gw, protocol, "HEAD", "/api/x?size=5000")
    assert a.status == 200 and a.body == b"" and a.headers["content-length"] == "5000"
    a = send(gw, protocol, "GET", "/api/x?status=204")
    assert a.status == 204 and a.body == b""
