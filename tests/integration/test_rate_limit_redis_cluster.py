"""rate_limit against a real Redis Cluster (three masters, three replicas) and a real
Sentinel set-up, every server started by the test: three gateways sharing limits on the
cluster, a slot resharded under traffic (MOVED and ASK followed, no check lost), a master
killed (its slots follow on_error until the replica is promoted, the rest keeps counting),
and a sentinel failover followed."""

import threading
import time

import pytest

from client import Client
from harness import gateway_config, wait_until
from redis_server import REDIS_CLI, REDIS_SERVER, RedisCluster, RedisSentinels
from test_rate_limit_redis import metric, redis_check

pytestmark = pytest.mark.skipif(
    not (__import__("os").path.exists(REDIS_SERVER) and __import__("os").path.exists(REDIS_CLI)),
    reason="redis-server or redis-cli is not installed")

HIGH = {"key": "header:X-User", "requests": 1000000, "per": "1000h"}  # a token per 3.6 s
LOW = {"key": "header:X-User", "requests": 5, "per": "1h"}


@pytest.fixture
def cluster(tmp_path):
    c = RedisCluster(tmp_path / "cluster").start()
    yield c
    c.stop()


def config(upstream, redis, on_error="deny", limits=(HIGH,), extra_limits=()):
    return gateway_config(
        upstreams={"up": [upstream]}, workers=2,
        rate_limit_store={"type": "redis",
                          "redis": {**redis, "timeout": "1s", "on_error": on_error}},
        routes=[{"name": "hi", "match": {"path_prefix": "/hi"}, "upstream": "up",
                 "filters": {"rate_limit": {"limits": [*limits, *extra_limits]}}},
                {"name": "lo", "match": {"path_prefix": "/lo"}, "upstream": "up",
                 "filters": {"rate_limit": {"limits": [LOW]}}}])


def get(gw, user, path="/hi"):
    with Client(gw.port, timeout=5) as c:
        return c.request("GET", path, headers={"X-User": user})


def slot_of(cluster, user):
    return cluster.alive()[0].command("CLUSTER", "KEYSLOT", user)


def user_on(cluster, node, avoid=()):
    """A user name whose keys (tagged {name}) live on `node`."""
    for i in range(10000):
        name = f"user{i}"
        if name not in avoid and cluster.owner(slot_of(cluster, name)) is node:
            return name
    raise AssertionError("no user name hashes to that node")


class Traffic:
    """Clients sending requests for `users` to `gateways` until stopped; each response is
    recorded as (monotonic time the request started, user, status, RateLimit-Remaining)."""

    def __init__(self, gateways, users, clients=3, path="/hi"):
        self.gateways, self.users, self.path = gateways, users, path
        self.records, self.errors = [], []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(clients)]

    def run(self, i):
        n = 0
        try:
            while not self.stopping.is_set():
                gw = self.gateways[(i + n) % len(self.gateways)]
                user = self.users[(i + n) % len(self.users)]
                started = time.monotonic()
                r = get(gw, user, self.path)
                with self.lock:
                    self.records.append((started, user, r.status,
                                         r.header("ratelimit-remaining")))
                n += 1
        except Exception as e:  # reported by the test
            self.errors.append(e)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for t in self.threads:
            t.join(30)

    def statuses(self, user=None):
        return [s for _, u, s, _ in self.records if user is None or u == user]


def remaining(gw, user, path="/hi"):
    return int(get(gw, user, path).header("ratelimit-remaining"))


def test_three_gateways_share_limits_on_a_cluster(gateway_factory, upstream, cluster):
    # Two limits per check: the user's and the route's; the route's key has no tag, so most
    # checks are two calls on two nodes, admitted only if both admit.
    route_limit = {"key": "route", "requests": 100000, "per": "24h"}
    cfg = config(upstream, {"cluster": cluster.addresses[:2]}, limits=(
        {"key": "header:X-User", "requests": 30, "per": "1h"},), extra_limits=(route_limit,))
    gws = [gateway_factory(cfg, name=f"c{i}") for i in range(3)]
    users = [f"user{i}" for i in range(8)]
    with Traffic(gws, users, clients=6) as t:
        wait_until(lambda: all(t.statuses(u).count(429) >= 3 for u in users), timeout=30,
                   what="every user refused")
    assert not t.errors, t.errors
    for u in users:
        statuses = t.statuses(u)
        assert set(statuses) <= {200, 429}, statuses
        # 30 per hour, burst 30: at most one token refilled during the test.
        assert 30 <= statuses.count(200) <= 31, (u, statuses.count(200))
    owners = {cluster.owner(slot_of(cluster, u)).port for u in users}
    assert len(owners) >= 2, "the users' keys should spread over several masters"
    keys = cluster.keys()
    assert sum(1 for k in keys if k.endswith("}")) == len(users), keys  # one tagged key each


def test_resharding_follows_moved_and_ask(gateway_factory, upstream, cluster):
    gws = [gateway_factory(config(upstream, {"cluster": [cluster.addresses[0]]}), name=f"r{i}")
           for i in range(2)]
    user = "mover"
    slot = slot_of(cluster, user)
    source = cluster.owner(slot)
    target = next(m for m in cluster.masters() if m is not source)
    source_id, target_id = cluster.node_id(source), cluster.node_id(target)
    with Traffic(gws, [user], clients=3) as t:
        wait_until(lambda: len(t.statuses()) >= 50, timeout=10, what="traffic")
        target.command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        time.sleep(0.3)
        keys = source.command("CLUSTER", "GETKEYSINSLOT", slot, 100)
        assert keys, "the user's bucket should be on the source"
        source.command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
        time.sleep(0.3)  # keys gone from the source: ASK to the target
        for m in cluster.masters():
            m.command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        before = len(t.statuses())
        wait_until(lambda: len(t.statuses()) >= before + 50, timeout=10, what="traffic after")
    assert not t.errors, t.errors
    statuses = t.statuses()
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert target.command("EXISTS", keys[0]) == 1
    left = remaining(gws[0], user)
    # Every admitted request took its token from the one bucket, wherever it was; a token
    # comes back every 3.6 s.
    taken = len(statuses) + 1
    refilled = int((time.monotonic() - t.records[0][0]) / 3.6) + 1
    assert 1000000 - taken <= left <= 1000000 - taken + refilled, (left, taken, refilled)


def test_master_killed_replica_promoted(gateway_factory, upstream, cluster):
    gws = [gateway_factory(config(upstream, {"cluster": cluster.addresses}), name=f"f{i}")
           for i in range(2)]
    victim = cluster.owner(slot_of(cluster, "user0"))
    hit = user_on(cluster, victim)
    other_master = next(m for m in cluster.masters() if m is not victim)
    spared = user_on(cluster, other_master)
    with Traffic(gws, [hit, spared], clients=4) as t:
        wait_until(lambda: len(t.statuses()) >= 50, timeout=10, what="traffic")
        killed_at = time.monotonic()
        victim.kill()

        def first(status, after):
            return min((at for at, u, s, _ in list(t.records) if u == hit and s == status
                        and at > after), default=None)

        refused_at = wait_until(lambda: first(503, killed_at), timeout=10,
                                what="the killed master's slots follow on_error")
        wait_until(lambda: any(n["address"] == victim.address and n["role"] == "master" and
                               n["status"] == "down" for n in redis_check(gws[0])["nodes"]),
                   timeout=5, what="/health showing the killed master down")
        back_at = wait_until(lambda: first(200, refused_at), timeout=30,
                             what="the killed master's slots answered again")
        time.sleep(0.3)
    assert not t.errors, t.errors
    during = [(u, s) for at, u, s, _ in t.records if killed_at < at < back_at]
    assert all(s in (200, 503) for _, s in during), [x for x in during if x[1] not in (200, 503)]
    assert all(s == 200 for u, s in during if u == spared), "the rest of the cluster counts on"
    gap = back_at - killed_at
    print(f"failover gap: {gap:.2f}s (cluster-node-timeout 1s)")
    assert metric(gws[0], "gateway_redis_errors_total", reason="connect") + \
        metric(gws[1], "gateway_redis_errors_total", reason="connect") > 0
    # Exact counting again on the promoted replica, for a bucket that starts there.
    for gw in gws:
        wait_until(lambda: redis_check(gw).get("state") == "up", timeout=10,
                   what="every worker on the new map")
    masters = [n["address"] for n in redis_check(gws[0])["nodes"] if n["role"] == "master"]
    assert victim.address not in masters and len(masters) == 3, masters
    fresh = user_on(cluster, cluster.owner(slot_of(cluster, hit)), avoid=(hit,))
    assert [get(gws[i % 2], fresh, "/lo").status for i in range(7)] == [200] * 5 + [429] * 2


def test_sentinel_failover_followed(gateway_factory, upstream, tmp_path):
    s = RedisSentinels(tmp_path / "sentinel").start()
    try:
        gw = gateway_factory(config(upstream, {"sentinel": {"master": s.name,
                                                            "addresses": s.addresses}}))
        assert [get(gw, "a", "/lo").status for _ in range(6)] == [200] * 5 + [429]
        old = s.master.port
        killed_at = time.monotonic()
        s.master.kill()
        wait_until(lambda: get(gw, "gap", "/lo").status == 503, timeout=5,
                   what="on_error: deny while the master is gone")
        wait_until(lambda: get(gw, "gap", "/lo").status == 200, timeout=30,
                   what="the gateway on the promoted replica")
        print(f"sentinel failover gap: {time.monotonic() - killed_at:.2f}s "
              "(down-after-milliseconds 1000)")
        assert s.master_port() != old
        wait_until(lambda: redis_check(gw).get("state") == "up", timeout=10,
                   what="every worker follows the new master")
        assert [get(gw, "b", "/lo").status for _ in range(6)] == [200] * 5 + [429]
    finally:
        s.stop()
