"""A real redis-server for the integration tests: started on a free port with no
persistence, stopped (or killed) by PID, and a minimal RESP client to look inside it.

    redis = RedisServer(tmp_path).start()
    redis.command("PING")      # -> "PONG"
    redis.kill()               # SIGKILL, as a crash would
    redis.start()              # the same port again, empty
    redis.stop()               # at teardown, whatever happened
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from harness import free_port, kill_and_reap

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
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
    def __init__(self, workdir: Path, password: str | None = None):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / f"redis-{self.port}.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "RedisServer":
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir)]
        if self.password:
            args += ["--requirepass", self.password]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if self.command("PING") == "PONG":
                    return self
            except (OSError, RedisError):
                pass
            time.sleep(0.02)
        self.kill()
        raise AssertionError(f"redis-server not ready on port {self.port}")

    def command(self, *args, timeout: float = 2.0):
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
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
