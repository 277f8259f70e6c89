"""What the test client (client.py) and the test upstream (upstream.py) share to read
HTTP/1.1 off a raw socket: a buffered socket, the header fields of a head, chunked bodies,
and a body digest that can check a huge body without holding it."""

from __future__ import annotations

import zlib


class HeaderLookup:
    """Case-insensitive lookups in `self.headers`, (name, value) pairs as received."""

    headers: list

    def header(self, name: str, default=None):
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return default

    def header_all(self, name: str) -> list:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def has_header(self, name: str) -> bool:
        return any(n.lower() == name.lower() for n, _ in self.headers)


class BufferedSocket:
    """A socket with buffered reads (`self.buf`; `self.eof` once the peer is gone) and
    plain writes.

    A subclass says how strict it is: `error` is raised when the bytes cannot make what
    was asked for (the peer went away first, a line is too long, the framing is wrong);
    `peer_gone` lists the socket errors that count as the peer going away rather than
    escaping to the caller (the client lets timeouts reach the test, the upstream's
    serving thread just ends); `max_line` bounds a line (None: unbounded)."""

    error: type[Exception] = EOFError
    peer_gone: tuple = (ConnectionResetError,)
    max_line: int | None = None

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.eof = False

    def send(self, data) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def fill(self, max_bytes: int = 1 << 20) -> bool:
        """Appends what one recv gives to buf; False at EOF."""
        if self.eof:
            return False
        try:
            data = self.sock.recv(max_bytes)
        except self.peer_gone:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_line(self) -> bytes:
        """The next CRLF-terminated line, without its CRLF."""
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if self.max_line is not None and len(self.buf) > self.max_line:
                raise self.error(f"line longer than {self.max_line} bytes")
            if not self.fill():
                raise self.error(f"connection closed mid-line; have {bytes(self.buf)!r}")

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self.fill(max(65536, n - len(self.buf))):
                raise self.error(f"connection closed with {len(self.buf)} of {n} bytes")
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def consume(self, n: int, sink) -> None:
        """Hands the next n bytes to sink(memoryview) without keeping them: a 1 GiB body
        goes through a 1 MiB scratch buffer, never through buf."""
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
            except self.peer_gone:
                got = 0
            if got == 0:
                self.eof = True
                raise self.error(f"connection closed with {n} body bytes missing")
            sink(view[:got])
            n -= got


def read_head(conn: BufferedSocket, start_line: bytes, strict: bool) -> tuple[list, bytes]:
    """Reads the header fields that follow `start_line`, up to the blank line: returns
    ([(name, value)], the head's raw bytes). `strict` refuses what a lenient parser would
    guess at (obs-fold, no colon, whitespace before the colon), so that the gateway's
    framing mistakes show; the upstream takes whatever the gateway forwards."""
    raw = [start_line]
    headers = []
    while True:
        line = conn.read_line()
        raw.append(line)
        if line == b"":
            break
        if strict:
            if line[:1] in (b" ", b"\t") or b":" not in line:
                raise conn.error(f"bad header line {line!r}")
        name, _, value = line.decode("latin-1").partition(":")
        if strict and name != name.strip():
            raise conn.error(f"whitespace around header name {line!r}")
        headers.append((name, value.strip(" \t")))
    return headers, b"\r\n".join(raw) + b"\r\n"


def read_chunked(conn: BufferedSocket, sink) -> list[int]:
    """Reads a chunked body (trailers skipped) into sink(memoryview); returns the chunk
    sizes."""
    sizes = []
    while True:
        size_line = conn.read_line().decode("latin-1")
        try:
            size = int(size_line.split(";")[0].strip(), 16)
        except ValueError:
            raise conn.error(f"bad chunk size line {size_line!r}")
        if size == 0:
            while conn.read_line() != b"":
                pass
            return sizes
        sizes.append(size)
        conn.consume(size, sink)
        crlf = conn.read_exact(2)
        if crlf != b"\r\n":
            raise conn.error(f"bad chunk terminator {crlf!r}")


class BodyDigest:
    """A sink for BufferedSocket.consume: length and CRC32 of what goes by, the bytes
    themselves kept only with keep=True (a huge body is checked without being held)."""

    def __init__(self, keep: bool = True):
        self.keep = keep
        self.length = 0
        self.crc = 0
        self._kept = []

    def __call__(self, view) -> None:
        self.crc = zlib.crc32(view, self.crc)
        self.length += len(view)
        if self.keep:
            self._kept.append(bytes(view))

    @property
    def body(self) -> bytes:
        return b"".join(self._kept)
