"""Runs the real gateway binary for the integration tests.

    gw = Gateway(tmp_path, gateway_config(upstreams={"up": [u]}, routes=[...]))
    gw.start()            # waits for GET /health/live == 200 and the listener accepting
    ...
    gw.stop()             # SIGTERM, asserts exit code 0

Ports: the listener and admin ports are chosen by binding port 0, and the port stays
reserved (a bound, non-listening SO_REUSEADDR|SO_REUSEPORT socket held by the test) until
the gateway has bound it, so two test processes running side by side cannot pick the
same one. The config is written as JSON (a subset of YAML) from a dict, or from a
template string where @PORT@ and @ADMIN_PORT@ are replaced.

The access log (stdout) and the application log (stderr) go to files in the work dir.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

SOURCE_DIR = Path(os.environ.get("SOURCE_DIR") or Path(__file__).resolve().parents[2])
GATEWAY_BIN = os.environ.get("GATEWAY_BIN") or str(SOURCE_DIR / "build" / "gateway")

PDEATHSIG_PREFIX = (["/usr/bin/setpriv", "--pdeathsig", "KILL"]
                    if os.access("/usr/bin/setpriv", os.X_OK) else [])

START_TIMEOUT = 20.0  # seconds; generous for a loaded 2-core machine
STOP_TIMEOUT = 20.0

ACCESS_LOG_KEYS = ("timestamp", "request_id", "client_ip", "method", "protocol", "path", "route", "status",
                   "duration_ms", "upstream", "upstream_endpoint", "upstream_duration_ms",
                   "bytes_in", "bytes_out", "tls", "user")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (bind to port 0)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


_REFUSING: list[socket.socket] = []


def refusing_address() -> str:
    """127.0.0.1:PORT where every connect is refused for the rest of the run: a socket bound
    there (without SO_REUSEADDR/SO_REUSEPORT, so nothing else can bind it) never listens. A
    port that free_port() only looked up could be taken meanwhile by another test's server."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    _REFUSING.append(s)
    return f"127.0.0.1:{s.getsockname()[1]}"


def reserve_port() -> socket.socket:
    """Binds port 0 and keeps it: the returned socket does not listen, so a later bind with
    SO_REUSEADDR (as the gateway's) succeeds, while other bind(0) calls skip the port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    return s


def is_sanitized_build(path: str = GATEWAY_BIN) -> bool:
    """ASan/UBSan builds: memory bounds and throughput do not mean the same there."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return b"AddressSanitizer" in data or b"__asan_init" in data


def kill_and_reap(proc: subprocess.Popen, group: bool = False) -> None:
    """SIGKILL the process (its whole process group with `group`) and wait for it, so that
    no zombie is left behind; one that has already exited is no error."""
    if proc.poll() is None:
        try:
            (os.killpg if group else os.kill)(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


def gateway_config(upstreams: dict, routes: list, **top) -> dict:
    """A config dict. upstreams: {name: [Upstream or "host:port", ...]} or {name: dict};
    routes: a list of route dicts. Other top-level keys are passed through; the defaults
    below are the ones the tests rely on."""
    ups = []
    for name, spec in upstreams.items():
        if isinstance(spec, dict):
            d = {"name": name}
            d.update(spec)
            d["endpoints"] = [e if isinstance(e, str) else e.address for e in d["endpoints"]]
        else:
            d = {"name": name,
                 "endpoints": [e if isinstance(e, str) else e.address for e in spec],
                 "keepalive": {"max_idle": 8, "idle_timeout": "30s"}}
        ups.append(d)
    cfg = {
        "workers": 2,
        "timeouts": {"upstream_connect": "1s", "upstream_response": "5s", "drain": "5s"},
        "upstreams": ups,
        "routes": routes,
    }
    for k, v in top.items():
        if k == "timeouts":
            cfg["timeouts"] = {**cfg["timeouts"], **v}
        else:
            cfg[k] = v
    return cfg


def simple_config(upstream, **top) -> dict:
    """The minimal config of the Foundation issue: /api (strip_prefix) and / to one
    upstream (or a list of upstream servers for round robin)."""
    eps = upstream if isinstance(upstream, (list, tuple)) else [upstream]
    return gateway_config(
        upstreams={"up": eps},
        routes=[
            {"name": "api", "match": {"path_prefix": "/api"}, "upstream": "up",
             "strip_prefix": "/api"},
            {"name": "default", "match": {"path_prefix": "/"}, "upstream": "up"},
        ],
        **top)


class Gateway:
    def __init__(self, workdir: Path, config, args=None, env=None, name: str = "gw"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self._reservations = [reserve_port(), reserve_port()]
        self.port = self._reservations[0].getsockname()[1]
        self.admin_port = self._reservations[1].getsockname()[1]
        self.config_path = self.workdir / f"{name}.yaml"
        self.stdout_path = self.workdir / f"{name}.access.log"
        self.stderr_path = self.workdir / f"{name}.app.log"
        self.args = args
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.returncode = None
        self.write_config(config)

    # -- config -------------------------------------------------------------------------

    def render(self, config) -> str:
        if isinstance(config, str):
            return (config.replace("@PORT@", str(self.port))
                    .replace("@ADMIN_PORT@", str(self.admin_port)))
        cfg = dict(config)
        cfg.setdefault("listeners", [{"name": "http", "address": f"127.0.0.1:{self.port}"}])
        cfg.setdefault("admin", {"address": f"127.0.0.1:{self.admin_port}"})
        return self.render(json.dumps(cfg, indent=2) + "\n")  # @PORT@ in a given listener

    def write_config(self, config) -> None:
        self.config_text = self.render(config)
        self.config_path.write_text(self.config_text)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> "Gateway":
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        args = self.args if self.args is not None else ["-c", str(self.config_path)]
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        # setpriv execs the gateway in place (same PID) with a parent-death signal, so a
        # gateway cannot outlive a test run that is killed outright.
        self.proc = subprocess.Popen([*PDEATHSIG_PREFIX, GATEWAY_BIN, *args], stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err, cwd=self.workdir,
                                     env=env, start_new_session=True)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        finally:
            for r in self._reservations:
                r.close()
            self._reservations = []
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        live = accepting = False
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError(f"gateway exited with {rc} during start-up:\n{self.app_log_text()}")
            if not live:
                try:
                    with urllib.request.urlopen(
                            f"http://127.0.0.1:{self.admin_port}/health/live", timeout=1) as r:
                        live = r.status == 200
                except OSError:
                    pass
            if live and not accepting:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    accepting = True
                except OSError:
                    pass
            if live and accepting:
                return
            time.sleep(0.02)
        raise AssertionError(f"gateway not ready within {timeout}s (live={live}, "
                             f"accepting={accepting}):\n{self.app_log_text()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"gateway did not exit within {timeout}s; killed")
        self._close_files()
        return self.returncode

    def stop(self, timeout: float = STOP_TIMEOUT, expect: int | None = 0) -> int:
        """SIGTERM, wait, and (by default) assert a clean exit."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.wait_exit(timeout)
        if expect is not None:
            assert rc == expect, (f"gateway exit code {rc}, expected {expect}:\n"
                                  f"{self.app_log_text()}")
        return rc

    def kill(self) -> None:
        """Unconditional cleanup by PID (finalizers)."""
        if self.proc is not None:
            kill_and_reap(self.proc)
        self._close_files()
        for r in self._reservations:
            r.close()
        self._reservations = []

    def _close_files(self) -> None:
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f is not None and not f.closed:
                f.close()

    # -- observation --------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.proc.pid

    def app_log_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-20000:]
        except OSError:
            return ""

    def app_log(self) -> list[dict]:
        out = []
        for line in self.app_log_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def access_log(self) -> list[dict]:
        """Every complete access-log line so far, each parsed as JSON (a line that is not
        JSON fails the test)."""
        try:
            data = self.stdout_path.read_bytes()
        except OSError:
            return []
        lines = data.split(b"\n")
        out = []
        for line in lines[:-1]:  # the last piece is incomplete (or empty)
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"access log line is not JSON: {line[:500]!r}")
        return out

    def wait_access_log(self, count: int, since: int = 0, timeout: float = 10.0) -> list[dict]:
        """Waits until at least `count` lines exist after the first `since`, returns them."""
        deadline = time.monotonic() + timeout
        while True:
            entries = self.access_log()[since:]
            if len(entries) >= count:
                return entries
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(entries)} access-log lines after {timeout}s, "
                                     f"expected {count}: {entries!r}")
            time.sleep(0.02)

    def find_access(self, pred, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for e in self.access_log():
                if pred(e):
                    return e
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching access-log line in {timeout}s: "
                                     f"{self.access_log()[-10:]!r}")
            time.sleep(0.02)

    def status_kib(self, field: str) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.pid}/status")

    def rss_kib(self) -> int:
        return self.status_kib("VmRSS")

    def peak_rss_kib(self) -> int:
        return self.status_kib("VmHWM")

    def reset_peak_rss(self) -> bool:
        """Resets VmHWM to the current RSS (Linux >= 4.0); False when not permitted."""
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False


def run_gateway_cli(args, cwd=None, timeout: float = 30.0, env=None, unset=(),
                    max_memory: int | None = None) -> subprocess.CompletedProcess:
    """Runs the binary to completion (--check, --version, bad command lines). `max_memory`
    (bytes) limits its address space, so that a run that would take all the machine's
    memory fails at once (std::bad_alloc) instead; not under a sanitizer, whose shadow
    memory needs terabytes of address space."""
    e = dict(os.environ)
    if env:
        e.update(env)
    for name in unset:
        e.pop(name, None)
    limit = None
    if max_memory and not is_sanitized_build():
        def limit():
            resource.setrlimit(resource.RLIMIT_AS, (max_memory, max_memory))
    return subprocess.run([GATEWAY_BIN, *args], cwd=cwd, env=e, capture_output=True,
                          text=True, errors="replace", timeout=timeout,
                          stdin=subprocess.DEVNULL, preexec_fn=limit)


def admin_get(gw: Gateway, path: str, timeout: float = 5.0):
    req = urllib.request.Request(f"http://127.0.0.1:{gw.admin_port}{path}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def health_endpoint(gw: Gateway, address: str, upstream: str = "up") -> dict:
    """The endpoint's entry in the admin /health document's upstream check."""
    doc = json.loads(admin_get(gw, "/health")[1])
    [e] = [e for e in doc["checks"]["upstream:" + upstream]["endpoints"] if e["address"] == address]
    return e


def open_paths(gw: Gateway) -> set[str]:
    """What the gateway's file descriptors point at (/proc/PID/fd), e.g. to see that a log
    file was closed."""
    fd_dir = f"/proc/{gw.pid}/fd"
    paths = set()
    for fd in os.listdir(fd_dir):
        try:
            paths.add(os.readlink(f"{fd_dir}/{fd}"))
        except FileNotFoundError:  # closed since the listing (a socket, a pipe)
            pass
    return paths


def reference_yaml() -> Path:
    """The contract's reference.yaml (beside SPEC.md when there is one, else the copy in
    tests/data)."""
    shared = SOURCE_DIR.parent / "shared" / "reference.yaml"
    return shared if shared.exists() else SOURCE_DIR / "tests" / "data" / "reference.yaml"


def reference_workdir(workdir: Path) -> Path:
    """Lays out under `workdir` the files reference.yaml names (relative to the working
    directory): the demo JWKS and API keys, and test certificates. Returns `workdir`."""
    import shutil
    conf = workdir / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    shutil.copy(SOURCE_DIR / "conf" / "jwks.json", conf / "jwks.json")
    shutil.copy(SOURCE_DIR / "conf" / "api-keys.txt", conf / "api-keys.txt")
    subprocess.run([str(SOURCE_DIR / "conf" / "make-test-certs.sh"), str(conf / "tls")], check=True,
                   capture_output=True, timeout=120)
    return workdir


def wait_until(pred, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(interval)
