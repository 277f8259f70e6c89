"""The api_key filter (SPEC §2 Authentication): keys_file of `NAME SHA256HEX` lines, 401 on
missing or unknown keys, X-Consumer forwarded, the name in the access log, SIGHUP reload.
Every test runs over HTTP/1.1 and HTTP/2 (protocols.py)."""

import hashlib
import signal

import pytest

from harness import gateway_config, wait_until
from protocols import PROTOCOLS, connect, listener

KEYS = {"partner-one": "k1-9f8e7d6c5b4a", "partner-two": "k2-0a1b2c3d4e5f"}


def keys_file(path, keys):
    lines = ["# name sha256(key)"]
    lines += [f"{name} {hashlib.sha256(key.encode()).hexdigest()}" for name, key in keys.items()]
    path.write_text("\n".join(lines) + "\n")


def config(upstream, path, header=None):
    key_set = {"name": "partners", "keys_file": str(path)}
    if header:
        key_set["header"] = header
    return gateway_config(
        upstreams={"up": [upstream]},
        routes=[
            {"name": "partners", "match": {"path_prefix": "/partners"}, "upstream": "up",
             "filters": {"api_key": {"set": "partners"}}},
            {"name": "open", "match": {"path_prefix": "/"}, "upstream": "up"},
        ],
        api_keys=[key_set], listeners=[listener()])


@pytest.fixture(params=PROTOCOLS)
def protocol(request):
    return request.param


@pytest.fixture
def gw(gateway_factory, upstream, tmp_path, protocol):
    keys_file(tmp_path / "keys.txt", KEYS)
    g = gateway_factory(config(upstream, tmp_path / "keys.txt"))
    g.protocol = protocol
    return g


def get(gw, headers, path="/partners/x"):
    with connect(gw.port, gw.protocol) as c:
        return c.request("GET", path, headers=headers)


def test_a_known_key_is_forwarded_with_its_consumer(gw, upstream):
    resp = get(gw, [("X-API-Key", KEYS["partner-two"]), ("X-Consumer", "partner-one")])
    assert resp.status == 200, resp
    req = upstream.last()
    assert req.header_all("X-Consumer") == ["partner-two"]
    e = gw.find_access(lambda e: e["route"] == "partners")
    assert e["user"] == "partner-two"


@pytest.mark.parametrize("headers,message", [
    ([], "An API key is required"),
    ([("X-API-Key", "")], "An API key is required"),
    ([("X-API-Key", "not-a-key")], "The API key is not valid"),
    ([("X-API-Key", KEYS["partner-one"].upper())], "The API key is not valid"),
    ([("X-API-Key", KEYS["partner-one"]), ("X-API-Key", KEYS["partner-two"])],
     "Exactly one API key is required"),
    ([("Authorization", f"Bearer {KEYS['partner-one']}")], "An API key is required"),
])
def test_missing_or_unknown_keys_are_401(gw, upstream, headers, message):
    resp = get(gw, headers)
    assert resp.status == 401, resp
    body = resp.json()
    assert body["error_code"] == "UNAUTHORIZED"
    assert body["message"] == message
    assert resp.header("WWW-Authenticate") == 'ApiKey realm="gateway", header="X-API-Key"'
    assert upstream.snapshot() == []


def test_keys_never_reach_the_logs(gw):
    get(gw, [("X-API-Key", KEYS["partner-one"])])
    get(gw, [("X-API-Key", "wrong-key-value")])
    gw.wait_access_log(2)
    logs = gw.stdout_path.read_text() + gw.app_log_text()
    assert KEYS["partner-one"] not in logs
    assert "wrong-key-value" not in logs


def test_sighup_reloads_the_keys_file(gw, tmp_path):
    assert get(gw, [("X-API-Key", KEYS["partner-one"])]).status == 200
    keys_file(tmp_path / "keys.txt", {"partner-three": "k3-new"})
    gw.signal(signal.SIGHUP)
    wait_until(lambda: get(gw, [("X-API-Key", "k3-new")]).status == 200, timeout=10,
               what="new key accepted")
    assert get(gw, [("X-API-Key", KEYS["partner-one"])]).status == 401


def test_a_bad_keys_file_is_refused_on_reload(gw, tmp_path):
    (tmp_path / "keys.txt").write_text("broken-line\n")
    gw.signal(signal.SIGHUP)
    wait_until(lambda: "configuration reload refused" in gw.app_log_text(), timeout=10,
               what="reload refused")
    assert get(gw, [("X-API-Key", KEYS["partner-one"])]).status == 200  # old keys serve on


def test_the_header_is_configurable(gateway_factory, upstream, tmp_path, protocol):
    keys_file(tmp_path / "keys.txt", KEYS)
    gw = gateway_factory(config(upstream, tmp_path / "keys.txt", header="X-Partner-Token"))
    gw.protocol = protocol
    assert get(gw, [("X-API-Key", KEYS["partner-one"])]).status == 401
    assert get(gw, [("x-partner-token", KEYS["partner-one"])]).status == 200
    assert upstream.last().header("X-Consumer") == "partner-one"
