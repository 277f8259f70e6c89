"""Large bodies stream through the gateway in both directions, with backpressure: the
gateway's RSS grows by less than 16 MiB whatever the body size, and every byte arrives
intact (CRC32 of a known pattern on both ends).

Sizes: 1 GiB for the Content-Length upload and download (256 MiB for the chunked ones
and the slow-peer cases); 256 MiB everywhere on a sanitizer build, where the RSS bound is
not checked. GATEWAY_TEST_STREAM_BYTES overrides the 1 GiB."""

import os
import socket
import threading
import time
import zlib

import pytest

from client import Client
from harness import is_sanitized_build, simple_config
from upstream import pattern_chunks, pattern_crc

SANITIZED = is_sanitized_build()
BIG = int(os.environ.get("GATEWAY_TEST_STREAM_BYTES", (256 << 20) if SANITIZED else (1 << 30)))
MEDIUM = min(BIG, 256 << 20)
RSS_GROWTH_LIMIT_KIB = 16 * 1024
TRANSFER_TIMEOUT = 90.0


class RssWatch:
    """Samples the gateway's RSS while a transfer runs; growth = peak - baseline."""

    def __init__(self, gw):
        self.gw = gw
        self.baseline = gw.rss_kib()
        self.peak = self.baseline
        self.hwm_reset = gw.reset_peak_rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.gw.rss_kib())
            except (OSError, AssertionError):
                return
            self._stop.wait(0.01)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(5)
        if self.hwm_reset:
            self.peak = max(self.peak, self.gw.peak_rss_kib())

    @property
    def growth(self):
        return self.peak - self.baseline

    def check(self):
        if SANITIZED:
            return
        assert self.growth < RSS_GROWTH_LIMIT_KIB, (
            f"gateway RSS grew by {self.growth} KiB (baseline {self.baseline} KiB, "
            f"peak {self.peak} KiB)")


@pytest.fixture
def gw(gateway_factory, upstream):
    g = gateway_factory(simple_config(upstream, limits={"max_body_bytes": 1 << 40},
                                      timeouts={"upstream_response": "60s"}))
    # one small exchange first, so the baseline includes a warmed-up worker
    with Client(g.port) as c:
        assert c.request("GET", "/warm").status == 200
    return g


def send_content_length_upload(c, size, target="/sink?sink=1"):
    c.send(f"POST {target} HTTP/1.1\r\nHost: example.test\r\nContent-Length: {size}\r\n"
           f"Content-Type: application/octet-stream\r\n\r\n".encode())
    for piece in pattern_chunks(size, 1 << 20):
        c.send(piece)


def send_chunked_upload(c, size, chunk=200_000, target="/sink?sink=1"):
    c.send(f"POST {target} HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n"
           f"\r\n".encode())
    pending = bytearray()
    for piece in pattern_chunks(size, 1 << 20):
        pending += piece
        while len(pending) >= chunk:
            c.send(b"%x\r\n" % chunk + bytes(pending[:chunk]) + b"\r\n")
            del pending[:chunk]
    if pending:
        c.send(b"%x\r\n" % len(pending) + bytes(pending) + b"\r\n")
    c.send(b"0\r\n\r\n")


def test_upload_content_length(gw, upstream):
    with Client(gw.port, timeout=TRANSFER_TIMEOUT) as c, RssWatch(gw) as rss:
        t = time.monotonic()
        send_content_length_upload(c, BIG)
        r = c.read_response()
        elapsed = time.monotonic() - t
        assert r.status == 200, r
        doc = r.json()
    assert doc["body_len"] == BIG
    assert doc["body_crc"] == pattern_crc(BIG), "upload corrupted on the way"
    req = upstream.last()
    assert req.header("content-length") == str(BIG)
    print(f"upload {BIG >> 20} MiB in {elapsed:.1f}s, RSS growth {rss.growth} KiB")
    rss.check()


def test_download_content_length(gw, upstream):
    with Client(gw.port, timeout=TRANSFER_TIMEOUT) as c, RssWatch(gw) as rss:
        t = time.monotonic()
        r = c.request("GET", f"/dl?size={BIG}", keep_body=False)
        elapsed = time.monotonic() - t
        assert r.status == 200
        assert r.header("content-length") == str(BIG)
        assert r.body_len == BIG
        assert r.body_crc == pattern_crc(BIG), "download corrupted on the way"
        assert c.request("GET", "/after").status == 200
    print(f"download {BIG >> 20} MiB in {elapsed:.1f}s, RSS growth {rss.growth} KiB")
    rss.check()


def test_upload_chunked(gw, upstream):
    with Client(gw.port, timeout=TRANSFER_TIMEOUT) as c, RssWatch(gw) as rss:
        send_chunked_upload(c, MEDIUM)
        r = c.read_response()
        assert r.status == 200, r
        doc = r.json()
    assert doc["body_len"] == MEDIUM
    assert doc["body_crc"] == pattern_crc(MEDIUM), "chunked upload corrupted on the way"
    rss.check()


def test_download_chunked(gw, upstream):
    with Client(gw.port, timeout=TRANSFER_TIMEOUT) as c, RssWatch(gw) as rss:
        r = c.request("GET", f"/dl?size={MEDIUM}&chunked=1&chunk=65536", keep_body=False)
        assert r.status == 200
        assert r.chunked
        assert r.body_len == MEDIUM
        assert r.body_crc == pattern_crc(MEDIUM), "chunked download corrupted on the way"
    rss.check()


def test_download_close_delimited(gw, upstream):
    size = 64 << 20
    with Client(gw.port, timeout=TRANSFER_TIMEOUT) as c, RssWatch(gw) as rss:
        r = c.request("GET", f"/dl?size={size}&close=1", keep_body=False)
        assert r.status == 200
        assert r.body_len == size
        assert r.body_crc == pattern_crc(size), "close-delimited download corrupted"
    rss.check()


def test_slow_client_download_applies_backpressure(gw, upstream):
    # The client stops reading for a while: the gateway must stop reading the upstream
    # rather than buffer what it sends.
    size = MEDIUM
    with Client(gw.port, timeout=TRANSFER_TIMEOUT) as c, RssWatch(gw) as rss:
        c.send(f"GET /dl?size={size} HTTP/1.1\r\nHost: example.test\r\n\r\n".encode())
        got = c.sock.recv(1 << 20)
        assert got.startswith(b"HTTP/1.1 200")
        time.sleep(1.5)  # a stalled reader, on purpose
        in_flight = upstream.bytes_sent
        # what the upstream could push is bounded by socket buffers plus the gateway's own
        # high-water marks, nowhere near the body size
        assert in_flight < 48 << 20, f"upstream pushed {in_flight >> 20} MiB to a stalled client"
        c.buf += got
        r = c.read_response(keep_body=False)
        assert r.body_len == size
        assert r.body_crc == pattern_crc(size)
    rss.check()


def test_slow_upstream_upload_applies_backpressure(gateway_factory):
    # An upstream that reads 1 MiB of the body, stalls for 1.5 s, then reads the rest: the
    # gateway must stop reading the client meanwhile.
    size = MEDIUM
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    lsock.settimeout(TRANSFER_TIMEOUT)
    result = {}

    def serve():
        try:
            s, _ = lsock.accept()
        except OSError:
            return
        s.settimeout(TRANSFER_TIMEOUT)
        try:
            buf = bytearray()
            while b"\r\n\r\n" not in buf:
                buf += s.recv(65536)
            _, _, rest = bytes(buf).partition(b"\r\n\r\n")
            crc, n = zlib.crc32(rest), len(rest)
            while n < (1 << 20):
                d = s.recv(65536)
                crc, n = zlib.crc32(d, crc), n + len(d)
            time.sleep(1.5)
            while n < size:
                d = s.recv(1 << 20)
                if not d:
                    break
                crc, n = zlib.crc32(d, crc), n + len(d)
            result["len"], result["crc"] = n, crc
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            time.sleep(0.2)
        except OSError as e:
            result["error"] = repr(e)
        finally:
            s.close()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        gw = gateway_factory(simple_config(f"127.0.0.1:{lsock.getsockname()[1]}",
                                           limits={"max_body_bytes": 1 << 40},
                                           timeouts={"upstream_response": "60s"}))
        sent = {"n": 0}
        with Client(gw.port, timeout=TRANSFER_TIMEOUT) as c, RssWatch(gw) as rss:
            def push():
                try:
                    c.send(f"POST /up HTTP/1.1\r\nHost: example.test\r\nContent-Length: {size}"
                           f"\r\n\r\n".encode())
                    for piece in pattern_chunks(size, 1 << 20):
                        c.send(piece)
                        sent["n"] += len(piece)
                except OSError as e:
                    sent["error"] = repr(e)

            pusher = threading.Thread(target=push, daemon=True)
            pusher.start()
            time.sleep(1.2)  # within the upstream's stall
            stalled_at = sent["n"]
            assert stalled_at < 48 << 20, \
                f"client pushed {stalled_at >> 20} MiB into a stalled upstream"
            pusher.join(TRANSFER_TIMEOUT)
            assert not pusher.is_alive() and "error" not in sent, sent
            r = c.read_response()
            assert r.status == 200 and r.body == b"ok"
        server.join(10)
        assert result.get("len") == size, result
        assert result.get("crc") == pattern_crc(size), "upload corrupted on the way"
        rss.check()
    finally:
        lsock.close()
