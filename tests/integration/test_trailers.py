"""Trailers over HTTP/1.1 (SPEC §8): a chunked body's trailer section passes through the
gateway both ways, as trailers; fields that frame, route or carry credentials never do;
a malformed trailer refuses the message. A raw-socket upstream sees and sends the exact
bytes (the harness's upstream does not speak trailers)."""

from __future__ import annotations

import socket
import threading

from client import Client
from harness import gateway_config

RESPONSE = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\nX-Checksum: abc123\r\nContent-Length: 99\r\nSet-Cookie: s=1\r\n\r\n")


class RawUpstream:
    """Answers each request with `answer` once it has read a whole chunked request (up to
    its trailer section's blank line); keeps what it received."""

    def __init__(self, answer: bytes = RESPONSE):
        self.answer = answer
        self.received: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                conn.settimeout(5)
                try:
                    while not (b"\r\n0\r\n" in data and data.endswith(b"\r\n\r\n")):
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    self.received.append(data)
                    conn.sendall(self.answer)
                except OSError:
                    pass

    def close(self):
        self.sock.close()


def _gateway(gateway_factory, up):
    cfg = gateway_config(upstreams={"raw": [up.address]},
                         routes=[{"name": "r", "match": {"path_prefix": "/"}, "upstream": "raw"}])
    return gateway_factory(cfg)


def test_trailers_pass_both_ways_over_http1(gateway_factory):
    up = RawUpstream()
    try:
        gw = _gateway(gateway_factory, up)
        with Client(gw.port) as c:
            c.send(b"POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\r\n"
                   b"3\r\nabc\r\n0\r\nX-Request-Sum: 42\r\nHost: evil\r\nAuthorization: Bearer x\r\n\r\n")
            # Until the trailer section's blank line: the response may come in pieces.
            raw = b""
            c.sock.settimeout(5)
            while not (b"\r\n0\r\n" in raw and raw.endswith(b"\r\n\r\n")):
                chunk = c.sock.recv(65536)
                assert chunk, raw
                raw += chunk
        # The upstream got the body and the one forwardable trailer, after the last chunk.
        [req] = up.received
        head, _, body = req.partition(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head.lower()
        assert body.endswith(b"3\r\nabc\r\n0\r\nX-Request-Sum: 42\r\n\r\n"), body
        # The client got the response's trailer after its last chunk; not the framing or
        # credential fields the upstream put there.
        assert b"\r\n0\r\nX-Checksum: abc123\r\n\r\n" in raw, raw
        assert b"Content-Length: 99" not in raw and b"Set-Cookie" not in raw, raw
    finally:
        up.close()


def test_a_malformed_trailer_refuses_the_message(gateway_factory):
    up = RawUpstream(RESPONSE.replace(b"X-Checksum: abc123", b"X-Checksum: a\x01b"))
    try:
        gw = _gateway(gateway_factory, up)
        # From the client: a trailer value with a control character is a 400.
        with Client(gw.port) as c:
            c.send(b"POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"3\r\nabc\r\n0\r\nX-Bad: a\x01b\r\n\r\n")
            r = c.read_response()
            assert r.status == 400, r
        # From the upstream: the response is refused. It came in one read, so its head had
        # not left yet: the client gets a 502 instead (and the gateway goes on serving).
        with Client(gw.port) as c:
            c.send(b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
            r = c.read_response()
            assert r.status == 502 and b"X-Checksum" not in r.body, r
        entry = gw.find_access(lambda e: e["path"] == "/u")
        assert entry["status"] == 502 and entry["error_code"] == "BAD_GATEWAY", entry
    finally:
        up.close()
