#!/usr/bin/env python3
"""Helpers for bench/compare.sh (standard library only).

  free-ports N                     print N free TCP ports on 127.0.0.1
  parse-wrk FILE                   wrk --latency output (or ApacheBench's, for the full
                                   TLS handshake case, or h2load's, for the HTTP/2 cases,
                                   with its --log-file FILE.requests) -> one tab-separated
                                   line: requests seconds rps p50_us p99_us socket_errors
                                   non2xx. An h2load run with a request that did not
                                   succeed with a 2xx, or not over HTTP/2, is an error
  idle-conns --pid P --port N ...  RSS growth of process P (and its children) for
                                   N idle keep-alive client connections
  sink --port N                    an HTTP/1.1 upload sink: reads each request's
                                   Content-Length body, then answers 200 (upstream of
                                   the streamed-upload case)
  stream --pid P --url U [--upload FILE]
                                   one streamed download (or PUT upload of FILE) through
                                   a proxy with curl, sampling the RSS of P and its
                                   children: prints bytes seconds rss_before rss_peak
  table RESULTS.tsv                the throughput table
  mem-table MEMORY.tsv             the idle-connection memory table
  stream-table STREAM.tsv          the streamed-body memory table
"""
import argparse
import os
import re
import selectors
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

# ---------------------------------------------------------------- utilities


def free_ports(count):
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def process_tree(pid):
    """pid and its descendants (an nginx master and its workers)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return pids


def rss_bytes(pid):
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


# ---------------------------------------------------------------- wrk output

UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def to_us(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"bad latency {text!r}")
    return float(m.group(1)) * UNITS_US[m.group(2)]


def parse_ab(out):
    """ApacheBench (ab -t ... -c ...): percentiles are whole milliseconds."""
    def num(label):
        m = re.search(rf"^{label}:\s+([\d.]+)", out, re.M)
        return float(m.group(1)) if m else 0.0
    if "Complete requests:" not in out:
        raise SystemExit("parse-wrk: no 'Complete requests' in ab output")
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\d+)", out, re.M))
    return [int(num("Complete requests")), f"{num('Time taken for tests'):.3f}",
            f"{num('Requests per second'):.1f}", f"{int(pct['50']) * 1000:.1f}",
            f"{int(pct['99']) * 1000:.1f}", int(num("Failed requests")),
            int(num("Non-2xx responses"))]


def parse_h2load(out, path):
    """h2load -D (nghttp2-client): its summary lines, and the percentiles from its
    --log-file (one line per request: start time, status, microseconds to the end of the
    response), which h2load does not print itself. Every request must have succeeded with
    a 2xx over HTTP/2: otherwise the run is refused (SystemExit), not counted."""
    fin = re.search(r"^finished in ([\d.]+)(us|ms|s|m|h), ([\d.]+) req/s", out, re.M)
    req = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                    r"(\d+) failed, (\d+) errored, (\d+) timeout", out, re.M)
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out, re.M)
    if not (fin and req and codes):
        raise SystemExit(f"h2load: no summary in {path}: "
                         + " | ".join(out.strip().splitlines()[-3:]))
    total, started, done, succeeded, failed, errored, timeout = map(int, req.groups())
    c2xx, c3xx, c4xx, c5xx = map(int, codes.groups())
    problems = []
    if succeeded == 0:
        problems.append("no request succeeded")
    if succeeded != done or failed or errored or timeout:
        problems.append(req.group(0))
    # A status is counted when a response's HEADERS arrive, a request as done at its
    # END_STREAM: a response whose headers had arrived when the duration ran out, but not
    # its end (its DATA, or a gRPC reply's trailers), is in "2xx" and not in "succeeded".
    # There can be at most as many as were in flight (started - done).
    if c3xx or c4xx or c5xx or not succeeded <= c2xx <= succeeded + (started - done):
        problems.append(codes.group(0))
    protos = set(re.findall(r"^Application protocol: (\S+)", out, re.M))
    if not protos or protos - {"h2", "h2c"}:
        problems.append("Application protocol: " + (", ".join(sorted(protos)) or "none printed"))
    if problems:
        raise SystemExit("h2load: " + "; ".join(problems))
    p50 = p99 = float("nan")
    try:
        with open(path + ".requests") as f:
            durations = sorted(int(line.split("\t")[2]) for line in f if line.strip())
    except OSError:
        durations = []
    if durations:
        p50 = durations[(len(durations) - 1) // 2]
        p99 = durations[min(len(durations) - 1, int(len(durations) * 0.99))]
    seconds = to_us(fin.group(1) + fin.group(2)) / 1e6
    return [succeeded, f"{seconds:.3f}", f"{float(fin.group(3)):.1f}", f"{p50:.1f}",
            f"{p99:.1f}", failed + errored + timeout, c3xx + c4xx + c5xx]


def parse_wrk(path):
    with open(path) as f:
        out = f.read()
    if out.lstrip().startswith("This is ApacheBench") or "Complete requests:" in out:
        return parse_ab(out)
    if out.lstrip().startswith("starting benchmark...") or re.search(r"^finished in ", out, re.M):
        return parse_h2load(out, path)
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if not m:
        raise SystemExit(f"parse-wrk: no request count in {path}")
    requests = int(m.group(1))
    seconds = to_us(m.group(2) + m.group(3)) / 1e6
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return [requests, f"{seconds:.3f}", f"{rps:.1f}", f"{to_us(pct['50']):.1f}",
            f"{to_us(pct['99']):.1f}", errors, int(non2xx.group(1)) if non2xx else 0]


# ---------------------------------------------------------------- idle connections


class Conn:
    __slots__ = ("sock", "buf", "status", "done")

    def __init__(self, sock):
        self.sock, self.buf, self.status, self.done = sock, b"", None, False

    def response_complete(self):
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0:
            return False
        head = self.buf[:head_end].decode("latin-1")
        self.status = int(head.split(" ", 2)[1])
        body = len(self.buf) - head_end - 4
        length = re.search(r"^content-length:\s*(\d+)", head, re.I | re.M)
        if length:
            return body >= int(length.group(1))
        if re.search(r"^transfer-encoding:.*chunked", head, re.I | re.M):
            return self.buf.endswith(b"\r\n0\r\n\r\n") or self.buf.endswith(b"\r\n\r\n0\r\n\r\n")
        return True


def exchange(conns, request, deadline):
    """Connects each socket, sends one request and reads its response (concurrently)."""
    sel = selectors.DefaultSelector()
    for c in conns:
        sel.register(c.sock, selectors.EVENT_WRITE, c)
    pending = len(conns)
    while pending and time.monotonic() < deadline:
        for key, events in sel.select(timeout=1.0):
            c = key.data
            try:
                if events & selectors.EVENT_WRITE:
                    err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, os.strerror(err))
                    c.sock.sendall(request)
                    sel.modify(c.sock, selectors.EVENT_READ, c)
                    continue
                chunk = c.sock.recv(65536)
                if not chunk:
                    raise OSError("closed by peer")
                c.buf += chunk
                if not c.response_complete():
                    continue
                c.done = True
            except (OSError, ValueError, IndexError):
                c.status = c.status or 0
            sel.unregister(c.sock)
            pending -= 1
    sel.close()


def idle_conns(args):
    request = f"GET {args.path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    deadline = time.monotonic() + args.timeout

    def open_batch(n):
        batch = []
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", args.port))
            batch.append(Conn(s))
        exchange(batch, request, deadline)
        return batch

    def close_all(conns):
        for c in conns:  # RST instead of FIN: no TIME_WAIT pile-up between proxies
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.sock.close()

    close_all(open_batch(50))  # warm-up: upstream pool, lazy allocations
    time.sleep(args.settle)
    before = rss_bytes(args.pid)
    conns = []
    while len(conns) < args.n and time.monotonic() < deadline:
        conns += open_batch(min(args.batch, args.n - len(conns)))
    time.sleep(args.settle)
    after = rss_bytes(args.pid)
    ok = sum(1 for c in conns if c.done and 200 <= (c.status or 0) < 300)
    close_all(conns)
    print(f"{before}\t{after}\t{ok}\t{args.n - ok}")


# ---------------------------------------------------------------- streamed bodies


def sink(args):
    """Reads each request's head and Content-Length body, then answers 200: an upstream
    that, unlike nginx's `return`, answers only once the whole upload has arrived."""
    def serve(conn):
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        pending = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in pending:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    pending += chunk
                head, _, pending = pending.partition(b"\r\n\r\n")
                m = re.search(rb"^content-length:\s*(\d+)", head, re.I | re.M)
                left = (int(m.group(1)) if m else 0) - len(pending)
                pending = b""
                while left > 0:
                    n = conn.recv_into(view, min(left, len(buf)))
                    if not n:
                        return
                    left -= n
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.port))
    srv.listen(128)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def stream(args):
    """One transfer through the proxy with curl (bounded by --timeout) while the proxy's
    RSS is sampled every 10 ms: the peak, not the value after the transfer, is what a
    body buffered in memory would show."""
    before = rss_bytes(args.pid)
    cmd = ["curl", "-sS", "-k", "-o", "/dev/null", "--max-time", str(args.timeout),
           "-w", "%{http_code} %{size_download} %{size_upload} %{time_total}"]
    if args.upload:
        cmd += ["-T", args.upload]
    proc = subprocess.Popen(cmd + [args.url], stdout=subprocess.PIPE, text=True)
    peak = before
    while proc.poll() is None:
        peak = max(peak, rss_bytes(args.pid))
        time.sleep(0.01)
    out = proc.stdout.read().split()
    if proc.returncode != 0 or len(out) != 4 or out[0] != "200":
        raise SystemExit(f"stream: curl exit {proc.returncode}, output {out}")
    moved = int(out[2] if args.upload else out[1])
    print(f"{moved}\t{float(out[3]):.2f}\t{before}\t{peak}")


# ---------------------------------------------------------------- tables


def median(values):
    return statistics.median(values) if values else float("nan")


def fmt_us(us):
    return f"{us / 1000:.2f}ms" if us >= 1000 else f"{us:.0f}us"


def print_table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) if i < 2 else str(x).rjust(w)
                               for i, (x, w) in enumerate(zip(r, widths)))
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


def table(path, clk_tck):
    runs = {}  # (case, target) -> list of dicts, in file order
    with open(path) as f:
        cols = f.readline().rstrip("\n").split("\t")
        for line in f:
            r = dict(zip(cols, line.rstrip("\n").split("\t")))
            runs.setdefault((r["case"], r["proxy"]), []).append(r)

    def us_per_request(r, column):
        return int(r[column]) / clk_tck * 1e6 / int(r["requests"])

    summary = {}
    for (case, proxy), rs in runs.items():
        s = {
            "rps": median([float(r["rps"]) for r in rs]),
            "p50": median([float(r["p50_us"]) for r in rs]),
            "p99": median([float(r["p99_us"]) for r in rs]),
            "errors": sum(int(r["socket_errors"]) + int(r["non2xx"]) for r in rs),
            "runs": len(rs),
            "path": rs[0]["path"], "workers": rs[0]["workers"], "base": rs[0]["base"],
        }
        if rs[0]["cpu_ticks"] != "-":
            s["cpu_us_by_run"] = {r["run"]: us_per_request(r, "cpu_ticks")
                                  for r in rs if int(r["requests"])}
            s["cpu_us"] = median(list(s["cpu_us_by_run"].values()))
            s["sys_us"] = median([us_per_request(r, "sys_ticks") for r in rs if int(r["requests"])])
            s["cpu_pct"] = median([100 * int(r["cpu_ticks"]) / clk_tck / float(r["seconds"])
                                   for r in rs])
            s["per_cpu_s"] = 1e6 / s["cpu_us"] if s["cpu_us"] else float("nan")
        # Per request: TCP segments on the machine (the kernel work of a proxied request is
        # mostly one transmit and one receive per segment) and the proxy's context switches.
        s["segments"] = median([int(r["tcp_segments"]) / int(r["requests"]) for r in rs if int(r["requests"])])
        if rs[0]["switches"] != "-":
            s["switches"] = median([int(r["switches"]) / int(r["requests"]) for r in rs if int(r["requests"])])
        if rs[0]["aux_ticks"] != "-":
            s["aux_us"] = median([us_per_request(r, "aux_ticks") for r in rs if int(r["requests"])])
        summary[(case, proxy)] = s

    header = ["case", "target", "req/s", "p50", "p99", "errors", "segs/req", "proxy CPU",
              "switches/req", "CPU us/req", "user+sys", "req/s per CPU-s", "x nginx", "x base"]
    # Ratios of CPU per request: runs are interleaved (run k of every target back to back),
    # so run k is compared with the other target's run k and the median of those ratios
    # taken: slow drifts in the machine's other load cancel out.
    def ratio(case, other, s):
        theirs = summary.get((case, other), {}).get("cpu_us_by_run", {})
        ratios = [theirs[k] / us for k, us in s["cpu_us_by_run"].items() if k in theirs and us]
        return f"{median(ratios):.2f}" if ratios else "-"

    rows, bases = [], []
    for (case, proxy), s in summary.items():
        if "cpu_us" in s:
            base = ratio(case, s["base"], s) if s["base"] != "-" else "-"
            cpu = [f"{s['cpu_pct']:.0f}%", f"{s.get('switches', float('nan')):.3f}", f"{s['cpu_us']:.1f}",
                   f"{s['cpu_us'] - s['sys_us']:.1f}+{s['sys_us']:.1f}", f"{s['per_cpu_s']:.0f}",
                   ratio(case, "nginx", s) if proxy != "nginx" else "1.00", base]
            if s["base"] != "-":
                bases.append(f"{case}/{proxy} against {s['base']}")
        else:
            cpu = ["-", "-", "-", "-", "-", "-", "-"]
        rows.append([case, proxy, f"{s['rps']:.0f}", fmt_us(s["p50"]), fmt_us(s["p99"]),
                     s["errors"], f"{s['segments']:.2f}"] + cpu)
    print_table(header, rows)
    print("(segs/req: TCP segments sent on the machine per request, both directions, all"
          " processes; switches/req: the proxy's context switches per request, every thread;"
          " user+sys: CPU us/req in user space + in the kernel, medians;"
          " x nginx: nginx's CPU us/req / this target's, run k against nginx's run k, median;"
          " x base: the same against the case's base target"
          + (": " + "; ".join(bases) if bases else "") + ")")

    notes = []
    for (case, proxy), s in summary.items():
        if proxy == "direct" and (case, "gateway") in summary:
            g = summary[(case, "gateway")]
            notes.append(f"gateway / direct upstream, {case}: req/s {g['rps'] / s['rps']:.2f}x")
        if proxy == "forward" and "cpu_us" in s:
            notes.append(f"{case}/forward: bytes copied with no HTTP, the kernel's floor: "
                         f"{s['cpu_us']:.1f} us CPU per request ({s['cpu_us'] - s['sys_us']:.1f} in "
                         f"user space); x nginx of forward is the most any proxy could reach here")
        if "aux_us" in s:
            notes.append(f"{case}/{proxy}: the case's auxiliary server (redis-server, or the "
                         f"gRPC cases' upstream) spent {s['aux_us']:.1f} us CPU per request")
    # workers 2 vs 1: the same path and proxy, different worker counts
    for (case, proxy), s in summary.items():
        if s["workers"] == "1" or proxy == "direct":
            continue
        for (case1, proxy1), s1 in summary.items():
            if proxy1 == proxy and s1["path"] == s["path"] and s1["workers"] == "1":
                extra = ""
                if "cpu_us" in s and "cpu_us" in s1:
                    extra = f", CPU us/req {s['cpu_us']:.1f} vs {s1['cpu_us']:.1f}"
                notes.append(f"{proxy} workers {s['workers']} / 1 ({case} / {case1}): "
                             f"req/s {s['rps'] / s1['rps']:.2f}x{extra}")
                break
    if notes:
        print()
        print("\n".join(notes))


def mem_table(path):
    rows, results = [], []
    with open(path) as f:
        f.readline()
        for line in f:
            proxy, n, before, after, ok, failed = line.split()
            results.append((proxy, int(n), int(before), int(after), int(ok), int(failed)))
    per_conn = {p: (a - b) / n for p, n, b, a, _, _ in results}
    for proxy, n, before, after, ok, failed in results:
        nginx = per_conn.get("nginx")
        ratio = f"{per_conn[proxy] / nginx:.2f}" if nginx and nginx > 0 else "-"
        rows.append([proxy, n, ok, failed, f"{before / 2**20:.1f}", f"{after / 2**20:.1f}",
                     f"{(after - before) / 2**20:.1f}", f"{per_conn[proxy]:.0f}", ratio])
    print_table(["proxy", "conns", "answered 2xx", "failed", "RSS before MiB",
                 "RSS after MiB", "growth MiB", "bytes/conn", "x nginx"], rows)


def stream_table(path):
    rows = []
    with open(path) as f:
        f.readline()
        for line in f:
            proxy, direction, moved, seconds, before, peak = line.split()
            rows.append([proxy, direction, f"{int(moved) / 2**20:.0f}", seconds,
                         f"{int(moved) / 2**20 / float(seconds):.0f}",
                         f"{int(before) / 2**20:.1f}", f"{int(peak) / 2**20:.1f}",
                         f"{(int(peak) - int(before)) / 2**20:.1f}"])
    print_table(["proxy", "body", "MiB", "seconds", "MiB/s", "RSS before MiB",
                 "RSS peak MiB", "growth MiB"], rows)


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("free-ports").add_argument("count", type=int)
    sub.add_parser("parse-wrk").add_argument("file")
    t = sub.add_parser("table")
    t.add_argument("file")
    t.add_argument("--clk-tck", type=int, default=os.sysconf("SC_CLK_TCK"))
    sub.add_parser("mem-table").add_argument("file")
    sub.add_parser("stream-table").add_argument("file")
    sub.add_parser("sink").add_argument("--port", type=int, required=True)
    st = sub.add_parser("stream")
    st.add_argument("--pid", type=int, required=True)
    st.add_argument("--url", required=True)
    st.add_argument("--upload", help="PUT this file instead of downloading")
    st.add_argument("--timeout", type=int, default=600)
    ic = sub.add_parser("idle-conns")
    ic.add_argument("--pid", type=int, required=True)
    ic.add_argument("--port", type=int, required=True)
    ic.add_argument("--path", default="/small")
    ic.add_argument("--n", type=int, default=10000)
    ic.add_argument("--batch", type=int, default=200, help="connections opened concurrently")
    ic.add_argument("--settle", type=float, default=3.0, help="seconds before reading RSS")
    ic.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()

    if args.cmd == "free-ports":
        print(" ".join(map(str, free_ports(args.count))))
    elif args.cmd == "parse-wrk":
        print("\t".join(map(str, parse_wrk(args.file))))
    elif args.cmd == "idle-conns":
        idle_conns(args)
    elif args.cmd == "table":
        table(args.file, args.clk_tck)
    elif args.cmd == "mem-table":
        mem_table(args.file)
    elif args.cmd == "stream-table":
        stream_table(args.file)
    elif args.cmd == "sink":
        sink(args)
    elif args.cmd == "stream":
        stream(args)


if __name__ == "__main__":
    sys.exit(main())
