"""The filter chain through the real binary (SPEC §2 Filters, CORS, Security headers; §3):
reference.yaml's default_filters (request_id, security_headers, cors, body_limit) with
routes overriding them or switching one `off`:

- every default security header on a proxied 200 and on the gateway's own 400/403/404/413
  and 204 preflight answers; HSTS only with a trusted X-Forwarded-Proto: https;
- X-Request-ID accepted or generated, forwarded, echoed, equal to the error body's
  request_id and the access log's;
- CORS preflights answered by the gateway and never forwarded; actual requests decorated,
  the upstream's Access-Control-* replaced; a route with `cors: off`;
- per-route body_limit: 413 from Content-Length before the body is read, from
  Expect: 100-continue, and as soon as a chunked body passes the limit;
- ip_access on the real client behind trusted_proxies (right-most untrusted
  X-Forwarded-For hop);
- the fixed chain order whatever the order in the file.
"""

import re
import time

import pytest

from client import Client, chunked_body
import prom
from harness import gateway_config

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

SPEC_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "X-XSS-Protection": "0",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
HSTS = "max-age=31536000; includeSubDomains"

APP = "https://app.example.com"
TENANT = "https://tenant-7.example.com"
EVIL = "https://evil-example.com"

# reference.yaml's default_filters, rate_limit left out (tests/integration/test_rate_limit.py).
REFERENCE_DEFAULTS = {
    "request_id": {},
    "security_headers": {},
    "cors": {
        "allow_origins": [APP, "~^https://[a-z0-9-]+\\.example\\.com$"],
        "allow_methods": ["GET", "POST", "PUT", "PATCH", "DELETE"],
        "allow_headers": ["Authorization", "Content-Type", "X-Request-ID"],
        "expose_headers": ["X-Request-ID"],
        "allow_credentials": True,
        "max_age": "10m",
    },
    "body_limit": {"max_bytes": "4KiB"},
}


def route(name, prefix, **extra):
    r = {"name": name, "match": {"path_prefix": prefix}, "upstream": "up"}
    r.update(extra)
    return r


@pytest.fixture
def gw(gateway_factory, upstream):
    return gateway_factory(gateway_config(
        upstreams={"up": [upstream]},
        limits={"max_body_bytes": "2KiB"},
        trusted_proxies=["127.0.0.1/32"],
        default_filters=REFERENCE_DEFAULTS,
        routes=[
            route("nocors", "/nocors", filters={"cors": "off"}),
            route("small", "/small", filters={"body_limit": {"max_bytes": 100}}),
            route("global", "/global", filters={"body_limit": "off"}),
            route("guarded", "/guarded", filters={"ip_access": {"deny": ["198.51.100.0/24"]}}),
            route("app", "/app"),
        ]))


def assert_security_headers(r, hsts=False):
    for name, value in SPEC_HEADERS.items():
        assert r.header_all(name) == [value], (name, r)
    if hsts:
        assert r.header_all("Strict-Transport-Security") == [HSTS], r
    else:
        assert not r.has_header("Strict-Transport-Security"), r
    assert not r.has_header("Server"), r
    assert not r.has_header("X-Powered-By"), r


def assert_error(r, status, code):
    """A SPEC §3 body whose request_id is the echoed X-Request-ID; returns that id."""
    assert r.status == status, r
    assert r.header("Content-Type") == "application/json", r
    body = r.json()
    assert body["error_code"] == code, body
    assert r.header_all("X-Request-ID") == [body["request_id"]], r
    return body["request_id"]


def access_entry(gw, request_id):
    return gw.find_access(lambda e: e.get("request_id") == request_id)


# -- security headers ----------------------------------------------------------------------

def test_every_default_security_header_on_a_proxied_200(gw, upstream):
    with Client(gw.port) as c:
        r = c.request("GET", "/app/x?hdr=Server:Apache/2.4.1&hdr=X-Powered-By:PHP/8.2"
                             "&hdr=X-Backend:kept")
    assert r.status == 200, r
    assert_security_headers(r)
    assert r.header("X-Backend") == "kept"
    assert UUID7.match(r.header("X-Request-ID")), r


def test_every_default_security_header_on_the_gateways_own_errors(gw, upstream):
    with Client(gw.port) as c:
        r404 = c.request("GET", "/nowhere")
        assert_error(r404, 404, "NOT_FOUND")
        assert_security_headers(r404)
    with Client(gw.port) as c:
        r403 = c.request("GET", "/guarded/x", headers={"X-Forwarded-For": "198.51.100.7"})
        assert_error(r403, 403, "FORBIDDEN")
        assert_security_headers(r403)
    with Client(gw.port) as c:
        r413 = c.request("POST", "/small/x", body=b"x" * 101)
        assert_error(r413, 413, "PAYLOAD_TOO_LARGE")
        assert_security_headers(r413)
    with Client(gw.port) as c:
        r400 = c.request("GET", "/../etc/passwd")
        assert_error(r400, 400, "BAD_REQUEST")
        assert_security_headers(r400)
    assert upstream.snapshot() == [], "none of these reached the upstream"


def test_hsts_only_with_a_trusted_forwarded_https(gw, upstream):
    # The tests connect from 127.0.0.1, a trusted proxy here.
    with Client(gw.port) as c:
        r = c.request("GET", "/app/x", headers={"X-Forwarded-Proto": "https"})
        assert_security_headers(r, hsts=True)
        e = c.request("GET", "/nowhere", headers={"X-Forwarded-Proto": "https"})
        assert e.status == 404
        assert_security_headers(e, hsts=True)
        plain = c.request("GET", "/app/x", headers={"X-Forwarded-Proto": "http"})
        assert_security_headers(plain, hsts=False)


def test_hsts_not_from_an_untrusted_client(gateway_factory, upstream):
    gw = gateway_factory(gateway_config(upstreams={"up": [upstream]},
                                        default_filters={"security_headers": {}},
                                        routes=[route("app", "/")]))
    with Client(gw.port) as c:
        r = c.request("GET", "/x", headers={"X-Forwarded-Proto": "https"})
    assert r.status == 200
    assert_security_headers(r, hsts=False)


# -- request id ----------------------------------------------------------------------------

def test_request_id_accepted_forwarded_echoed_and_logged(gw, upstream):
    with Client(gw.port) as c:
        r = c.request("GET", "/app/one", headers={"X-Request-ID": "trace-abc.DEF_123"})
    assert r.status == 200
    assert r.header_all("X-Request-ID") == ["trace-abc.DEF_123"]
    assert upstream.last().header_all("X-Request-ID") == ["trace-abc.DEF_123"]
    assert access_entry(gw, "trace-abc.DEF_123")["path"] == "/app/one"


@pytest.mark.parametrize("incoming", [None, "", "has space", "x" * 129, "semi;colon", "a/b"])
def test_request_id_generated_when_missing_or_invalid(gw, upstream, incoming):
    headers = {} if incoming is None else {"X-Request-ID": incoming}
    with Client(gw.port) as c:
        r = c.request("GET", "/app/gen", headers=headers)
    assert r.status == 200
    rid = r.header("X-Request-ID")
    assert UUID7.match(rid), (incoming, r)
    assert upstream.last().header_all("X-Request-ID") == [rid]
    assert access_entry(gw, rid)["path"] == "/app/gen"


def test_request_id_equals_error_body_and_access_log(gw, upstream):
    cases = [("GET", "/nowhere", 404, "NOT_FOUND", b""),
             ("POST", "/small/x", 413, "PAYLOAD_TOO_LARGE", b"y" * 500)]
    for method, path, status, code, body in cases:
        for incoming in ("client-id-" + code.lower(), None):
            headers = {"X-Request-ID": incoming} if incoming else {}
            with Client(gw.port) as c:
                r = c.request(method, path, headers=headers, body=body)
            rid = assert_error(r, status, code)
            if incoming:
                assert rid == incoming
            else:
                assert UUID7.match(rid), r
            e = access_entry(gw, rid)
            assert e["status"] == status and e["error_code"] == code, e
    # A 403 from ip_access, id accepted by the filter that runs before it.
    with Client(gw.port) as c:
        r = c.request("GET", "/guarded/", headers={"X-Request-ID": "blocked-42",
                                                   "X-Forwarded-For": "198.51.100.7"})
    assert assert_error(r, 403, "FORBIDDEN") == "blocked-42"
    assert access_entry(gw, "blocked-42")["status"] == 403


# -- CORS ----------------------------------------------------------------------------------

def test_preflight_for_a_route_limited_to_post_is_answered_by_that_route(gateway_factory, upstream):
    # The preflight (OPTIONS) asks about the POST that follows: the POST-only route's CORS
    # policy answers it, instead of no route at all (404).
    gw = gateway_factory(gateway_config(
        upstreams={"up": [upstream]},
        default_filters={"cors": {"allow_origins": [APP], "allow_methods": ["POST"]}},
        routes=[{"name": "register", "match": {"path_prefix": "/register", "methods": ["POST"]},
                 "upstream": "up"},
                {"name": "internal", "match": {"path_prefix": "/internal", "methods": ["POST"]},
                 "upstream": "up", "filters": {"cors": "off"}}]))
    with Client(gw.port) as c:
        r = c.request("OPTIONS", "/register", headers={
            "Origin": APP, "Access-Control-Request-Method": "POST"})
        assert r.status == 204, r
        assert r.header("Access-Control-Allow-Origin") == APP
        assert prom.total(prom.scrape(gw), "gateway_cors_preflights_total", route="register") == 1
        # A preflight for a method the route does not take finds no route, as before.
        assert c.request("OPTIONS", "/register", headers={
            "Origin": APP, "Access-Control-Request-Method": "GET"}).status == 404
        # Nor does a plain OPTIONS.
        assert c.request("OPTIONS", "/register").status == 404
        # A route without cors answers no preflight, so it must not take the OPTIONS its
        # methods leave out: no route.
        assert c.request("OPTIONS", "/internal", headers={
            "Origin": APP, "Access-Control-Request-Method": "POST"}).status == 404
    assert upstream.snapshot() == []


def test_preflight_answered_by_the_gateway_and_never_forwarded(gw, upstream):
    before = prom.total(prom.scrape(gw), "gateway_cors_preflights_total", route="app")
    with Client(gw.port) as c:
        r = c.request("OPTIONS", "/app/items/1", headers={
            "Origin": TENANT, "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type, x-request-id"})
        assert r.status == 204, r
        assert r.body == b""
        assert r.header_all("Access-Control-Allow-Origin") == [TENANT]
        assert r.header("Access-Control-Allow-Credentials") == "true"
        assert r.header("Access-Control-Allow-Methods") == "GET, POST, PUT, PATCH, DELETE"
        assert r.header("Access-Control-Allow-Headers") == "authorization, content-type, x-request-id"
        assert r.header("Access-Control-Max-Age") == "600"
        assert not r.has_header("Access-Control-Expose-Headers")
        assert "Origin" in [t.strip() for v in r.header_all("Vary") for t in v.split(",")]
        assert_security_headers(r)
        assert UUID7.match(r.header("X-Request-ID"))
        # The connection carries on after the 204.
        assert c.request("GET", "/app/after").status == 200

        refused = [
            {"Origin": EVIL, "Access-Control-Request-Method": "GET"},
            {"Origin": APP, "Access-Control-Request-Method": "PROPFIND"},
            {"Origin": APP, "Access-Control-Request-Method": "PUT",
             "Access-Control-Request-Headers": "x-evil"},
        ]
        for headers in refused:
            r = c.request("OPTIONS", "/app/items/1", headers=headers)
            assert_error(r, 403, "FORBIDDEN")
            assert not any(n.lower().startswith("access-control-") for n, _ in r.headers), r
            assert_security_headers(r)
    assert [q.path for q in upstream.snapshot()] == ["/app/after"], "no preflight forwarded"
    assert prom.total(prom.scrape(gw), "gateway_cors_preflights_total", route="app") == before + 4


def test_actual_requests_from_allowed_and_disallowed_origins(gw, upstream):
    with Client(gw.port) as c:
        up_acao = "&hdr=Access-Control-Allow-Origin:*&hdr=Access-Control-Allow-Methods:TRACE"
        r = c.request("GET", "/app/a?hdr=Vary:Accept-Encoding" + up_acao, headers={"Origin": APP})
        assert r.status == 200
        assert r.header_all("Access-Control-Allow-Origin") == [APP]
        assert r.header("Access-Control-Allow-Credentials") == "true"
        assert r.header("Access-Control-Expose-Headers") == "X-Request-ID"
        assert not r.has_header("Access-Control-Allow-Methods")
        assert r.header_all("Vary") == ["Accept-Encoding, Origin"]
        assert upstream.last().header("Origin") == APP

        r = c.request("GET", "/app/b?x=1" + up_acao, headers={"Origin": EVIL})
        assert r.status == 200, "a disallowed origin is forwarded..."
        assert not any(n.lower().startswith("access-control-") for n, _ in r.headers), r
        assert r.header_all("Vary") == ["Origin"]
        assert upstream.last().path == "/app/b"

        r = c.request("GET", "/app/c?x=1" + up_acao)
        assert not any(n.lower().startswith("access-control-") for n, _ in r.headers), r


def test_vary_from_several_upstream_fields_is_kept(gw, upstream):
    """An upstream may send Vary as several field lines (one list, RFC 9110 §5.3): the
    gateway adds Origin and must keep every token it sent."""
    with Client(gw.port) as c:
        r = c.request("GET", "/app/v?hdr=Vary:Accept-Encoding&hdr=Vary:Accept-Language",
                      headers={"Origin": APP})
    assert r.status == 200
    tokens = sorted(t.strip() for v in r.header_all("Vary") for t in v.split(","))
    assert tokens == ["Accept-Encoding", "Accept-Language", "Origin"], r.header_all("Vary")


def test_route_with_cors_off(gw, upstream):
    with Client(gw.port) as c:
        r = c.request("GET", "/nocors/x?hdr=Access-Control-Allow-Origin:https://up.test",
                      headers={"Origin": APP})
        assert r.status == 200
        # The gateway neither grants nor strips: the upstream's answer is its own.
        assert r.header_all("Access-Control-Allow-Origin") == ["https://up.test"]
        assert not r.has_header("Access-Control-Allow-Credentials")
        assert not r.has_header("Vary")
        assert_security_headers(r)
        # A preflight goes to the upstream like any OPTIONS request.
        p = c.request("OPTIONS", "/nocors/x", headers={
            "Origin": APP, "Access-Control-Request-Method": "PUT"})
        assert p.status == 200
    assert upstream.last().method == "OPTIONS"
    assert upstream.last().header("Access-Control-Request-Method") == "PUT"


# -- body limits ---------------------------------------------------------------------------

def test_body_limit_413_from_content_length_before_the_body_is_read(gw, upstream):
    with Client(gw.port, timeout=5) as c:
        # Head only: the 413 comes without waiting for the 101 announced bytes.
        c.send(b"POST /small/x HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n")
        r = c.read_response()
        assert_error(r, 413, "PAYLOAD_TOO_LARGE")
        assert r.header("Connection") == "close"
        assert c.closed_by_peer(3.0)
    with Client(gw.port, timeout=5) as c:
        c.send(b"POST /small/x HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
               b"Content-Length: 5000\r\n\r\n")
        r = c.read_response(allow_interim=True)
        assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    with Client(gw.port) as c:
        assert c.request("POST", "/small/x", body=b"z" * 100).status == 200
    assert upstream.last().body == b"z" * 100
    assert len(upstream.snapshot()) == 1


def test_body_limit_413_as_soon_as_a_chunked_body_passes_it(gw, upstream):
    with Client(gw.port, timeout=5) as c:
        c.send(b"POST /small/chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        c.send(b"3c\r\n" + b"a" * 60 + b"\r\n")
        time.sleep(0.1)
        c.send(b"3c\r\n" + b"b" * 60 + b"\r\n")  # 120 > 100; the body never ends
        r = c.read_response()
        assert_error(r, 413, "PAYLOAD_TOO_LARGE")
        assert_security_headers(r)
    with Client(gw.port) as c:
        r = c.request("POST", "/small/chunked", headers={"Transfer-Encoding": "chunked"},
                      body=chunked_body(b"c" * 100, sizes=(30, 70)))
        assert r.status == 200
    assert upstream.last().body == b"c" * 100


def test_route_limit_overrides_the_global_limit_both_ways(gw, upstream):
    body = b"q" * 3000  # over the global 2 KiB, under default_filters' 4 KiB
    with Client(gw.port) as c:
        assert c.request("POST", "/app/up", body=body).status == 200
        assert_error(c.request("POST", "/app/up", body=b"q" * 4097), 413, "PAYLOAD_TOO_LARGE")
    with Client(gw.port) as c:
        # body_limit: off on the route: the global limit is back.
        assert_error(c.request("POST", "/global/up", body=body), 413, "PAYLOAD_TOO_LARGE")
    with Client(gw.port) as c:
        assert c.request("POST", "/global/up", body=b"q" * 2048).status == 200


# -- ip_access -----------------------------------------------------------------------------

@pytest.mark.parametrize("xff,status,client", [
    ("198.51.100.7", 403, "198.51.100.7"),
    ("203.0.113.9, 198.51.100.7", 403, "198.51.100.7"),  # the right-most untrusted hop
    ("198.51.100.7, 203.0.113.9", 200, "203.0.113.9"),   # a spoofed left part is ignored
    ("198.51.100.7, 127.0.0.1", 403, "198.51.100.7"),    # trusted hops are skipped
    (None, 200, "127.0.0.1"),
])
def test_ip_access_on_the_real_client_behind_trusted_proxies(gw, upstream, xff, status, client):
    headers = {"X-Request-ID": f"ip-{status}-{client}", "Origin": APP}
    if xff:
        headers["X-Forwarded-For"] = xff
    with Client(gw.port) as c:
        r = c.request("GET", "/guarded/x", headers=headers)
    assert r.status == status, r
    assert r.header("X-Request-ID") == headers["X-Request-ID"]
    assert_security_headers(r)
    if status == 403:
        assert_error(r, 403, "FORBIDDEN")
        # ip_access runs before cors: no grant on its refusal.
        assert not r.has_header("Access-Control-Allow-Origin"), r
        assert upstream.snapshot() == []
    else:
        assert r.header("Access-Control-Allow-Origin") == APP
    e = access_entry(gw, headers["X-Request-ID"])
    assert e["client_ip"] == client and e["status"] == status, e


# -- fixed order ---------------------------------------------------------------------------

ORDER_YAML = """
workers: 1
listeners: [{name: http, address: "127.0.0.1:@PORT@"}]
admin: {address: "127.0.0.1:@ADMIN_PORT@"}
upstreams: [{name: up, endpoints: ["@UPSTREAM@"]}]
default_filters:
  security_headers: {headers: {X-Frame-Options: SAMEORIGIN}}
  body_limit: {max_bytes: 10}
  cors: {allow_origins: ["https://app.example.com"]}
  request_id: {header: X-Trace-ID}
  ip_access: {deny: [127.0.0.0/8]}
routes:
  - name: blocked
    match: {path_prefix: /blocked}
    upstream: up
  - name: open
    match: {path_prefix: /}
    upstream: up
    filters:
      ip_access: off
"""


def test_fixed_chain_order_whatever_the_order_in_the_file(gateway_factory, upstream):
    gw = gateway_factory(ORDER_YAML.replace("@UPSTREAM@", upstream.address))
    with Client(gw.port) as c:
        # ip_access (written last) refuses before cors and body_limit (written before it)
        # act, after request_id (written after them) took the client's id; security_headers
        # (written first) decorates the answer last.
        r = c.request("OPTIONS", "/blocked/x", headers={
            "X-Trace-ID": "order-1", "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "GET"})
        assert r.status == 403, r
        assert r.json() == {**r.json(), "error_code": "FORBIDDEN", "request_id": "order-1"}
        assert r.header_all("X-Trace-ID") == ["order-1"]
        assert r.header("X-Frame-Options") == "SAMEORIGIN"
        for name in ("X-Content-Type-Options", "Content-Security-Policy", "Referrer-Policy"):
            assert r.header(name) == SPEC_HEADERS[name], r
        assert not r.has_header("Access-Control-Allow-Origin")
    with Client(gw.port) as c:
        r = c.request("POST", "/blocked/x", headers={"X-Trace-ID": "order-2"}, body=b"x" * 50)
        assert r.status == 403, "ip_access answers before body_limit"
        assert r.json()["request_id"] == "order-2"
    with Client(gw.port) as c:
        r = c.request("POST", "/open/x", headers={"X-Trace-ID": "order-3"}, body=b"x" * 50)
        assert r.status == 413, r
        assert r.json()["request_id"] == "order-3"
        assert r.header("X-Frame-Options") == "SAMEORIGIN"
    with Client(gw.port) as c:
        r = c.request("OPTIONS", "/open/x", headers={
            "Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"})
        assert r.status == 204, r
        assert r.header("Access-Control-Allow-Origin") == "https://app.example.com"
    assert upstream.snapshot() == []
    assert gw.find_access(lambda e: e.get("request_id") == "order-1")["status"] == 403
