"""gRPC for the integration tests (Debian python3-grpcio and python3-grpc-tools): the test
protos compiled at test time, a real gRPC upstream in a child process, and channels and
stubs to reach it or the gateway.

    from grpc_support import grpc_upstream_factory, grpc_certs  # fixtures
    import grpc_support as gs

    def test_x(grpc_upstream_factory, gateway_factory):
        up = grpc_upstream_factory()                      # h2c, Health "" = SERVING
        gw = gateway_factory(config naming up.address with protocol: h2)
        with gs.insecure_channel(gw.port) as ch:
            reply, call = gs.echo_stub(ch).Unary.with_call(
                gs.pb().echo.Msg(text="hi"), metadata=[("x-delay-ms", "50")], timeout=5)
            gs.metadata(call.trailing_metadata())["x-trailer"] == "ok"

Protos (tests/integration/protos/, compiled once per process by grpc_tools.protoc into a
temporary directory removed at exit):

    protos(directory=None) -> Protos     .echo / .echo_grpc (echo_pb2, echo_pb2_grpc),
                                         .health / .health_grpc (grpc.health.v1),
                                         .directory (where they were generated)
    pb() -> Protos                       the same, shorter
    SERVING, NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN   the health status names

The upstream (grpc_upstream.py; its docstring lists the request metadata it obeys:
x-delay-ms, x-abort-code, x-abort-message, x-abort-after, x-echo-metadata, x-add-trailer,
x-interval-ms; and what every response carries: x-peer, x-trailer, x-trailer-bin,
x-count, x-bytes):

    GrpcUpstream(workdir, name="grpc", *, port=0, tls=None, health=None,
                 max_concurrent_streams=None, workers=256)
        tls: (cert, key) paths, e.g. grpc_certs / "upstream.crt", grpc_certs / "upstream.key"
        health: {service: status} at start (default {"": "SERVING"})
      .start(timeout=20) -> self       waits until it listens; .port, .address ("127.0.0.1:P")
      .stop()                          SIGTERM, then SIGKILL after 5 s; reaped
      .kill()                          SIGKILL at once (a crash); .pause() / .resume() (SIGSTOP/CONT)
      .restart() -> self               a new process on the same port
      .set_health(service, status)     rewrites the health table (atomically; read per check)
      .set_health_table(table)         the whole table: {service: status}
      .calls(method=None) -> [dict]    the calls seen so far, oldest first: time, method
                                       ("/echo.Echo/Unary", "/grpc.health.v1.Health/Check"),
                                       peer, metadata ([[name, value]], -bin values hex),
                                       service (health checks)
      .wait_calls(n, method=None, timeout=10) -> [dict]   until at least n such calls
      .peers(method=None) -> set[str]  distinct peers (one per TCP connection) of those calls
    grpc_upstream_factory                fixture: make(**kw) -> a started GrpcUpstream in
                                         tmp_path, every one stopped at teardown
    grpc_certs                           session fixture: conf/make-test-certs.sh's directory
                                         (ca.crt, server.crt/key for localhost and 127.0.0.1,
                                         upstream.crt/key, client.crt/key)

Channels (grpc.Channel, usable as context managers; each has its own connection (a local
subchannel pool), ignores http_proxy, and makes no transparent retries, so that what a
test counts is what it sent):

    insecure_channel(target, options=()) -> grpc.Channel         h2c; target: a port or "host:port"
    secure_channel(target, ca, server_name="localhost", client_cert=None, client_key=None,
                   options=()) -> grpc.Channel                    TLS verified against `ca`
    wait_ready(channel, timeout=10)      connects now (raises grpc.FutureTimeoutError)
    echo_stub(channel), health_stub(channel)
    metadata(pairs) -> dict              a call's initial_metadata()/trailing_metadata() as
                                         {name: value} (the last value of a repeated name)
    check_health(target, service="", timeout=5, **channel_kw) -> str
                                         one Health/Check: the status name, or the
                                         grpc.StatusCode name of a failed call

The gateway in front (a config for gateway_factory):

    grpc_gateway_config(endpoints, *, certs=None, upstream=None, routes=None, **top) -> str
        one upstream `grpc` (protocol: h2) over `endpoints` (GrpcUpstreams or "host:port"),
        `upstream` merged into its block (e.g. {"tls": {"ca": ...}, "health_check": ...});
        one listener: h2c, or TLS (ALPN h2 and http/1.1) with certs/server.crt when `certs`
        (grpc_certs) is given; `routes` default to one route "grpc" for every path;
        other top-level keys as harness.gateway_config takes them
"""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest

from harness import PDEATHSIG_PREFIX, SOURCE_DIR, gateway_config, kill_and_reap

HERE = Path(__file__).resolve().parent
PROTO_DIR = HERE / "protos"
PROTO_FILES = ("echo.proto", "health.proto")
UPSTREAM_SCRIPT = HERE / "grpc_upstream.py"

UNKNOWN, SERVING, NOT_SERVING, SERVICE_UNKNOWN = "UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"

CHANNEL_OPTIONS = [
    ("grpc.enable_http_proxy", 0),
    ("grpc.enable_retries", 0),
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]

_protos: SimpleNamespace | None = None


def protos(directory: Path | None = None) -> SimpleNamespace:
    """The generated modules, compiled on first use into `directory` (a temporary one, removed
    at exit, when None) or imported from it when it already holds them."""
    global _protos
    if _protos is not None:
        return _protos
    owned = directory is None
    if owned:
        directory = Path(tempfile.mkdtemp(prefix="grpc-protos-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
    if not (directory / "echo_pb2.py").exists():
        r = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"--proto_path={PROTO_DIR}",
                            f"--python_out={directory}", f"--grpc_python_out={directory}",
                            *PROTO_FILES], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"grpc_tools.protoc failed ({r.returncode}): {r.stderr}")
    sys.path.insert(0, str(directory))
    try:
        import echo_pb2
        import echo_pb2_grpc
        import health_pb2
        import health_pb2_grpc
    finally:
        sys.path.remove(str(directory))
    _protos = SimpleNamespace(echo=echo_pb2, echo_grpc=echo_pb2_grpc, health=health_pb2,
                              health_grpc=health_pb2_grpc, directory=directory)
    return _protos


pb = protos


# ------------------------------------------------------------------------------ upstream


class GrpcUpstream:
    def __init__(self, workdir, name: str = "grpc", *, port: int = 0, tls=None, health=None,
                 max_concurrent_streams: int | None = None, workers: int = 256):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = port
        self.tls = tls
        self.max_concurrent_streams = max_concurrent_streams
        self.workers = workers
        self.log_path = self.workdir / f"{name}.calls.jsonl"
        self.health_path = self.workdir / f"{name}.health.json"
        self.stderr_path = self.workdir / f"{name}.stderr"
        self.proc: subprocess.Popen | None = None
        self.set_health_table(health if health is not None else {"": SERVING})

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "GrpcUpstream":
        cmd = [*PDEATHSIG_PREFIX, sys.executable, str(UPSTREAM_SCRIPT), "--port", str(self.port),
               "--health-file", str(self.health_path), "--log", str(self.log_path),
               "--workers", str(self.workers), "--generated", str(protos().directory)]
        if self.tls:
            cmd += ["--tls", str(self.tls[0]), str(self.tls[1])]
        if self.max_concurrent_streams:
            cmd += ["--max-concurrent-streams", str(self.max_concurrent_streams)]
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=err, start_new_session=True)
        try:
            self.port = self._read_port(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _read_port(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        line = b""
        fd = self.proc.stdout.fileno()
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"{self.name}: not listening after {timeout} s: {self.stderr()}")
            chunk = os.read(fd, 256)
            if not chunk:
                raise RuntimeError(f"{self.name}: exited with {self.proc.wait(5)}: {self.stderr()}")
            line += chunk
        return int(json.loads(line)["port"])

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        if self.proc is not None:
            kill_and_reap(self.proc)
            self.proc.stdout.close()

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def restart(self, timeout: float = 20.0) -> "GrpcUpstream":
        self.stop()
        return self.start(timeout)

    # -- health -------------------------------------------------------------------------

    def set_health_table(self, table: dict) -> None:
        # rename() makes the change atomic: the server never reads half a table.
        tmp = self.health_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(table))
        tmp.replace(self.health_path)
        self._health = dict(table)

    def set_health(self, service: str, status: str) -> None:
        self.set_health_table({**self._health, service: status})

    # -- what it saw --------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[dict]:
        try:
            lines = self.log_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                c = json.loads(line)
            except ValueError:
                continue  # the line being written
            if method is None or c["method"] == method:
                out.append(c)
        return out

    def wait_calls(self, n: int, method: str | None = None, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            calls = self.calls(method)
            if len(calls) >= n:
                return calls
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: {len(calls)} calls of {method or 'any method'}"
                                     f" after {timeout} s, wanted {n}")
            time.sleep(0.02)

    def peers(self, method: str | None = None) -> set[str]:
        return {c["peer"] for c in self.calls(method)}


@pytest.fixture
def grpc_upstream_factory(tmp_path):
    made = []

    def make(name: str | None = None, **kw) -> GrpcUpstream:
        u = GrpcUpstream(tmp_path, name or f"grpc{len(made)}", **kw)
        made.append(u)
        return u.start()

    yield make
    for u in made:
        u.stop()


@pytest.fixture(scope="session")
def grpc_certs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("grpc-certs")
    subprocess.run([str(SOURCE_DIR / "conf" / "make-test-certs.sh"), str(d)], check=True,
                   capture_output=True, timeout=120)
    return d


# ------------------------------------------------------------------------------ clients


def _target(target) -> str:
    return f"127.0.0.1:{target}" if isinstance(target, int) else str(target)


def insecure_channel(target, options=()) -> grpc.Channel:
    return grpc.insecure_channel(_target(target), options=CHANNEL_OPTIONS + list(options))


def secure_channel(target, ca, server_name: str = "localhost", client_cert=None, client_key=None,
                   options=()) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=Path(ca).read_bytes(),
        private_key=Path(client_key).read_bytes() if client_key else None,
        certificate_chain=Path(client_cert).read_bytes() if client_cert else None)
    opts = CHANNEL_OPTIONS + [("grpc.ssl_target_name_override", server_name)] + list(options)
    return grpc.secure_channel(_target(target), creds, options=opts)


def wait_ready(channel: grpc.Channel, timeout: float = 10.0) -> None:
    grpc.channel_ready_future(channel).result(timeout=timeout)


def echo_stub(channel: grpc.Channel):
    return protos().echo_grpc.EchoStub(channel)


def health_stub(channel: grpc.Channel):
    return protos().health_grpc.HealthStub(channel)


def metadata(pairs) -> dict:
    return {k: v for k, v in (pairs or ())}


def check_health(target, service: str = "", timeout: float = 5.0, **channel_kw) -> str:
    ch = secure_channel(target, **channel_kw) if "ca" in channel_kw else insecure_channel(target)
    with ch:
        try:
            reply = health_stub(ch).Check(protos().health.HealthCheckRequest(service=service),
                                          timeout=timeout)
        except grpc.RpcError as e:
            return e.code().name
    return protos().health.HealthCheckResponse.ServingStatus.Name(reply.status)


# ------------------------------------------------------------------------------ gateway


def grpc_gateway_config(endpoints, *, certs=None, upstream=None, routes=None, **top) -> str:
    eps = [e if isinstance(e, str) else e.address for e in endpoints]
    cfg = gateway_config(
        upstreams={"grpc": {"endpoints": eps, "protocol": "h2", **(upstream or {})}},
        routes=routes or [{"name": "grpc", "match": {"path_prefix": "/"}, "upstream": "grpc"}],
        **top)
    listener = {"name": "grpc", "address": "127.0.0.1:@PORT@"}
    if certs:
        listener["tls"] = {"certificates": [{"cert": str(Path(certs) / "server.crt"),
                                             "key": str(Path(certs) / "server.key")}]}
    else:
        listener["h2c"] = True
    cfg["listeners"] = [listener]
    cfg["admin"] = {"address": "127.0.0.1:@ADMIN_PORT@"}
    return json.dumps(cfg, indent=2) + "\n"  # a text config: the harness fills in the ports
