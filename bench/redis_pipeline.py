#!/usr/bin/env python3
"""How many Redis syscalls one rate-limit check costs: a gateway (one worker) with a limit
in a local redis-server, wrk at each given concurrency, and `strace -c` on redis-server
for 2 s of it; the checks are INFO commandstats' EVALSHA count over the same 2 s.
Checks that became ready in one loop turn leave in one write and are read in one read, so
the figure falls as concurrency rises (one read and one write per check at -c1).

    GATEWAY_BIN=build/gateway bench/redis_pipeline.py 1 16 64
"""

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))

from harness import Gateway, gateway_config  # noqa: E402
from redis_server import RedisServer  # noqa: E402
from upstream import UpstreamProcess  # noqa: E402


def evalsha_calls(redis):
    m = re.search(r"cmdstat_evalsha:calls=(\d+)", redis.command("INFO", "commandstats"))
    return int(m.group(1)) if m else 0


def main(concurrencies):
    tmp = Path(tempfile.mkdtemp())
    redis = RedisServer(tmp).start()
    up = UpstreamProcess("a", tmp / "a.log")
    limit = {"key": "header:X-U", "requests": 100_000_000, "per": "1s"}  # never refuses
    cfg = gateway_config(
        upstreams={"up": [up.address]}, workers=1,
        rate_limit_store={"type": "redis", "redis": {"address": redis.address,
                                                     "timeout": "200ms", "on_error": "deny"}},
        routes=[{"name": "r", "match": {"path_prefix": "/"}, "upstream": "up",
                 "filters": {"rate_limit": {"limits": [limit]}}}])
    gw = Gateway(tmp, cfg, name="pipeline").start()
    try:
        print("connections  checks  redis read  redis writev  syscalls/check")
        for c in concurrencies:
            wrk = subprocess.Popen(["wrk", "-t1", f"-c{c}", "-d4s", "-H", "X-U: a",
                                    f"http://127.0.0.1:{gw.port}/"],
                                   stdout=subprocess.DEVNULL)
            time.sleep(1)
            before = evalsha_calls(redis)
            st = subprocess.run(["timeout", "-s", "INT", "2", "strace", "-c", "-f", "-p",
                                 str(redis.proc.pid), "-e", "trace=read,write,writev"],
                                capture_output=True, text=True)
            checks = evalsha_calls(redis) - before
            wrk.wait(30)
            calls = {m.group(2): int(m.group(1)) for m in re.finditer(
                r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", st.stderr, re.M)}
            reads, writes = calls.get("read", 0), calls.get("write", 0) + calls.get("writev", 0)
            print(f"{c:11d}  {checks:6d}  {reads:10d}  {writes:12d}  "
                  f"{(reads + writes) / max(checks, 1):14.3f}")
    finally:
        gw.stop(expect=None)
        gw.kill()
        up.stop()
        redis.stop()


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1, 16, 64])
