"""A real redis-server for the integration tests: started on a free port with no
persistence, stopped (or killed) by PID, and a minimal RESP client to look inside it.

    redis = RedisServer(tmp_path).start()
    redis.command("PING")      # -> "PONG"
    redis.kill()               # SIGKILL, as a crash would
    redis.start()              # the same port again, empty
    redis.stop()               # at teardown, whatever happened

RedisCluster: six of them (three masters, three replicas) made one cluster with
`redis-cli --cluster create`; RedisSentinels: a master, a replica and three sentinels
(`redis-server --sentinel`). Each is stopped, every process by PID, by stop().
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

from harness import free_port, kill_and_reap

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
START_TIMEOUT = 10.0


class RedisError(Exception):
    pass


def _encode(*args) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class _Reader:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode("latin-1")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RedisError(f"bad reply {line!r}")


class RedisServer:
    """tls: (cert, key, ca) makes the port a TLS port (clients are not asked for a
    certificate); command() then speaks TLS too."""

    def __init__(self, workdir: Path, password: str | None = None, extra: list[str] = (),
                 tls: tuple[Path, Path, Path] | None = None):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.password = password
        self.extra = list(extra)
        self.tls = tls
        if tls:
            self.extra += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file",
                           str(tls[0]), "--tls-key-file", str(tls[1]), "--tls-ca-cert-file",
                           str(tls[2]), "--tls-auth-clients", "no"]
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / f"redis-{self.port}.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    start_args: list[str] | None = None  # a whole command line instead (a sentinel)

    def start(self) -> "RedisServer":
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir)]
        if self.password:
            args += ["--requirepass", self.password]
        args += self.extra
        if self.start_args:
            args = self.start_args
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if self.command("PING") in ("PONG", "+PONG"):
                    return self
            except (OSError, RedisError):
                pass
            time.sleep(0.02)
        self.kill()
        raise AssertionError(f"redis-server not ready on port {self.port}")

    def command(self, *args, timeout: float = 2.0):
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as raw:
            s = raw
            if self.tls:
                s = ssl.create_default_context(cafile=str(self.tls[2])).wrap_socket(
                    raw, server_hostname="localhost")
            r = _Reader(s)
            if self.password:
                s.sendall(_encode("AUTH", self.password))
                r.reply()
            s.sendall(_encode(*args))
            return r.reply()

    def kill(self) -> None:
        """SIGKILL by PID and reap; safe to call twice."""
        if self.proc is not None:
            kill_and_reap(self.proc)
        log = getattr(self, "_log", None)
        if log is not None and not log.closed:
            log.close()

    stop = kill


def info_field(text: str, field: str) -> str:
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    return ""


class RedisCluster:
    """Three masters and three replicas on loopback ports; node_timeout (ms) bounds how long
    a killed master takes to be replaced."""

    def __init__(self, workdir: Path, node_timeout: int = 1000):
        self.workdir = Path(workdir)
        self.nodes: list[RedisServer] = []
        for i in range(6):
            d = self.workdir / f"cluster-{i}"
            d.mkdir(parents=True, exist_ok=True)
            self.nodes.append(RedisServer(d, extra=[
                "--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                "--cluster-config-file", str(d / "nodes.conf"),
                "--cluster-node-timeout", str(node_timeout),
                # A replica syncs at once and may always take over: a test kills a master
                # seconds after the cluster was made.
                "--repl-diskless-sync-delay", "0", "--cluster-replica-validity-factor", "0",
                # The other masters keep serving while one's slots wait for a failover.
                "--cluster-require-full-coverage", "no"]))

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes]

    def start(self) -> "RedisCluster":
        try:
            for n in self.nodes:
                n.start()
            r = subprocess.run([REDIS_CLI, "--cluster", "create", *self.addresses,
                                "--cluster-replicas", "1", "--cluster-yes"],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stdout + r.stderr
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def alive(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Every live node says cluster_state:ok, and every replica is in sync."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if all(info_field(n.command("CLUSTER", "INFO"), "cluster_state") == "ok" and
                       info_field(n.command("INFO", "replication"), "master_link_status")
                       in ("", "up") for n in self.alive()):
                    return
            except (OSError, RedisError):
                pass
            time.sleep(0.05)
        raise AssertionError("the Redis cluster did not become ok")

    def masters(self) -> list[RedisServer]:
        out = []
        for n in self.alive():
            if info_field(n.command("INFO", "replication"), "role") == "master":
                out.append(n)
        return out

    def owner(self, slot: int) -> RedisServer:
        for entry in self.alive()[0].command("CLUSTER", "SLOTS"):
            if entry[0] <= slot <= entry[1]:
                port = entry[2][1]
                return next(n for n in self.nodes if n.port == port)
        raise AssertionError(f"no owner for slot {slot}")

    def node_id(self, node: RedisServer) -> str:
        return node.command("CLUSTER", "MYID")

    def keys(self) -> list[str]:
        out = []
        for n in self.masters():
            out += n.command("KEYS", "*")
        return out

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


class RedisSentinels:
    """A master, its replica and three sentinels watching it as `name` (quorum 2), with
    down_after (ms) and failover timeouts short enough for a test."""

    def __init__(self, workdir: Path, name: str = "gw", down_after: int = 1000):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.master = RedisServer(self.workdir)
        self.replica = RedisServer(self.workdir)
        self.replica.extra = ["--replicaof", "127.0.0.1", str(self.master.port)]
        self.sentinels: list[RedisServer] = []
        self.down_after = down_after

    @property
    def addresses(self) -> list[str]:
        return [s.address for s in self.sentinels]

    def start(self) -> "RedisSentinels":
        try:
            self.master.start()
            self.replica.start()
            for i in range(3):
                conf = self.workdir / f"sentinel-{i}.conf"
                s = RedisServer(self.workdir)
                conf.write_text(
                    f"port {s.port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                    f"sentinel monitor {self.name} 127.0.0.1 {self.master.port} 2\n"
                    f"sentinel down-after-milliseconds {self.name} {self.down_after}\n"
                    f"sentinel failover-timeout {self.name} 5000\n"
                    f"sentinel parallel-syncs {self.name} 1\n")
                s.start_args = [REDIS_SERVER, str(conf), "--sentinel"]
                self.sentinels.append(s)
                s.start()
        except BaseException:
            self.stop()
            raise
        return self

    def master_port(self) -> int:
        return int(self.sentinels[0].command("SENTINEL", "get-master-addr-by-name", self.name)[1])

    def stop(self) -> None:
        for s in [*self.sentinels, self.replica, self.master]:
            s.stop()


class FakeRedis:
    """A TCP server speaking RESP that answers each command with `answer(args)` (raw bytes):
    for the replies a real server never sends (wrong types, garbage redirects and maps).
    Commands arrive pipelined; each connection is served by its own thread until closed."""

    def __init__(self, answer):
        self.answer = answer
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.commands: list[list[str]] = []
        self.conns: list[socket.socket] = []
        self.closing = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self):
        while not self.closing:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        reader = _Reader(conn)
        try:
            while True:
                args = reader.reply()  # a command is an array of bulk strings
                self.commands.append(args)
                conn.sendall(self.answer(args))
        except (OSError, ConnectionError, RedisError, TypeError):
            conn.close()

    def stop(self):
        self.closing = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the thread
        except OSError:
            pass
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        self.thread.join(5)
