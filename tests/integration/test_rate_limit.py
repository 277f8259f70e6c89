"""rate_limit with the in-process store (SPEC §2 Rate limits): exact counts across the
workers of one process, keys, shared limits, dry_run, the RateLimit response fields, the
429 body, counters, and buckets that survive a reload."""

import signal
import time

from client import Client
import prom
from harness import gateway_config, wait_until


def route(name, limits, prefix=None, **extra):
    r = {"name": name, "match": {"path_prefix": prefix or f"/{name}"}, "upstream": "up",
         "filters": {"rate_limit": {"limits": limits}}}
    r.update(extra)
    return r


def get(gw, path, headers=None):
    """One request on a fresh connection: SO_REUSEPORT spreads them over the workers."""
    with Client(gw.port) as c:
        return c.request("GET", path, headers=headers)


def test_sixth_of_five_per_hour_is_refused_whichever_worker(gateway_factory, upstream):
    gw = gateway_factory(gateway_config(
        upstreams={"up": [upstream]}, workers=2,
        routes=[route("signup", [{"key": "client_ip", "requests": 5, "per": "1h"}])]))
    statuses = []
    for _ in range(10):
        r = get(gw, "/signup")
        statuses.append(r.status)
        if r.status == 429:
            body = r.json()
            assert body["error_code"] == "RATE_LIMITED", body
            assert r.header("content-type") == "application/json"
            assert r.header("retry-after") == "720"  # one token per 12 minutes
            # The draft: t names the moment Retry-After names, not the bucket full again.
            assert r.header("ratelimit") == '"client_ip-1h";r=0;t=720'
    assert statuses == [200] * 5 + [429] * 5
    # Keep-alive: the same count on one connection.
    with Client(gw.port) as c:
        assert c.request("GET", "/signup").status == 429
    assert prom.total(prom.scrape(gw), "gateway_rate_limited_total", route="signup") == 6
    entries = gw.wait_access_log(11)
    assert [e["status"] for e in entries].count(429) == 6
    assert all(e.get("error_code") == "RATE_LIMITED" for e in entries if e["status"] == 429)


def test_fields_on_every_response_of_a_limited_route(gateway_factory, upstream):
    gw = gateway_factory(gateway_config(
        upstreams={"up": [upstream]},
        routes=[route("api", [{"key": "client_ip", "requests": 3, "per": "1m"},
                              {"key": "client_ip", "requests": 100, "per": "1h"}]),
                {"name": "free", "match": {"path_prefix": "/free"}, "upstream": "up"}]))
    policy = '"client_ip-1m";q=3;w=60, "client_ip-1h";q=100;w=3600'
    seen = []
    for target in ["/api/a", "/api/b?status=404", "/api/c?status=500", "/api/d"]:
        r = get(gw, target)
        seen.append(r)
        assert r.header("ratelimit-policy") == policy
        assert r.has_header("ratelimit")
        assert r.has_header("ratelimit-limit") and r.has_header("ratelimit-reset")
    assert [r.status for r in seen] == [200, 404, 500, 429]
    assert [r.header("ratelimit-remaining") for r in seen] == ["2", "1", "0", "0"]
    assert [r.header("ratelimit-limit") for r in seen] == ["3"] * 4  # the tightest
    assert seen[0].header("ratelimit") == '"client_ip-1m";r=2;t=20, "client_ip-1h";r=99;t=36'
    assert not any(r.has_header("retry-after") for r in seen[:3])
    assert seen[3].header("retry-after") == "20"
    free = get(gw, "/free")
    assert free.status == 200 and not free.has_header("ratelimit-limit")


def test_dry_run_counts_and_logs_but_never_refuses(gateway_factory, upstream):
    gw = gateway_factory(gateway_config(
        upstreams={"up": [upstream]},
        routes=[route("trial", [{"key": "client_ip", "requests": 2, "per": "1h",
                                 "dry_run": True}])]))
    assert [get(gw, "/trial").status for _ in range(6)] == [200] * 6
    wait_until(lambda: any(e.get("message") == "rate limit exceeded (dry run)"
                           for e in gw.app_log()), timeout=5, what="dry-run log line")
    line = next(e for e in gw.app_log() if e.get("message") == "rate limit exceeded (dry run)")
    assert line["route"] == "trial" and line["client_ip"] == "127.0.0.1"
    assert prom.total(prom.scrape(gw), "gateway_rate_limited_total", route="trial") == 0


def test_keys_forwarded_client_header_and_missing_value(gateway_factory, upstream):
    gw = gateway_factory(gateway_config(
        upstreams={"up": [upstream]}, trusted_proxies=["127.0.0.1/32"],
        routes=[route("ip", [{"key": "client_ip", "requests": 2, "per": "1h"}]),
                route("tenant", [{"key": "header:X-Tenant", "requests": 1, "per": "1h"}])]))
    a = {"X-Forwarded-For": "203.0.113.7"}
    b = {"X-Forwarded-For": "198.51.100.1, 203.0.113.8"}  # right-most untrusted address
    assert [get(gw, "/ip", a).status for _ in range(3)] == [200, 200, 429]
    assert [get(gw, "/ip", b).status for _ in range(3)] == [200, 200, 429]
    assert get(gw, "/ip").status == 200  # the peer itself is a third client

    assert get(gw, "/tenant", {"X-Tenant": "acme"}).status == 200
    assert get(gw, "/tenant", {"X-Tenant": "acme"}).status == 429
    assert get(gw, "/tenant", {"X-Tenant": "globex"}).status == 200
    assert get(gw, "/tenant").status == 200  # no header: counted under "-"
    assert get(gw, "/tenant").status == 429


def test_shared_limit_pools_routes(gateway_factory, upstream):
    shared = [{"key": "client_ip", "requests": 3, "per": "1h", "shared": "pool"}]
    gw = gateway_factory(gateway_config(
        upstreams={"up": [upstream]},
        routes=[route("one", shared), route("two", shared),
                route("three", [{"key": "client_ip", "requests": 3, "per": "1h"}])]))
    assert [get(gw, p).status for p in ["/one", "/two", "/one", "/two", "/one"]] == \
        [200, 200, 200, 429, 429]
    assert get(gw, "/three").status == 200  # its own bucket


def test_buckets_survive_a_reload(gateway_factory, upstream):
    cfg = gateway_config(upstreams={"up": [upstream]},
                         routes=[route("keep", [{"key": "client_ip", "requests": 3,
                                                 "per": "1h"}])])
    gw = gateway_factory(cfg)
    assert [get(gw, "/keep").status for _ in range(2)] == [200, 200]
    gw.signal(signal.SIGHUP)
    wait_until(lambda: prom.total(prom.scrape(gw), "gateway_config_reloads_total",
                                  result="success") >= 1,
               timeout=10, what="reload")
    time.sleep(0.2)  # the workers take the new snapshot at their next loop turn
    assert [get(gw, "/keep").status for _ in range(2)] == [200, 429]
