"""rate_limit with rate_limit_store.type: redis against a real redis-server started on a
free port: exact counts kept in Redis, two gateway processes sharing one limit, Redis
killed mid-test (on_error allow / deny / local, never waiting beyond the timeout), Redis
restarted (enforced again without restarting the gateway), accuracy under concurrency,
/health and /metrics."""

import json
import subprocess
import threading
import time

import pytest

from client import Client
from harness import SOURCE_DIR, admin_get, gateway_config, wait_until
from redis_server import REDIS_SERVER, FakeRedis, RedisServer

pytestmark = pytest.mark.skipif(not REDIS_SERVER or not __import__("os").path.exists(REDIS_SERVER),
                                reason="redis-server is not installed")


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def config(upstream, redis, limits, on_error="allow", timeout="100ms", replicas=1, workers=2,
           servers=None):
    return gateway_config(
        upstreams={"up": [upstream]}, workers=workers,
        rate_limit_store={"type": "redis",
                          "redis": {**(servers or {"address": redis.address}),
                                    "timeout": timeout, "on_error": on_error,
                                    "replicas": replicas}},
        routes=[{"name": "limited", "match": {"path_prefix": "/"}, "upstream": "up",
                 "filters": {"rate_limit": {"limits": limits}}}])


def get(gw, path="/x", headers=None):
    with Client(gw.port, timeout=5) as c:
        return c.request("GET", path, headers=headers)


def timed_get(gw, path="/x"):
    start = time.monotonic()
    r = get(gw, path)
    return r, time.monotonic() - start


def redis_check(gw):
    status, body = admin_get(gw, "/health")
    return json.loads(body).get("checks", {}).get("redis", {})


def metric(gw, name, **labels):
    """The sum of `name`'s series whose labels include `labels`."""
    _, body = admin_get(gw, "/metrics")
    want = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for line in body.decode().splitlines():
        if (line.startswith(name + " ") or line.startswith(name + "{")) and \
                all(w in line.split(" ")[0] for w in want):
            total += float(line.split()[-1])
    return total


def test_exact_count_kept_in_redis(gateway_factory, upstream, redis):
    gw = gateway_factory(config(upstream, redis, [{"key": "client_ip", "requests": 5,
                                                   "per": "1h"}]))
    statuses = []
    for _ in range(8):
        r = get(gw)
        statuses.append(r.status)
        if r.status == 429:
            assert r.json()["error_code"] == "RATE_LIMITED"
            assert r.header("retry-after") == "720"
            assert r.header("ratelimit") == '"client_ip-1h";r=0;t=720'  # Retry-After's moment
    assert statuses == [200] * 5 + [429] * 3
    keys = redis.command("KEYS", "gw:rl:*")
    assert keys == ["gw:rl:r:limited:0:5/3600000ms/5:127.0.0.1"], keys
    ttl = redis.command("PTTL", keys[0])
    assert 3_590_000 < ttl <= 3_600_000  # expires when the bucket is full again
    assert redis_check(gw)["status"] == "healthy"


def test_two_gateways_share_one_limit_exactly(gateway_factory, upstream, redis):
    cfg = config(upstream, redis, [{"key": "route", "requests": 10, "per": "1h"}])
    a = gateway_factory(cfg, name="a")
    b = gateway_factory(cfg, name="b")
    statuses = [get(a if i % 2 else b).status for i in range(30)]
    assert statuses.count(200) == 10, statuses
    assert statuses[:10] == [200] * 10


@pytest.mark.parametrize("on_error", ["allow", "deny", "local"])
def test_redis_killed_then_restarted(gateway_factory, upstream, redis, on_error):
    # 6 per hour; with 2 replicas, `local` allows 3 per hour in this process.
    gw = gateway_factory(config(upstream, redis, [{"key": "client_ip", "requests": 6,
                                                   "per": "1h"}],
                                on_error=on_error, timeout="100ms", replicas=2))
    assert [get(gw).status for _ in range(2)] == [200, 200]
    errors_before = metric(gw, "gateway_redis_errors_total")
    redis.kill()

    results = [timed_get(gw) for _ in range(6)]
    for r, seconds in results:
        assert seconds < 1.0, f"a check waited {seconds:.2f}s with Redis down (timeout 100ms)"
    statuses = [r.status for r, _ in results]
    if on_error == "allow":
        assert statuses == [200] * 6
    elif on_error == "deny":
        assert statuses == [503] * 6
        assert all(r.json()["error_code"] == "SERVICE_UNAVAILABLE" for r, _ in results)
    else:
        assert statuses == [200] * 3 + [429] * 3
    assert metric(gw, "gateway_redis_errors_total") >= errors_before + 6
    check = redis_check(gw)
    assert check["state"] == "down", check
    assert check["status"] == ("unhealthy" if on_error == "deny" else "degraded")

    redis.start()  # same port, empty: the gateway reconnects by itself
    wait_until(lambda: redis_check(gw).get("state") == "up", timeout=10,
               what="the gateway reconnected to Redis")
    statuses = [get(gw).status for _ in range(8)]
    assert statuses == [200] * 6 + [429] * 2, statuses  # Redis' count, not the local one


def test_accuracy_under_concurrency(gateway_factory, upstream, redis):
    # 4 concurrent clients over 2 gateways for 3 s against 1000 per minute (burst 1000):
    # at least the burst passes, and at most the burst plus what refilled meanwhile.
    cfg = config(upstream, redis, [{"key": "route", "requests": 1000, "per": "1m"}])
    gws = [gateway_factory(cfg, name="c1"), gateway_factory(cfg, name="c2")]
    counts = {200: 0, 429: 0, "other": 0}
    lock = threading.Lock()
    errors = []
    start = time.monotonic()
    end = start + 3.0

    def client(gw):
        try:
            with Client(gw.port, timeout=5) as c:
                while time.monotonic() < end:
                    status = c.request("GET", "/x").status
                    with lock:
                        counts[status if status in counts else "other"] += 1
        except Exception as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=client, args=(gws[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - start
    assert not errors, errors
    assert counts["other"] == 0, counts
    refill = int(1000 * elapsed / 60) + 1
    assert counts[429] > 0, counts
    assert 1000 <= counts[200] <= 1000 + refill, (counts, elapsed)
    print(f"concurrency: {counts} in {elapsed:.2f}s (at most {1000 + refill} may pass)")


def test_password_and_database(gateway_factory, upstream, tmp_path):
    server = RedisServer(tmp_path, password="s3cret").start()
    try:
        cfg = config(upstream, server, [{"key": "route", "requests": 2, "per": "1h"}],
                     on_error="deny")
        cfg["rate_limit_store"]["redis"].update({"password": "s3cret", "db": 2})
        gw = gateway_factory(cfg)
        assert [get(gw).status for _ in range(3)] == [200, 200, 429]
        assert server.command("EVAL", "redis.call('SELECT', 2) return #redis.call('KEYS', '*')",
                              0) == 1
    finally:
        server.stop()


def test_acl_user_with_a_wrong_password(gateway_factory, upstream, redis):
    redis.command("ACL", "SETUSER", "gw", "on", ">right", "~*", "+@all")
    limits = [{"key": "route", "requests": 2, "per": "1h"}]
    cfg = config(upstream, redis, limits, on_error="deny")
    cfg["rate_limit_store"]["redis"].update({"username": "gw", "password": "wrong"})
    gw = gateway_factory(cfg, name="wrong")
    assert [get(gw).status for _ in range(3)] == [503] * 3
    wait_until(lambda: "redis AUTH failed" in gw.app_log_text(), timeout=5,
               what="a log line naming the refused AUTH")
    line = next(l for l in gw.app_log_text().splitlines() if "redis AUTH failed" in l)
    assert "WRONGPASS" in line and "wrong" not in line.replace("WRONGPASS", ""), line
    check = redis_check(gw)
    assert check["status"] == "unhealthy" and check["state"] == "down", check
    assert check["nodes"] and check["nodes"][0]["status"] == "down", check
    assert metric(gw, "gateway_redis_errors_total", reason="connect") >= 3

    cfg["rate_limit_store"]["redis"]["password"] = "right"
    right = gateway_factory(cfg, name="right")
    assert [get(right).status for _ in range(3)] == [200, 200, 429]
    # Each worker that served a request has its connection (workers connect lazily).
    [node] = redis_check(right)["nodes"]
    assert node["address"] == redis.address and node["role"] == "master", node
    assert node["status"] == "up" and node["workers_connected"] == node["workers"] >= 1, node


def slots_of(port):
    """CLUSTER SLOTS naming 127.0.0.1:port as the master of every slot."""
    return b"*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:%d\r\n" % port


HOSTILE = {
    # name: (cluster mode, EVALSHA's answer (the port is the fake's own), reason, log line)
    "wrong_type": (False, b"*1\r\n$3\r\nabc\r\n", "bad_reply", "bad reply"),
    "huge_array": (False, b"*5000\r\n" + b":1\r\n" * 5000, "bad_reply", "bad reply"),
    "error": (False, b"-ERR boom\r\n", "error_reply", "ERR boom"),
    "moved_outside_a_cluster": (False, b"-MOVED 12 127.0.0.1:%d\r\n", "bad_reply", "redirect"),
    "moved_to_garbage": (True, b"-MOVED 12 999.0.0.1:6379\r\n", "bad_reply", "redirect"),
    "moved_slot_out_of_range": (True, b"-ASK 16384 127.0.0.1:%d\r\n", "bad_reply", "redirect"),
    "moved_forever": (True, b"-MOVED 12 127.0.0.1:%d\r\n", "moved_storm", "without end"),
    "cluster_down": (True, b"-CLUSTERDOWN The cluster is down\r\n", "cluster_down", "CLUSTERDOWN"),
    "slot_map_garbage": (True, None, "timeout", "slot map refused"),
    # hiredis 0.14 alone would abort the process on each of these two.
    "extra_reply": (False, b"-ERR one\r\n:1\r\n", "error_reply", "ERR one"),
    "endless_array": (False, b"*2000000000\r\n", "connect", "no command asked for"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_replies_are_counted_errors(gateway_factory, upstream, case):
    cluster, evalsha, reason, logged = HOSTILE[case]

    def answer(args):
        name = args[0].upper()
        if name == "CLUSTER":
            if evalsha is None:  # slots out of range, a master that is not ip:port
                return b"*1\r\n*3\r\n:0\r\n:99999\r\n*2\r\n$1\r\nx\r\n:1\r\n"
            return slots_of(fake.port)
        if name == "EVALSHA":
            return evalsha % fake.port if b"%d" in evalsha else evalsha
        if name == "SCRIPT":
            return b"+%s\r\n" % (b"0" * 40)
        return b"+PONG\r\n"

    fake = FakeRedis(answer)
    try:
        servers = {"cluster": [fake.address]} if cluster else {"address": fake.address}
        gw = gateway_factory(config(upstream, None, [{"key": "client_ip", "requests": 5,
                                                       "per": "1h"}],
                                    on_error="deny", timeout="200ms", servers=servers))
        assert [get(gw).status for _ in range(3)] == [503] * 3
        assert metric(gw, "gateway_redis_errors_total", reason=reason) >= 1, \
            admin_get(gw, "/metrics")[1].decode()
        wait_until(lambda: logged in gw.app_log_text(), timeout=5, what=f"a log line: {logged}")
        assert admin_get(gw, "/health/live")[0] == 200
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("redis-tls") / "tls"
    r = subprocess.run([str(SOURCE_DIR / "conf" / "make-test-certs.sh"), str(d)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return d


def test_tls_and_a_wrong_password(gateway_factory, upstream, tmp_path, certs):
    server = RedisServer(tmp_path, password="s3cret",
                         tls=(certs / "upstream.crt", certs / "upstream.key",
                              certs / "ca.crt")).start()
    try:
        limits = [{"key": "route", "requests": 2, "per": "1h"}]
        cfg = config(upstream, server, limits, on_error="deny", timeout="500ms")
        cfg["rate_limit_store"]["redis"].update({"password": "s3cret",
                                                 "tls": {"ca": str(certs / "ca.crt")}})
        gw = gateway_factory(cfg, name="tls")
        assert [get(gw).status for _ in range(3)] == [200, 200, 429]
        assert server.command("KEYS", "gw:rl:*") == ["gw:rl:r:limited:0:2/3600000ms/2:"]

        cfg["rate_limit_store"]["redis"]["password"] = "wrong"
        wrong = gateway_factory(cfg, name="tls-wrong")
        assert [get(wrong).status for _ in range(2)] == [503, 503]
        wait_until(lambda: "redis AUTH failed" in wrong.app_log_text(), timeout=5,
                   what="a log line naming the refused AUTH")
        assert redis_check(wrong)["status"] == "unhealthy"

        # Without tls the gateway speaks RESP to a TLS port: refused, never "in clear".
        del cfg["rate_limit_store"]["redis"]["tls"]
        cfg["rate_limit_store"]["redis"]["password"] = "s3cret"
        clear = gateway_factory(cfg, name="clear")
        assert [get(clear).status for _ in range(2)] == [503, 503]
        assert redis_check(clear)["status"] == "unhealthy"
    finally:
        server.stop()


def test_unix_socket(gateway_factory, upstream, tmp_path):
    path = tmp_path / "redis.sock"
    server = RedisServer(tmp_path, extra=["--unixsocket", str(path), "--unixsocketperm", "700"])
    server.start()
    try:
        cfg = config(upstream, server, [{"key": "route", "requests": 2, "per": "1h"}],
                     on_error="deny", servers={"address": f"unix:{path}"})
        gw = gateway_factory(cfg)
        assert [get(gw).status for _ in range(3)] == [200, 200, 429]
        assert server.command("KEYS", "gw:rl:*") == ["gw:rl:r:limited:0:2/3600000ms/2:"]
    finally:
        server.stop()
