"""The operator's view (SPEC §11): GET /status on the admin listener, the status page
GET / in headless Chromium, and `gateway --explain`."""

import base64
import json
import os
import re
import shutil
import urllib.request

import pytest

from browser import CHROMIUM, Browser
from client import Client
from harness import (SOURCE_DIR, admin_get, gateway_config, reference_workdir, reference_yaml, run_gateway_cli,
                     wait_until)

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


# -- gateway --explain ------------------------------------------------------------------

# reference.yaml's routes, a request each would take, and what must be said about it.
EXPLAINED = [
    (["POST", "/api/register/x"], "register",
     ["request_id", "cors", "body_limit", "rate_limit before authentication", "security_headers"],
     ["requests: 5, per: 1h", "(route)"]),
    (["GET", "/api/admin/users"], "admin",
     ["request_id", "cors", "body_limit", "rate_limit before authentication", "jwt", "security_headers"],
     ["provider main: issuer https://auth.example.com/", "require_claims: {role: [admin]}"]),
    (["GET", "/api/me", "-H", "Authorization: Bearer x"], "me",
     ["request_id", "cors", "body_limit", "jwt", "rate_limit after authentication", "security_headers"],
     ["key: claim:sub, requests: 60, per: 1m"]),
    (["GET", "http://partners.example.com/partners/orders?x=1"], "partners",
     ["request_id", "body_limit", "api_key", "rate_limit after authentication", "security_headers"],
     ["path sent: /orders?x=1", "host partners.example.com", "key set partners: header X-API-Key"]),
    (["PUT", "/api/uploads/1"], "uploads",
     ["request_id", "cors", "body_limit", "rate_limit before authentication", "security_headers"],
     ["max_bytes: 100MiB"]),
    (["GET", "/"], "default",
     ["request_id", "cors", "body_limit", "rate_limit before authentication", "security_headers"],
     ["upstream: api", "endpoints: 127.0.0.1:9000", "(default_filters)"]),
]


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
    return reference_workdir(tmp_path_factory.mktemp("reference"))


def explain(workdir, config, *args):
    return run_gateway_cli(["--explain", "-c", str(config), *args], cwd=workdir, timeout=60)


def filters_listed(out: str) -> list[str]:
    lines = out.split("filters, in run order:\n", 1)[1].splitlines()
    return [re.match(r"\s+\d+\. (.*?) [{\[]", line).group(1)
            for line in lines if re.match(r"\s+\d+\. ", line)]


@pytest.mark.parametrize("args,name,filters,said", EXPLAINED, ids=[e[1] for e in EXPLAINED])
def test_explain_every_reference_route(reference_dir, args, name, filters, said):
    r = explain(reference_dir, reference_yaml(), *args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(rf"^route: {name} \(", r.stdout, re.M), r.stdout
    assert filters_listed(r.stdout) == filters, r.stdout
    for text in said:
        assert text in r.stdout, (text, r.stdout)


def test_explain_header_and_host_matching_and_no_route(reference_dir, tmp_path):
    # reference.yaml ends with a catch-all: without it, nothing else matches "/".
    text = reference_yaml().read_text()
    text = text[:text.index("  - name: default")]
    text += ('  - name: "by-header\\u001b[31m"\n'
             '    match: {path_prefix: /h, headers: {X-Tenant: blue}}\n'
             '    upstream: api\n'
             '  - name: by-host\n'
             '    match: {host: "*.example.org", path_prefix: /}\n'
             '    upstream: api\n')
    config = tmp_path / "no-default.yaml"
    config.write_text(text)
    r = explain(reference_dir, config, "GET", "/nothing")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no route matches" in r.stdout
    r = explain(reference_dir, config, "GET", "/h", "-H", "X-Tenant: blue")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "route: by-header\\x1b[31m (" in r.stdout  # the escape shown, never sent
    assert "\x1b" not in r.stdout
    assert explain(reference_dir, config, "GET", "/h", "-H", "X-Tenant: red").returncode == 1
    r = explain(reference_dir, config, "GET", "/x", "-H", "Host: a.example.org")
    assert "route: by-host (" in r.stdout, r.stdout
    r = explain(reference_dir, config, "GET", "http://b.example.org/x", "-H", "Host: other")
    assert "route: by-host (" in r.stdout, r.stdout
    assert explain(reference_dir, config, "GET", "/x", "-H", "Host: example.org").returncode == 1
    assert explain(reference_dir, config, "GET").returncode == 2
    assert explain(reference_dir, config, "GET", "/x", "-H", "no colon").returncode == 2


def test_explain_never_prints_a_secret(reference_dir, tmp_path):
    secret = "s3cret-Redis-pw-0451"
    text = reference_yaml().read_text().replace(
        "redis: {address: 127.0.0.1:6379,", f"redis: {{password: {secret}, address: 127.0.0.1:6379,")
    text = text.replace("type: memory ", "type: redis  ")
    assert secret in text and "type: redis" in text
    config = tmp_path / "redis.yaml"
    config.write_text(text)
    hashes = re.findall(r"\b[0-9a-f]{64}\b", (reference_dir / "conf" / "api-keys.txt").read_text())
    assert hashes
    for args in (["GET", "/partners/x"], ["GET", "/api/me"], ["GET", "/"]):
        r = explain(reference_dir, config, *args)
        assert r.returncode == 0, r.stdout + r.stderr
        assert secret not in r.stdout + r.stderr
        for h in hashes:
            assert h not in r.stdout
    assert "(password ***)" in explain(reference_dir, config, "GET", "/").stdout


# -- the status page in a real browser ----------------------------------------------------

PAGE_WAIT = 15.0


def js_row(name: str) -> str:
    """An expression: the route row whose name cell reads `name` (compared as text)."""
    return (f"[...document.querySelectorAll('#routes tr')].find(tr => "
            f"tr.querySelector('td.name').textContent === {json.dumps(name)})")


def wait_js(dt, expression: str, what: str, timeout: float = PAGE_WAIT):
    return wait_until(lambda: dt.evaluate(expression), timeout=timeout, interval=0.2, what=what)


def screenshot(dt, width: int, height: int, mobile: bool, path) -> None:
    dt.call("Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
    # Drawn again at the new width by the next refresh as much as by the resize itself.
    n = dt.evaluate("Number(document.body.dataset.loaded)")
    wait_js(dt, f"Number(document.body.dataset.loaded) > {n}", "a refresh after the resize")
    png = base64.b64decode(dt.call("Page.captureScreenshot", {"format": "png"}, timeout=20)["data"])
    assert png.startswith(b"\x89PNG")
    path.write_bytes(png)


@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (Debian package `chromium`)")
def test_status_page_in_chromium(upstream_factory, gateway_factory, tmp_path):
    a, b = upstream_factory("a"), upstream_factory("b")
    gw = gateway_factory(status_config(a, b))
    admin = f"http://127.0.0.1:{gw.admin_port}"
    with urllib.request.urlopen(admin + "/", timeout=5) as r:
        csp = r.headers["Content-Security-Policy"]
        assert r.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and "script-src 'sha256-" in csp

    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    browser = Browser(profile)
    try:
        dt = browser.connect()
        for domain in ("Network", "Runtime", "Log", "Page"):
            dt.call(f"{domain}.enable")
        dt.call("Emulation.setDeviceMetricsOverride",
                {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
        dt.call("Page.navigate", {"url": admin + "/"})
        wait_js(dt, "Number(document.body && document.body.dataset.loaded) >= 1", "the first /status drawn")

        # A route name full of markup is shown as text and creates nothing.
        assert dt.evaluate(f"!!{js_row(ODD_NAME)}")
        assert dt.evaluate("document.images.length") == 0
        assert dt.evaluate(f"{js_row(ODD_NAME)}.querySelector('td.n').textContent") == "0.00"

        with Client(gw.port) as c:
            for i in range(30):
                assert c.request("GET", f"/p{i}").status == 200
        wait_js(dt, f"{js_row(ODD_NAME)}.querySelector('td.n').textContent !== '0.00'",
                "the route's req/s moving after traffic")
        assert dt.evaluate(f"{js_row(ODD_NAME)}.querySelectorAll('.chip').length") == 2

        row = f"document.querySelector('#upstreams tr[data-endpoint=\"{b.address}\"]')"
        assert dt.evaluate(f"{row}.className") == ""
        b.stop()
        wait_js(dt, f"{row}.className === 'down'", "the killed endpoint marked down")
        assert dt.evaluate(f"getComputedStyle({row}.querySelector('td.health .dot')).backgroundColor") \
            == "rgb(220, 38, 38)"
        assert dt.evaluate(f"{row}.querySelector('td.health').textContent") == "unhealthy"

        screenshot(dt, 1280, 800, False, tmp_path / "status-desktop.png")
        screenshot(dt, 390, 844, True, tmp_path / "status-phone.png")
        # Readable on a phone: nothing wider than the screen.
        assert dt.evaluate("document.documentElement.scrollWidth") <= 390
        if os.environ.get("GATEWAY_UPDATE_SCREENSHOT"):
            shutil.copy(tmp_path / "status-desktop.png", SOURCE_DIR / "docs" / "status-page.png")

        dt.poll_events(0.5)
        events = dt.events
    finally:
        browser.kill()

    urls = {e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"}
    assert urls == {admin + "/", admin + "/status"}, urls
    problems = [e for e in events
                if (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "warning"))
                or e["method"] == "Runtime.exceptionThrown"
                or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] in ("error", "warning"))]
    assert not problems, problems
