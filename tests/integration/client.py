"""Raw-socket HTTP/1.1 client for the integration tests: sends exact bytes, parses
responses strictly (so framing mistakes of the gateway show), reads until close."""

from __future__ import annotations

import json
import socket
import time
import zlib
from dataclasses import dataclass, field


class ProtocolError(AssertionError):
    pass


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: list  # [(name, value)]
    body: bytes = b""
    raw_head: bytes = b""
    chunked: bool = False
    chunk_sizes: list = field(default_factory=list)
    close_delimited: bool = False
    body_len: int = 0
    body_crc: int = 0

    def header(self, name: str, default=None):
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return default

    def header_all(self, name: str) -> list:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def has_header(self, name: str) -> bool:
        return any(n.lower() == name.lower() for n, _ in self.headers)

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        body = self.body[:300]
        return f"<Response {self.status} {self.headers!r} body={body!r}>"


class Client:
    """One client connection. Every blocking operation is bounded by `timeout`."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0):
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False

    # -- plumbing -----------------------------------------------------------------------

    def send(self, data) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self, max_bytes: int = 1 << 20) -> bool:
        if self.eof:
            return False
        try:
            data = self.sock.recv(max_bytes)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if not self._fill():
                raise ProtocolError(f"connection closed mid-line; have {bytes(self.buf)!r}")

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill(max(65536, n - len(self.buf))):
                raise ProtocolError(f"connection closed with {len(self.buf)} of {n} bytes")
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def _consume(self, n: int, sink) -> None:
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
            except ConnectionResetError:
                got = 0
            if got == 0:
                self.eof = True
                raise ProtocolError(f"connection closed with {n} body bytes missing")
            sink(view[:got])
            n -= got

    # -- HTTP ---------------------------------------------------------------------------

    def request(self, method: str = "GET", target: str = "/", headers=None, body: bytes = b"",
                version: str = "HTTP/1.1", host: str | None = "example.test",
                read: bool = True, **read_kw) -> Response | None:
        self.send(build_request(method, target, headers, body, version, host))
        if not read:
            return None
        return self.read_response(head_request=(method == "HEAD"), **read_kw)

    def read_response(self, head_request: bool = False, keep_body: bool = True,
                      allow_interim: bool = False) -> Response:
        """Parses one response. 1xx responses are returned only with allow_interim,
        otherwise skipped (and recorded nowhere)."""
        while True:
            line = self._line()
            parts = line.decode("latin-1").split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise ProtocolError(f"bad status line {line!r}")
            version, status = parts[0], int(parts[1])
            reason = parts[2] if len(parts) > 2 else ""
            raw = [line]
            headers = []
            while True:
                hl = self._line()
                raw.append(hl)
                if hl == b"":
                    break
                if hl[:1] in (b" ", b"\t") or b":" not in hl:
                    raise ProtocolError(f"bad header line {hl!r}")
                name, _, value = hl.decode("latin-1").partition(":")
                if name != name.strip():
                    raise ProtocolError(f"whitespace around header name {hl!r}")
                headers.append((name, value.strip(" \t")))
            resp = Response(version, status, reason, headers, raw_head=b"\r\n".join(raw) + b"\r\n")
            if 100 <= status < 200:
                if allow_interim:
                    return resp
                continue
            break

        kept = []
        state = {"crc": 0, "len": 0}

        def take(view):
            state["crc"] = zlib.crc32(view, state["crc"])
            state["len"] += len(view)
            if keep_body:
                kept.append(bytes(view))

        te = resp.header_all("transfer-encoding")
        cls = resp.header_all("content-length")
        if te and cls:
            raise ProtocolError(f"both Transfer-Encoding and Content-Length: {resp!r}")
        if len(cls) > 1:
            raise ProtocolError(f"several Content-Length: {resp!r}")
        if head_request or status in (204, 304):
            pass
        elif te:
            if te[-1].lower().split(",")[-1].strip() != "chunked":
                raise ProtocolError(f"unexpected Transfer-Encoding {te!r}")
            resp.chunked = True
            while True:
                size_line = self._line().decode("latin-1")
                try:
                    size = int(size_line.split(";")[0].strip(), 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size line {size_line!r}")
                if size == 0:
                    while self._line() != b"":
                        pass
                    break
                resp.chunk_sizes.append(size)
                self._consume(size, take)
                crlf = self._exact(2)
                if crlf != b"\r\n":
                    raise ProtocolError(f"bad chunk terminator {crlf!r}")
        elif cls:
            self._consume(int(cls[0]), take)
        else:
            resp.close_delimited = True
            while self.buf or self._fill():
                take(memoryview(bytes(self.buf)))
                self.buf.clear()
        resp.body = b"".join(kept)
        resp.body_len = state["len"]
        resp.body_crc = state["crc"]
        return resp

    def read_all(self, timeout: float | None = None) -> bytes:
        """Reads until the peer closes (or raises on timeout)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self.eof:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if not self._fill():
                    break
            except socket.timeout:
                raise AssertionError(f"no close within {timeout or self.timeout}s; "
                                     f"got {bytes(self.buf[:500])!r}")
            finally:
                self.sock.settimeout(self.timeout)
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def closed_by_peer(self, timeout: float = 3.0) -> bool:
        """True when the peer closes the connection within `timeout` with no further bytes
        (bytes arriving first are an error: they were not expected)."""
        data = self.read_all_or_none(timeout)
        if data is None:
            return False
        if data:
            raise AssertionError(f"unexpected bytes before close: {data[:300]!r}")
        return True

    def read_all_or_none(self, timeout: float):
        """Like read_all, but None when the connection stays open for `timeout`."""
        try:
            return self.read_all(timeout)
        except AssertionError:
            return None

    def still_open(self, wait: float = 0.2) -> bool:
        """True when the connection is open and silent for `wait` seconds."""
        if self.eof:
            return False
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            return True
        except ConnectionResetError:
            self.eof = True
            return False
        finally:
            self.sock.settimeout(self.timeout)
        if not data:
            self.eof = True
            return False
        self.buf += data
        raise AssertionError(f"unexpected bytes on an idle connection: {data[:300]!r}")


def build_request(method: str = "GET", target: str = "/", headers=None, body: bytes = b"",
                  version: str = "HTTP/1.1", host: str | None = "example.test") -> bytes:
    """Builds request bytes. `headers` is a list of pairs (or a dict); Host is added first
    unless host is None or headers name one; Content-Length is added for a body unless the
    headers frame it themselves."""
    if isinstance(headers, dict):
        headers = list(headers.items())
    headers = list(headers or [])
    names = {n.lower() for n, _ in headers}
    lines = [f"{method} {target} {version}"]
    if host is not None and "host" not in names:
        lines.append(f"Host: {host}")
    for n, v in headers:
        lines.append(f"{n}: {v}")
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_responses(data: bytes, head_requests=()) -> list[Response]:
    """Splits a byte string holding several complete responses (the last one may be
    close-delimited). `head_requests` lists the indexes of responses to HEAD requests."""

    class _Bytes(Client):
        def __init__(self, data):
            self.buf = bytearray(data)
            self.eof = True
            self.timeout = 0

    c = _Bytes(data)
    out = []
    while c.buf:
        out.append(c.read_response(head_request=len(out) in head_requests))
    return out


def chunked_body(data: bytes, sizes=(5, 1, 100)) -> bytes:
    """Encodes data as chunks of the given sizes, cycling, with a final 0 chunk."""
    out = bytearray()
    i = 0
    k = 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        k += 1
        piece = data[i:i + n]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
        i += n
    out += b"0\r\n\r\n"
    return bytes(out)
