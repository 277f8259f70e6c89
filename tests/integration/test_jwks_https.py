"""jwks_uri over https: fetched through the gateway's own TLS client, with the server's
certificate verified against the trust store (SSL_CERT_FILE here: the dev CA)."""

import json
import os
import ssl
import subprocess
from pathlib import Path

import pytest

from client import Client
from harness import admin_get, gateway_config, wait_until
from jwt_support import JwksServer, Keys, provider

SOURCE = Path(os.environ.get("SOURCE_DIR", Path(__file__).resolve().parents[2]))


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    subprocess.run([str(SOURCE / "conf" / "make-test-certs.sh"), str(d)], check=True,
                   capture_output=True, timeout=120)
    return d


@pytest.fixture
def https_jwks(certs):
    keys = Keys("https")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs / "server.crt", certs / "server.key")
    server = JwksServer(keys.jwks("P-256"), tls=ctx)
    yield keys, server.url
    server.stop()


def config(upstream, uri):
    return gateway_config(
        upstreams={"up": [upstream]},
        routes=[{"name": "api", "match": {"path_prefix": "/"}, "upstream": "up",
                 "filters": {"jwt": {"provider": "main"}}}],
        jwt_providers=[provider(jwks_uri=uri)])


def status(gw, token):
    with Client(gw.port) as c:
        return c.request("GET", "/x", headers=[("Authorization", f"Bearer {token}")]).status


def test_https_jwks_uri_is_fetched_and_verified(gateway_factory, upstream, https_jwks, certs):
    keys, uri = https_jwks
    env = dict(os.environ, SSL_CERT_FILE=str(certs / "ca.crt"))
    gw = gateway_factory(config(upstream, uri), env=env)
    wait_until(lambda: status(gw, keys.token("ES256")) == 200, timeout=10)
    _, body = admin_get(gw, "/health")
    health = json.loads(body)
    assert health["checks"]["jwks:main"]["status"] == "healthy"


def test_https_jwks_uri_with_an_untrusted_certificate_loads_nothing(gateway_factory, upstream,
                                                                    https_jwks):
    keys, uri = https_jwks
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    gw = gateway_factory(config(upstream, uri), env=env)
    wait_until(lambda: "certificate verify failed" in gw.app_log_text(), timeout=10)
    assert status(gw, keys.token("ES256")) == 503  # never loaded: the token may be fine
