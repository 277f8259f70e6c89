"""Routing (SPEC §2): path, path_prefix, path_regex (full match on the normalised path),
host exact and wildcard, methods, headers, strip_prefix, first match wins, 404 when none;
path normalisation before matching."""

import pytest

from client import Client
from harness import gateway_config

ROUTES = [
    {"name": "exact", "match": {"path": "/exact"}, "upstream": "up"},
    {"name": "regex", "match": {"path_regex": "/items/[0-9]+"}, "upstream": "up"},
    {"name": "host-exact", "match": {"host": "api.example.com", "path_prefix": "/h"},
     "upstream": "up"},
    {"name": "host-wild", "match": {"host": "*.example.org", "path_prefix": "/h"},
     "upstream": "up"},
    {"name": "writes", "match": {"path_prefix": "/m", "methods": ["POST", "PUT"]},
     "upstream": "up"},
    {"name": "v2", "match": {"path_prefix": "/hd", "headers": {"X-Version": "2"}},
     "upstream": "up"},
    {"name": "strip", "match": {"path_prefix": "/api/v1"}, "upstream": "up",
     "strip_prefix": "/api/v1"},
    {"name": "first", "match": {"path_prefix": "/fw"}, "upstream": "up"},
    {"name": "second", "match": {"path_prefix": "/fw/deeper"}, "upstream": "up"},
    {"name": "combo", "match": {"host": "*.combo.test", "path_regex": "/c/[a-z]+",
                                "methods": ["GET"], "headers": {"X-Tenant": "t1"}},
     "upstream": "up"},
]


@pytest.fixture(scope="module")
def routed(tmp_path_factory):
    # One gateway for the whole module: each probe is a separate request on a fresh
    # connection, matched to its access-log line.
    from harness import Gateway
    from upstream import Upstream
    up = Upstream("up")
    gw = Gateway(tmp_path_factory.mktemp("routing"), gateway_config(
        upstreams={"up": [up]}, routes=ROUTES))
    try:
        gw.start()
        yield gw, up
        gw.stop()
    finally:
        gw.kill()
        up.stop()


def probe(routed, method, target, host="example.test", headers=None):
    """-> (status, route name from the access log, target the upstream received or None)"""
    gw, up = routed
    before_log = len(gw.access_log())
    before_up = len(up.snapshot())
    with Client(gw.port) as c:
        r = c.request(method, target, host=host, headers=headers)
    entry = gw.wait_access_log(1, since=before_log)[0]
    reqs = up.snapshot()
    upstream_target = reqs[before_up].target if len(reqs) > before_up else None
    if r.status == 404:
        assert upstream_target is None
    return r.status, entry["route"], upstream_target


@pytest.mark.parametrize("method,target,route,upstream_target", [
    ("GET", "/exact", "exact", "/exact"),
    ("GET", "/exact?q=1", "exact", "/exact?q=1"),
    ("GET", "/items/123", "regex", "/items/123"),
    ("GET", "/api/v1/users?q=1", "strip", "/users?q=1"),
    ("GET", "/api/v1/", "strip", "/"),
    ("GET", "/api/v1", "strip", "/"),
    ("POST", "/m/x", "writes", "/m/x"),
    ("PUT", "/m", "writes", "/m"),
    ("GET", "/fw/deeper/x", "first", "/fw/deeper/x"),  # first match wins
])
def test_route_matches(routed, method, target, route, upstream_target):
    assert probe(routed, method, target) == (200, route, upstream_target)


@pytest.mark.parametrize("method,target", [
    ("GET", "/exact/"),
    ("GET", "/exactly"),
    ("GET", "/items/123/x"),  # regex is a full match
    ("GET", "/x/items/123"),
    ("GET", "/items/abc"),
    ("GET", "/m/x"),  # method not listed
    ("DELETE", "/m"),
    ("GET", "/hd"),  # header missing
    ("GET", "/nothing/here"),
    ("GET", "/"),
])
def test_no_route_is_404(routed, method, target):
    status, route, _ = probe(routed, method, target)
    assert status == 404
    assert route == ""


@pytest.mark.parametrize("host,route", [
    ("api.example.com", "host-exact"),
    ("API.Example.COM", "host-exact"),  # case-insensitive
    ("api.example.com:8080", "host-exact"),  # port ignored
    ("a.example.org", "host-wild"),
    ("b.a.example.org", "host-wild"),
    ("A.Example.Org:81", "host-wild"),
    ("example.org", None),  # the wildcard needs a label before the suffix
    ("api.example.com.evil", None),
    ("other.test", None),
    ("xexample.org", None),
])
def test_host_matching(routed, host, route):
    status, got, _ = probe(routed, "GET", "/h", host=host)
    if route is None:
        assert (status, got) == (404, "")
    else:
        assert (status, got) == (200, route)


@pytest.mark.parametrize("value,route", [("2", "v2"), ("3", None), ("2 ", "v2"), ("20", None)])
def test_header_matching(routed, value, route):
    status, got, _ = probe(routed, "GET", "/hd/x", headers=[("X-Version", value)])
    if route is None:
        assert (status, got) == (404, "")
    else:
        assert (status, got) == (200, route)


def test_combined_conditions(routed):
    ok = probe(routed, "GET", "/c/abc", host="t.combo.test", headers=[("X-Tenant", "t1")])
    assert ok[:2] == (200, "combo")
    assert probe(routed, "POST", "/c/abc", host="t.combo.test",
                 headers=[("X-Tenant", "t1")])[0] == 404
    assert probe(routed, "GET", "/c/abc", host="combo.test", headers=[("X-Tenant", "t1")])[0] == 404
    assert probe(routed, "GET", "/c/ab1", host="t.combo.test", headers=[("X-Tenant", "t1")])[0] == 404
    assert probe(routed, "GET", "/c/abc", host="t.combo.test", headers=[("X-Tenant", "t2")])[0] == 404


@pytest.mark.parametrize("target,route,upstream_target", [
    ("/a/../exact", "exact", "/exact"),
    ("/a/b/../../exact", "exact", "/exact"),
    ("/./exact", "exact", "/exact"),
    ("//exact", "exact", "/exact"),
    ("/%65xact", "exact", "/exact"),  # unreserved characters are decoded
    ("/a/%2e%2e/exact", "exact", "/exact"),
    ("/a/%2E%2E/exact", "exact", "/exact"),
    ("/items/%31%32", "regex", "/items/12"),
    ("/api/v1/../v1/x", "strip", "/x"),
    ("/api/x/../v1/users", "strip", "/users"),
])
def test_path_normalisation_before_routing(routed, target, route, upstream_target):
    assert probe(routed, "GET", target) == (200, route, upstream_target)


def test_encoded_slash_is_not_a_separator(routed):
    # %2F is reserved: it stays encoded and does not make "/items%2F1" match /items/[0-9]+
    status, route, _ = probe(routed, "GET", "/items%2F1")
    assert status == 404


@pytest.mark.parametrize("target", ["/..", "/../exact", "/a/../../exact", "/%2e%2e",
                                    "/%2E%2e/exact", "/a/%2e%2e/%2e%2e/x"])
def test_path_escaping_the_root_is_400(routed, target):
    gw, up = routed
    before_up = len(up.snapshot())
    with Client(gw.port) as c:
        r = c.request("GET", target)
        assert r.status == 400, r
        assert r.header("content-type") == "application/json"
        assert r.json()["error_code"] == "BAD_REQUEST"
    assert len(up.snapshot()) == before_up, "must not reach the upstream"


def test_404_body(routed):
    gw, _ = routed
    with Client(gw.port) as c:
        r = c.request("GET", "/nothing")
        assert r.status == 404
        assert r.header("content-type") == "application/json"
        body = r.json()
        assert body["error_code"] == "NOT_FOUND"
        # a GET without body keeps the connection
        assert c.request("GET", "/exact").status == 200
