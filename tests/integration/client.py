"""Raw-socket HTTP/1.1 client for the integration tests: sends exact bytes, parses
responses strictly (so framing mistakes of the gateway show), reads until close."""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from dataclasses import dataclass, field

from http_reader import BodyDigest, BufferedSocket, HeaderLookup, read_chunked, read_head


class ProtocolError(AssertionError):
    pass


@dataclass
class Response(HeaderLookup):
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

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        body = self.body[:300]
        return f"<Response {self.status} {self.headers!r} body={body!r}>"


class Client(BufferedSocket):
    """One client connection. Every blocking operation is bounded by `timeout`."""

    error = ProtocolError

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0):
        self.port = port
        self.timeout = timeout
        super().__init__(socket.create_connection((host, port), timeout=timeout))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- plumbing -----------------------------------------------------------------------

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

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
            line = self.read_line()
            parts = line.decode("latin-1").split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise ProtocolError(f"bad status line {line!r}")
            version, status = parts[0], int(parts[1])
            reason = parts[2] if len(parts) > 2 else ""
            headers, raw_head = read_head(self, line, strict=True)
            resp = Response(version, status, reason, headers, raw_head=raw_head)
            if 100 <= status < 200:
                if allow_interim:
                    return resp
                continue
            break

        body = BodyDigest(keep=keep_body)
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
            resp.chunk_sizes = read_chunked(self, body)
        elif cls:
            self.consume(int(cls[0]), body)
        else:
            resp.close_delimited = True
            while self.buf or self.fill():
                body(memoryview(bytes(self.buf)))
                self.buf.clear()
        resp.body = body.body
        resp.body_len = body.length
        resp.body_crc = body.crc
        return resp

    def read_all(self, timeout: float | None = None) -> bytes:
        """Reads until the peer closes (or raises on timeout)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self.eof:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if not self.fill():
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


def websocket_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """A masked client frame (RFC 6455 §5.2)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    # Beyond 4 KiB, masked as one big integer: byte by byte is slow for the MiB payloads.
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload)) if n < 4096 else \
        (int.from_bytes(payload, "big") ^ int.from_bytes(mask * (n // 4) + mask[:n % 4], "big")
         ).to_bytes(n, "big")
    return head + mask + masked
