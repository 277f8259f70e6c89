"""jwks_uri (SPEC §2 Authentication): fetched at start, every jwks_refresh and on an unknown
kid (at most once per 10 s); the last good key set is kept while fetches fail; 503 until a
provider has loaded its first key set."""

import time

import pytest

from client import Client
import json

from harness import admin_get, gateway_config, reserve_port, wait_until
from jwt_support import JwksServer, Keys, provider, sign


@pytest.fixture
def keys():
    return Keys("uri")


@pytest.fixture
def jwks_factory():
    made = []

    def make(document=None, port=0):
        s = JwksServer(document, port)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def config(upstream, uri, refresh="1m"):
    return gateway_config(
        upstreams={"up": [upstream]},
        routes=[{"name": "api", "match": {"path_prefix": "/"}, "upstream": "up",
                 "filters": {"jwt": {"provider": "main"}}}],
        jwt_providers=[provider(jwks_uri=uri, jwks_refresh=refresh,
                                forward_claims={"sub": "X-User-Id"})])


def status(gw, token=None):
    headers = [("Authorization", f"Bearer {token}")] if token else []
    with Client(gw.port) as c:
        return c.request("GET", "/x", headers=headers).status


def test_503_until_the_first_key_set_loads(gateway_factory, upstream, jwks_factory, keys):
    # Held (bound, not listening: a connect is refused) until the identity provider comes
    # up there: a port only looked up could be taken meanwhile by a server of another test
    # (once, a gateway answering 503).
    reservation = reserve_port()
    port = reservation.getsockname()[1]
    gw = gateway_factory(config(upstream, f"http://127.0.0.1:{port}/jwks.json"))
    token = keys.token("ES256")
    with Client(gw.port) as c:
        resp = c.request("GET", "/x", headers=[("Authorization", f"Bearer {token}")])
    assert resp.status == 503, resp
    assert resp.json()["error_code"] == "SERVICE_UNAVAILABLE"
    assert not resp.has_header("WWW-Authenticate")
    assert status(gw) == 503  # without a token too: the route can authenticate nobody yet
    assert upstream.snapshot() == []
    assert "JWKS fetch failed; the provider has no keys yet" in gw.app_log_text()
    status_code, body = admin_get(gw, "/health")
    check = json.loads(body)["checks"]["jwks:main"]
    assert check["status"] == "unhealthy" and check["state"] == "never_loaded", check
    assert "cannot connect" in check["last_error"]
    assert admin_get(gw, "/health/ready")[0] == 503

    reservation.close()
    jwks_factory(keys.jwks(), port=port)  # the identity provider comes up
    wait_until(lambda: status(gw, token) == 200, timeout=20, what="first key set loaded")
    assert upstream.last().header("X-User-Id") == "alice"
    check = json.loads(admin_get(gw, "/health")[1])["checks"]["jwks:main"]
    assert check["status"] == "healthy" and check["keys"] == 6, check


def test_a_new_kid_is_fetched_while_the_gateway_runs(gateway_factory, upstream, jwks_factory,
                                                     keys):
    server = jwks_factory(keys.jwks("P-256"))
    gw = gateway_factory(config(upstream, server.url))
    old = keys.token("ES256")
    wait_until(lambda: status(gw, old) == 200, timeout=10, what="key set loaded")
    fetches = server.count()

    rotated = Keys("rotated")
    server.set({"keys": [keys.pair("ES256").jwk, rotated.pair("EdDSA").jwk]})
    # The first request with the new kid waits for the refetch instead of failing.
    assert status(gw, rotated.token("EdDSA")) == 200
    assert server.count() == fetches + 1
    assert status(gw, old) == 200

    # Another unknown kid within 10 s: refused at once, the identity provider is spared.
    stranger = sign(Keys("stranger").pair("ES256"), "ES256")
    with Client(gw.port) as c:
        resp = c.request("GET", "/x", headers=[("Authorization", f"Bearer {stranger}")])
    assert resp.status == 401
    assert resp.json()["message"] == "The token signing key is unknown"
    assert server.count() == fetches + 1


def test_the_last_good_set_is_kept_while_fetches_fail(gateway_factory, upstream, jwks_factory,
                                                      keys):
    server = jwks_factory(keys.jwks("P-256", "Ed25519"))
    gw = gateway_factory(config(upstream, server.url, refresh="1s"))
    token = keys.token("ES256")
    wait_until(lambda: status(gw, token) == 200, timeout=10, what="key set loaded")

    server.set(status=500)
    failed_from = server.count()
    wait_until(lambda: server.count() >= failed_from + 2, timeout=10, what="failed refreshes")
    assert status(gw, token) == 200
    assert status(gw, keys.token("EdDSA")) == 200
    assert "keeping the last good key set" in gw.app_log_text()
    check = json.loads(admin_get(gw, "/health")[1])["checks"]["jwks:main"]
    assert check["status"] == "degraded" and check["state"] == "stale", check

    # A successful refresh without the key: tokens it signed stop working, cached or not.
    server.set({"keys": [keys.pair("EdDSA").jwk]}, status=200)
    wait_until(lambda: status(gw, token) == 401, timeout=10, what="removed key refused")
    assert status(gw, keys.token("EdDSA")) == 200


def test_periodic_refresh_picks_up_new_keys(gateway_factory, upstream, jwks_factory, keys):
    server = jwks_factory(keys.jwks("P-256"))
    gw = gateway_factory(config(upstream, server.url, refresh="1s"))
    wait_until(lambda: status(gw, keys.token("ES256")) == 200, timeout=10, what="loaded")
    start = server.count()
    wait_until(lambda: server.count() >= start + 2, timeout=10, what="periodic refreshes")
    time.sleep(0.1)
    # Refreshes of an unchanged document are cheap for the gateway: nothing is logged.
    assert gw.app_log_text().count("JWKS loaded") == 1


def test_a_reload_keeps_the_loaded_keys(gateway_factory, upstream, jwks_factory, keys):
    import signal
    server = jwks_factory(keys.jwks("P-256"))
    gw = gateway_factory(config(upstream, server.url))
    token = keys.token("ES256")
    wait_until(lambda: status(gw, token) == 200, timeout=10, what="key set loaded")
    fetches = server.count()
    for n in range(1, 4):
        gw.signal(signal.SIGHUP)  # one at a time: pending signals would coalesce
        wait_until(lambda: gw.app_log_text().count("configuration reloaded") >= n, timeout=10,
                   what=f"reload {n}")
    # The same jwks_uri: no refetch, no window without keys.
    assert status(gw, token) == 200
    assert server.count() == fetches
    assert gw.app_log_text().count("JWKS loaded") == 1
