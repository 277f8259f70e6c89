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
"""

from __future__ import annotations

import json
import random
import socket
import struct
import threading
import time
import urllib.parse
import zlib
from dataclasses import dataclass, field

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
class Request:
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

    def header(self, name: str, default=None):
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return default

    def header_all(self, name: str) -> list:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def has_header(self, name: str) -> bool:
        return any(n.lower() == name.lower() for n, _ in self.headers)


class ConnectionGone(Exception):
    pass


class Conn:
    """One accepted connection: buffered reads, plain writes."""

    def __init__(self, sock: socket.socket, conn_id: int, upstream: "Upstream"):
        self.sock = sock
        self.id = conn_id
        self.upstream = upstream
        self.buf = bytearray()
        self.requests = 0

    def _fill(self, max_bytes: int = 1 << 20) -> None:
        try:
            data = self.sock.recv(max_bytes)
        except (ConnectionError, socket.timeout, OSError) as e:
            raise ConnectionGone(str(e))
        if not data:
            raise ConnectionGone("eof")
        self.buf += data

    def read_line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if len(self.buf) > 1 << 20:
                raise ConnectionGone("line too long")
            self._fill()

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill(max(n - len(self.buf), 65536))
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def consume(self, n: int, sink) -> None:
        """Reads n bytes, handing them to sink(memoryview) without keeping them."""
        if self.buf:
            take = min(n, len(self.buf))
            sink(memoryview(bytes(self.buf[:take])))
            del self.buf[:take]
            n -= take
        scratch = bytearray(1 << 20)
        view = memoryview(scratch)
        while n > 0:
            try:
                got = self.sock.recv_into(view, min(n, len(scratch)))
            except (ConnectionError, socket.timeout, OSError) as e:
                raise ConnectionGone(str(e))
            if got == 0:
                raise ConnectionGone("eof in body")
            sink(view[:got])
            n -= got

    def send(self, data) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def reset(self) -> None:
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()


class Upstream:
    def __init__(self, name: str = "up", handler=None):
        self.name = name
        self.handler = handler
        self.close_after_response = False
        self.drop_reused = False
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
        self.sock.bind(("127.0.0.1", 0))
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
        with self._lock:
            conns = list(self._open.values())
        for c in conns:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
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
                if self.handler is not None:
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
        raw = [line]
        parts = line.decode("latin-1").split(" ")
        if len(parts) != 3:
            raise ConnectionGone(f"bad request line {line!r}")
        method, target, version = parts
        headers = []
        while True:
            hl = conn.read_line()
            raw.append(hl)
            if hl == b"":
                break
            name, _, value = hl.decode("latin-1").partition(":")
            headers.append((name, value.strip(" \t")))
        req = Request(method=method, target=target, version=version, headers=headers, body=b"",
                      conn_id=conn.id, index=conn.requests, raw_head=b"\r\n".join(raw) + b"\r\n",
                      received_at=time.monotonic())
        conn.requests += 1
        sink = req.query.get("sink") == "1"
        state = {"crc": 0, "len": 0}
        parts_kept = []

        def take(view):
            state["crc"] = zlib.crc32(view, state["crc"])
            state["len"] += len(view)
            if not sink:
                parts_kept.append(bytes(view))

        te = req.header("transfer-encoding")
        cl = req.header("content-length")
        if te is not None and te.lower().split(",")[-1].strip() == "chunked":
            req.chunked = True
            while True:
                size_line = conn.read_line().decode("latin-1")
                size = int(size_line.split(";")[0].strip(), 16)
                if size == 0:
                    while conn.read_line() != b"":  # trailers
                        pass
                    break
                req.chunk_sizes.append(size)
                conn.consume(size, take)
                if conn.read_exact(2) != b"\r\n":
                    raise ConnectionGone("bad chunk terminator")
        elif cl is not None:
            conn.consume(int(cl), take)
        req.body = b"".join(parts_kept)
        req.body_len = state["len"]
        req.body_crc = state["crc"]
        with self._lock:
            self.requests.append(req)
        return req

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
