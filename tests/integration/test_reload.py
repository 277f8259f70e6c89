"""SIGHUP reloads (SPEC §1, issue 3): new routes apply to new requests, connections open
at reload time keep working, an invalid config is refused (logged, counted) while the old
one keeps serving, and 20 reloads in a row under load fail no request and drop no
connection."""

import os
import signal
import threading
import time

import pytest

import prom
from client import Client, ProtocolError
from harness import gateway_config, open_paths, wait_until
from upstream import UpstreamProcess

LOAD_SECONDS = 6.0
LOAD_CONNECTIONS = 20
RELOADS = 20
RELOAD_EVERY = 0.2


def routes_config(upstream, *prefixes, **top):
    return gateway_config(
        upstreams={"up": [upstream]},
        routes=[{"name": p.strip("/") or "root", "match": {"path_prefix": p}, "upstream": "up"}
                for p in prefixes],
        **top)


def write_atomically(gw, config):
    """Replaces the config file in one rename, so a reload never reads half a file."""
    text = gw.render(config)
    tmp = gw.config_path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, gw.config_path)


def reloads(gw, result):
    return prom.value(prom.scrape(gw), "gateway_config_reloads_total", result=result) or 0


def reload(gw, config, result="success"):
    before = reloads(gw, result)
    write_atomically(gw, config)
    gw.signal(signal.SIGHUP)
    wait_until(lambda: reloads(gw, result) == before + 1, timeout=10,
               what=f"reload counted as {result}")


def test_sighup_changes_routing_and_keeps_connections(gateway_factory, upstream):
    gw = gateway_factory(routes_config(upstream, "/old"))
    with Client(gw.port) as c:
        assert c.request("GET", "/old/x").status == 200
        assert c.request("GET", "/new/x").status == 404
        reload(gw, routes_config(upstream, "/new"))
        # the same keep-alive connection, opened before the reload, sees the new routes
        r = c.request("GET", "/new/x")
        assert r.status == 200 and r.json()["path"] == "/new/x", r
        assert c.request("GET", "/old/x").status == 404
        assert c.still_open()
    with Client(gw.port) as c:
        assert c.request("GET", "/new/y").status == 200
        assert c.request("GET", "/old/y").status == 404
    assert reloads(gw, "failure") == 0
    assert any(e.get("message") == "configuration reloaded" for e in gw.app_log())


def test_sighup_moves_the_access_log_to_a_new_path(gateway_factory, upstream, tmp_path):
    first, second = tmp_path / "first.log", tmp_path / "second.log"

    def config(path):
        return routes_config(upstream, "/", logging={"access_log": str(path)},
                             default_filters={"request_id": {}})

    def ids(path):
        return [line.split('"request_id":"')[1].split('"')[0]
                for line in (path.read_text().splitlines() if path.exists() else [])]

    gw = gateway_factory(config(first))
    with Client(gw.port) as c:
        assert c.request("GET", "/a", headers={"X-Request-ID": "one"}).status == 200
        wait_until(lambda: ids(first) == ["one"], timeout=5, what="the line in the first file")
        reload(gw, config(second))
        assert c.request("GET", "/b", headers={"X-Request-ID": "two"}).status == 200
    wait_until(lambda: ids(second) == ["two"], timeout=5, what="the line in the second file")
    assert ids(first) == ["one"]
    assert str(first) not in open_paths(gw)


def test_request_in_flight_during_a_reload_completes(gateway_factory, upstream):
    gw = gateway_factory(routes_config(upstream, "/old"))
    with Client(gw.port) as c:
        c.send(b"GET /old/slow?delay=800 HTTP/1.1\r\nHost: x\r\n\r\n")
        upstream.wait_requests(1)
        reload(gw, routes_config(upstream, "/new"))
        r = c.read_response()
        assert r.status == 200 and r.json()["path"] == "/old/slow", r
        assert c.request("GET", "/new/after").status == 200


INVALID = {
    "unknown-key": "workers: 2\nlisteners: [{name: http, address: '127.0.0.1:@PORT@'}]\n"
                   "admin: {address: '127.0.0.1:@ADMIN_PORT@'}\n"
                   "upstreams: [{name: up, endpoints: ['@UP@']}]\n"
                   "routes: [{name: r, match: {path_prefix: /new}, upstrem: up}]\n",
    "unknown-upstream": "workers: 2\nlisteners: [{name: http, address: '127.0.0.1:@PORT@'}]\n"
                        "admin: {address: '127.0.0.1:@ADMIN_PORT@'}\n"
                        "upstreams: [{name: up, endpoints: ['@UP@']}]\n"
                        "routes: [{name: r, match: {path_prefix: /new}, upstream: nope}]\n",
    "broken-yaml": "workers: 2\nroutes: [{name: r, match: {path_prefix: /new}\n",
}


@pytest.mark.parametrize("kind", list(INVALID))
def test_invalid_config_is_refused_and_the_old_keeps_serving(gateway_factory, upstream, kind):
    gw = gateway_factory(routes_config(upstream, "/old"))
    with Client(gw.port) as c:
        assert c.request("GET", "/old/x").status == 200
        reload(gw, INVALID[kind].replace("@UP@", upstream.address), result="failure")
        assert c.request("GET", "/old/x").status == 200
        assert c.request("GET", "/new/x").status == 404
    with Client(gw.port) as c:
        assert c.request("GET", "/old/y").status == 200
    assert reloads(gw, "success") == 0
    refused = [e for e in gw.app_log() if e.get("message") == "configuration reload refused"]
    assert refused and refused[0].get("level") == "error", gw.app_log_text()
    assert str(gw.config_path) in refused[0].get("error", ""), refused[0]
    # the gateway is not stuck: a valid config afterwards applies
    reload(gw, routes_config(upstream, "/new"))
    with Client(gw.port) as c:
        assert c.request("GET", "/new/x").status == 200


def test_a_config_path_that_became_a_fifo_is_refused_and_the_old_keeps_serving(
        gateway_factory, upstream):
    # Issue 20: open() on a FIFO nobody writes to never returned, and the reload with it.
    gw = gateway_factory(routes_config(upstream, "/old"))
    os.unlink(gw.config_path)
    os.mkfifo(gw.config_path)
    try:
        before = reloads(gw, "failure")
        gw.signal(signal.SIGHUP)
        wait_until(lambda: reloads(gw, "failure") == before + 1, timeout=10,
                   what="reload refused")
    finally:
        try:  # a reader blocked on the FIFO (the defect) gets an end of file, not a hang
            os.close(os.open(gw.config_path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    refused = [e for e in gw.app_log() if e.get("message") == "configuration reload refused"]
    assert refused and refused[-1].get("level") == "error", gw.app_log_text()
    assert refused[-1].get("error") == (f"{gw.config_path}:0:0: cannot read configuration "
                                        "file: not a regular file (a FIFO)"), refused[-1]
    with Client(gw.port) as c:
        assert c.request("GET", "/old/x").status == 200
    os.unlink(gw.config_path)
    reload(gw, routes_config(upstream, "/new"))
    with Client(gw.port) as c:
        assert c.request("GET", "/new/x").status == 200


def test_twenty_reloads_under_load_fail_nothing(gateway_factory, tmp_path):
    # The upstream runs in its own process so that the client threads have this one.
    up = UpstreamProcess("load", tmp_path / "load.requests.log")
    try:
        config_a = routes_config(up.address, "/a-only", "/", timeouts={"idle": "60s"})
        config_b = routes_config(up.address, "/b-only", "/", timeouts={"idle": "60s"})
        config_b["upstreams"][0]["keepalive"] = {"max_idle": 4, "idle_timeout": "10s"}
        gw = gateway_factory(config_a)
        stop = threading.Event()
        stats = {"ok": 0, "failed": [], "dropped": []}
        lock = threading.Lock()
        clients = [Client(gw.port, timeout=10) for _ in range(LOAD_CONNECTIONS)]

        def load(k, c):
            n = 0
            while not stop.is_set():
                try:
                    r = c.request("GET", f"/load/{k}/{n}")
                except (OSError, ProtocolError) as e:
                    with lock:
                        stats["dropped"].append(f"conn {k} after {n} requests: {e!r}")
                    return
                n += 1
                if not 200 <= r.status < 300 or r.has_header("connection") and \
                        "close" in r.header("connection").lower():
                    with lock:
                        stats["failed"].append((k, r.status, r.headers))
                    return
            with lock:
                stats["ok"] += n

        threads = [threading.Thread(target=load, args=(k, c), daemon=True)
                   for k, c in enumerate(clients)]
        try:
            start = time.monotonic()
            for t in threads:
                t.start()
            time.sleep(0.5)
            for i in range(RELOADS):
                write_atomically(gw, config_b if i % 2 == 0 else config_a)
                gw.signal(signal.SIGHUP)
                time.sleep(RELOAD_EVERY)
            time.sleep(max(0.0, start + LOAD_SECONDS - time.monotonic()))
            stop.set()
            for t in threads:
                t.join(15)
            assert not any(t.is_alive() for t in threads), "a client is stuck"
            elapsed = time.monotonic() - start
            assert not stats["dropped"], stats["dropped"][:5]
            assert not stats["failed"], stats["failed"][:5]
            # every connection opened before the reloads still works
            for c in clients:
                assert c.request("GET", "/after").status == 200
                assert c.still_open(0.05)
        finally:
            stop.set()
            for c in clients:
                c.close()
        s = prom.scrape(gw)
        assert prom.value(s, "gateway_config_reloads_total", result="success") == RELOADS
        assert prom.value(s, "gateway_config_reloads_total", result="failure") in (None, 0)
        # the last config written was config_a (RELOADS is even)
        with Client(gw.port) as c:
            assert c.request("GET", "/a-only/x").status == 200
        print(f"{stats['ok']} requests in {elapsed:.1f} s ({stats['ok'] / elapsed:.0f}/s) "
              f"over {LOAD_CONNECTIONS} connections, {RELOADS} reloads")
        assert stats["ok"] >= 1000, f"only {stats['ok']} requests: the load was too light"
    finally:
        up.stop()
