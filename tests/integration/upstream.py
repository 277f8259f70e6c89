"""A controllable HTTP/1.1 upstream for the integration tests.

Raw sockets and one thread per connection, so that it can misbehave precisely. It keeps
connections alive (HTTP/1.1 rules), records every request it receives and counts the
connections it accepts.

What it answers is chosen per request by query parameters of the request target (they
survive routing, strip_prefix and normalisation), for example `/x?status=204` or
`/dl?size=1048576&chunked=1`:

  (none)            200, JSON echo of what was received (see `echo_document`)
  status=N          this status (the echo body, unless N is 1xx/204/304 or body/size is set)
  body=TEXT         this body instead of the echo
  size=N            N bytes of the test pattern (see `pattern_crc`), streamed
  chunked=1         Transfer-Encoding: chunked (chunk=N bytes per chunk, default 16 KiB)
  close=1           close-delimited: no Content-Length, the body ends when the connection closes
  delay=MS          wait before sending the response head
  drop=1            close the connection without answering
  reset=1           reset the connection (RST) without answering
  garbage=1         answer with bytes that are not HTTP
  truncate=N        announce the full body but send only N bytes of it, then close
  hdr=Name:Value    add a response header (repeatable)
  sink=1            do not keep the request body: count it and CRC32 it (for huge uploads)
  interim=1         send "HTTP/1.1 100 Continue" (and a 103) before the final response

Per-instance switches for connection-level misbehaviour:

  close_after_response  close every connection silently right after each response
  drop_reused           answer the first request of each connection; close without
                        answering any later one (a pooled connection that went stale just as
                        the gateway reused it)
  handler               a callable(request, conn) -> bool that answers instead (True keeps
                        the connection open)
  status_override       answer every request (but health checks) with this status and the
                        echo body
  health_path           the health-check path (default /healthz); health_status, when not
                        None, is the status its requests get (else the usual echo)
  delay                 seconds to wait before answering any request (health checks too)
  hang                  while True, read requests but answer none (health checks included)
  on_request            a callable(request) run for each request received

`Upstream(name, port=N)` binds a given port (to come back on the same address after
stop()); `close_connections()` closes every open connection from the server side;
`traffic()` is `snapshot()` without the health checks. `websocket_echo` is a handler that
completes a WebSocket handshake (101 with Sec-WebSocket-Accept) and then echoes raw bytes
(other requests get the usual answers).

`UpstreamProcess` runs an Upstream in a child process (`python3 upstream.py ...`), so that
it can die for real (SIGKILL), hang (SIGSTOP: the kernel still accepts connections, nothing
answers) and come back (SIGCONT, or a new process on the same port); it logs each request
it receives to a file that `requests()` reads.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import struct
import threading
import time
import urllib.parse
import zlib
from dataclasses import dataclass, field

from harness import kill_and_reap
from http_reader import BodyDigest, BufferedSocket, HeaderLookup, read_chunked, read_head

PATTERN_BLOCK = random.Random(20261121).randbytes(1 << 20)
_crc_cache: dict[int, int] = {}


def pattern_chunks(size: int, block: int = 256 * 1024):
    """Yields memoryviews that together are the first `size` bytes of the test pattern
    (PATTERN_BLOCK repeated). `block` must divide 1 MiB."""
    view = memoryview(PATTERN_BLOCK)
    sent = 0
    while sent < size:
        off = sent % len(PATTERN_BLOCK)
        n = min(block, size - sent, len(PATTERN_BLOCK) - off)
        yield view[off:off + n]
        sent += n


def pattern_crc(size: int) -> int:
    """CRC32 of the first `size` bytes of the test pattern."""
    if size not in _crc_cache:
        crc = 0
        for chunk in pattern_chunks(size, 1 << 20):
            crc = zlib.crc32(chunk, crc)
        _crc_cache[size] = crc
    return _crc_cache[size]


@dataclass
class Request(HeaderLookup):
    method: str
    target: str
    version: str
    headers: list  # [(name, value)] as received, in order
    body: bytes
    conn_id: int
    index: int  # 0 for the first request on its connection
    chunked: bool = False
    chunk_sizes: list = field(default_factory=list)
    body_len: int = 0
    body_crc: int = 0
    raw_head: bytes = b""
    received_at: float = 0.0

    @property
    def path(self) -> str:
        return urllib.parse.urlsplit(self.target).path

    @property
    def query(self) -> dict:
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.target).query,
                                           keep_blank_values=True))


class ConnectionGone(Exception):
    pass


class Conn(BufferedSocket):
    """One accepted connection: buffered reads, plain writes."""

    error = ConnectionGone
    peer_gone = (OSError,)
    max_line = 1 << 20

    def __init__(self, sock: socket.socket, conn_id: int, upstream: "Upstream"):
        super().__init__(sock)
        self.id = conn_id
        self.upstream = upstream
        self.requests = 0

    def reset(self) -> None:
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()


class Upstream:
    def __init__(self, name: str = "up", handler=None, port: int = 0):
        self.name = name
        self.handler = handler
        self.close_after_response = False
        self.drop_reused = False
        self.status_override = None
        self.health_path = "/healthz"
        self.health_status = None
        self.delay = 0.0
        self.hang = False
        self.on_request = None
        self.requests: list[Request] = []
        self.connections = 0
        self.bytes_sent = 0  # body bytes of streamed (size=N) responses
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._open: dict[int, Conn] = {}
        self._threads: list[threading.Thread] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(512)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._accept_thread = threading.Thread(target=self._accept_loop, name=f"{name}-accept",
                                               daemon=True)
        self._accept_thread.start()

    # -- inspection ---------------------------------------------------------------------

    def snapshot(self) -> list[Request]:
        with self._lock:
            return list(self.requests)

    def wait_requests(self, n: int, timeout: float = 10.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            time.sleep(0.01)
        raise AssertionError(f"upstream {self.name}: {len(self.requests)} requests after "
                             f"{timeout}s, expected {n}")

    def last(self) -> Request:
        with self._lock:
            assert self.requests, f"upstream {self.name} received no request"
            return self.requests[-1]

    def traffic(self) -> list[Request]:
        """The requests received, health checks left out."""
        return [r for r in self.snapshot() if r.path != self.health_path]

    def close_connections(self) -> None:
        """Closes every open connection from the server side (the upstream stays up)."""
        with self._lock:
            conns = list(self._open.values())
        for c in conns:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def reset_counters(self) -> None:
        with self._lock:
            self.requests.clear()
            self.connections = 0
            self.bytes_sent = 0

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    # -- lifecycle ----------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        try:
            self.sock.close()
        except OSError:
            pass
        self.close_connections()
        self._accept_thread.join(5)
        for t in list(self._threads):
            t.join(5)

    def _accept_loop(self) -> None:
        next_id = 0
        while not self._stop.is_set():
            try:
                s, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            next_id += 1
            s.settimeout(60)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Conn(s, next_id, self)
            with self._lock:
                self.connections += 1
                self._open[conn.id] = conn
                self._threads = [t for t in self._threads if t.is_alive()]
            t = threading.Thread(target=self._serve, args=(conn,), name=f"{self.name}-c{conn.id}",
                                 daemon=True)
            self._threads.append(t)
            t.start()

    # -- serving ------------------------------------------------------------------------

    def _serve(self, conn: Conn) -> None:
        try:
            while not self._stop.is_set():
                req = self._read_request(conn)
                if req is None:
                    break
                if self.drop_reused and req.index > 0:
                    break  # close without answering
                while self.hang and not self._stop.is_set():
                    self._stop.wait(0.02)
                if self.delay and self._stop.wait(self.delay):
                    break
                health = req.path == self.health_path
                if health and self.health_status is not None:
                    keep = self._respond_status(req, conn, self.health_status)
                elif not health and self.status_override is not None:
                    keep = self._respond_status(req, conn, self.status_override)
                elif self.handler is not None:
                    keep = self.handler(req, conn)
                else:
                    keep = self._respond(req, conn)
                if not keep or self.close_after_response:
                    break
        except ConnectionGone:
            pass
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError) as e:
            if not self._stop.is_set():
                self.errors.append(f"conn {conn.id}: {e!r}")
        finally:
            with self._lock:
                self._open.pop(conn.id, None)
            conn.close()

    def _read_request(self, conn: Conn):
        try:
            line = conn.read_line()
        except ConnectionGone:
            return None
        while line == b"":  # tolerate stray CRLF between requests
            try:
                line = conn.read_line()
            except ConnectionGone:
                return None
        parts = line.decode("latin-1").split(" ")
        if len(parts) != 3:
            raise ConnectionGone(f"bad request line {line!r}")
        method, target, version = parts
        headers, raw_head = read_head(conn, line, strict=False)
        req = Request(method=method, target=target, version=version, headers=headers, body=b"",
                      conn_id=conn.id, index=conn.requests, raw_head=raw_head,
                      received_at=time.monotonic())
        conn.requests += 1
        body = BodyDigest(keep=req.query.get("sink") != "1")
        te = req.header("transfer-encoding")
        cl = req.header("content-length")
        if te is not None and te.lower().split(",")[-1].strip() == "chunked":
            req.chunked = True
            req.chunk_sizes = read_chunked(conn, body)
        elif cl is not None:
            conn.consume(int(cl), body)
        req.body = body.body
        req.body_len = body.length
        req.body_crc = body.crc
        with self._lock:
            self.requests.append(req)
        if self.on_request is not None:
            self.on_request(req)
        return req

    def _respond_status(self, req: Request, conn: Conn, status: int) -> bool:
        """`status` with the echo body (kept alive as the client asks)."""
        client_close = any(t.strip().lower() == "close"
                           for v in req.header_all("connection") for t in v.split(","))
        if req.version == "HTTP/1.0":
            client_close = True
        body = json.dumps(self.echo_document(req)).encode()
        head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Whatever')}",
                "Content-Type: application/json", f"Content-Length: {len(body)}"]
        if client_close:
            head.append("Connection: close")
        conn.send(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") +
                  (b"" if req.method == "HEAD" else body))
        return not client_close

    def echo_document(self, req: Request) -> dict:
        return {
            "upstream": self.name,
            "method": req.method,
            "target": req.target,
            "path": req.path,
            "version": req.version,
            "headers": [[n, v] for n, v in req.headers],
            "body": req.body.decode("latin-1"),
            "body_len": req.body_len,
            "body_crc": req.body_crc,
            "chunked": req.chunked,
            "conn_id": req.conn_id,
            "index": req.index,
        }

    def _respond(self, req: Request, conn: Conn) -> bool:
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(req.target).query, keep_blank_values=True)
        one = {k: v[-1] for k, v in q.items()}
        client_close = any(t.strip().lower() == "close"
                           for v in req.header_all("connection") for t in v.split(","))
        if req.version == "HTTP/1.0":
            client_close = not any(t.strip().lower() == "keep-alive"
                                   for v in req.header_all("connection") for t in v.split(","))
        if "delay" in one:
            if self._stop.wait(int(one["delay"]) / 1000.0):
                return False
        if one.get("drop") == "1":
            return False
        if one.get("reset") == "1":
            conn.reset()
            return False
        if one.get("garbage") == "1":
            conn.send(b"this is not HTTP at all\r\n\r\n\x00\x01\x02")
            return False
        if one.get("interim") == "1":
            conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")

        status = int(one.get("status", "200"))
        no_body = status < 200 or status in (204, 304)
        extra = []
        for h in q.get("hdr", []):
            name, _, value = h.partition(":")
            extra.append((name.strip(), value.strip()))

        size = None
        body = b""
        ctype = None
        if "size" in one:
            size = int(one["size"])
        elif "body" in one:
            body = one["body"].encode("latin-1")
            ctype = "text/plain"
        else:
            body = json.dumps(self.echo_document(req)).encode()
            ctype = "application/json"
        length = size if size is not None else len(body)

        chunked = one.get("chunked") == "1" and not no_body
        close_delimited = one.get("close") == "1" and not no_body
        truncate = int(one["truncate"]) if "truncate" in one else None
        head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Whatever')}"]
        if ctype and not no_body:
            head.append(f"Content-Type: {ctype}")
        if chunked:
            head.append("Transfer-Encoding: chunked")
        elif close_delimited:
            head.append("Connection: close")
        elif not no_body or (req.method == "HEAD"):
            head.append(f"Content-Length: {length}")
        for n, v in extra:
            head.append(f"{n}: {v}")
        if client_close and not close_delimited:
            head.append("Connection: close")
        conn.send(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if req.method == "HEAD" or no_body:
            return not client_close

        chunk = int(one.get("chunk", 16384))
        if size is not None:
            source = pattern_chunks(size, 256 * 1024 if not chunked else min(chunk, 256 * 1024))
        else:
            source = (memoryview(body)[i:i + chunk] for i in range(0, len(body), chunk))
        sent = 0
        for piece in source:
            if truncate is not None and sent + len(piece) > truncate:
                piece = piece[:truncate - sent]
                if len(piece):
                    conn.send(b"%x\r\n" % len(piece) + bytes(piece) + b"\r\n" if chunked else piece)
                return False
            if chunked:
                conn.send(b"%x\r\n" % len(piece))
                conn.send(piece)
                conn.send(b"\r\n")
            else:
                conn.send(piece)
            sent += len(piece)
            if size is not None:
                with self._lock:
                    self.bytes_sent += len(piece)
        if truncate is not None:
            return False
        if chunked:
            conn.send(b"0\r\n\r\n")
        if close_delimited:
            return False
        return not client_close


REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently",
    304: "Not Modified", 400: "Bad Request", 404: "Not Found", 418: "I'm a teapot",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
}


WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def websocket_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()).decode()


def websocket_echo(req: Request, conn: Conn) -> bool:
    """An Upstream handler: answers a WebSocket handshake with 101 (Sec-WebSocket-Accept
    computed from the key), then echoes every byte it receives until either side closes.
    A request that is not a WebSocket handshake, or that has a `status` query parameter (a
    refused handshake), gets the usual answer of the query parameters."""
    key = req.header("sec-websocket-key")
    upgrade = (req.header("upgrade") or "").lower()
    if not key or "websocket" not in upgrade or "status" in req.query:
        return conn.upstream._respond(req, conn)
    conn.send(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Accept: {websocket_accept(key)}\r\n\r\n").encode())
    if conn.buf:  # bytes that came right behind the head
        data = bytes(conn.buf)
        conn.buf.clear()
        conn.send(data)
    while not conn.upstream._stop.is_set():
        try:
            data = conn.sock.recv(1 << 16)
        except (socket.timeout, OSError):
            break
        if not data:
            break
        conn.send(data)
    return False


# -- an Upstream in a child process -------------------------------------------------------

_SETPRIV = (["/usr/bin/setpriv", "--pdeathsig", "KILL"]
            if os.access("/usr/bin/setpriv", os.X_OK) else [])


class UpstreamProcess:
    """An Upstream (default behaviour and the query parameters of the module docstring) in
    a child process. `status`: the child's status_override. Stop it with stop() (SIGKILL,
    by PID); `kill()` is the same, named for a test that makes it die."""

    def __init__(self, name: str, log_path, port: int = 0, status: int | None = None,
                 start_timeout: float = 10.0):
        self.name = name
        self.log_path = str(log_path)
        self.port = port
        self.status = status
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "UpstreamProcess":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        args = [*_SETPRIV, sys.executable, os.path.abspath(__file__), "--name", self.name,
                "--port", str(self.port), "--log", self.log_path]
        if self.status is not None:
            args += ["--status", str(self.status)]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], self.start_timeout)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("READY "):
            self.stop()
            raise AssertionError(f"upstream process {self.name} did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def restart(self) -> "UpstreamProcess":
        """A new process on the same port (after kill())."""
        self.stop()
        return self.start()

    def kill(self) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is None:
            return
        kill_and_reap(self.proc)
        if self.proc.stdout:
            self.proc.stdout.close()

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def requests(self) -> list[tuple[str, str]]:
        """(method, target) of every request received so far, by every process that
        used this log."""
        try:
            with open(self.log_path) as f:
                lines = f.read().split("\n")[:-1]
        except OSError:
            return []
        return [tuple(line.split(" ", 1)) for line in lines]

    def traffic(self, health_path: str = "/healthz") -> list[tuple[str, str]]:
        return [r for r in self.requests()
                if urllib.parse.urlsplit(r[1]).path != health_path]


def _main(argv) -> None:
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="up")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log", required=True)
    ap.add_argument("--status", type=int)
    a = ap.parse_args(argv)
    log = open(a.log, "a", buffering=1)
    log_lock = threading.Lock()

    def record(req):
        with log_lock:
            log.write(f"{req.method} {req.target}\n")
            log.flush()

    u = Upstream(a.name, port=a.port)
    u.on_request = record
    u.status_override = a.status
    sys.stdout.write(f"READY {u.port}\n")
    sys.stdout.flush()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    u.stop()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    _main(sys.argv[1:])
