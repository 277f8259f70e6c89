"""Large bodies over HTTP/2 (SPEC §7): a 1 GiB download and upload over one stream keep the
gateway's RSS growth under 16 MiB, every byte intact (CRC32 of the upstream's pattern), and
a stream whose client stops reading stops its upstream instead of filling the gateway.
curl (libcurl's nghttp2) is the client for the bulk transfers, python3-h2 for the stalled
reader."""

import json
import subprocess
import threading
import time
import zlib

import pytest

from h2client import H2Client
from harness import gateway_config
from test_streaming import BIG, MEDIUM, TRANSFER_TIMEOUT, RssWatch
from upstream import pattern_chunks, pattern_crc


@pytest.fixture
def gw(gateway_factory, upstream):
    cfg = gateway_config(upstreams={"up": [upstream]},
                         routes=[{"name": "default", "match": {"path_prefix": "/"}, "upstream": "up"}],
                         limits={"max_body_bytes": 1 << 40}, timeouts={"upstream_response": "60s"})
    cfg["listeners"] = [{"name": "h2c", "address": "127.0.0.1:@PORT@", "h2c": True}]
    cfg["admin"] = {"address": "127.0.0.1:@ADMIN_PORT@"}
    g = gateway_factory(json.dumps(cfg))
    with H2Client(g.port) as c:  # warm the worker, so that the baseline includes it
        assert c.request("GET", "/warm").status == 200
    return g


def test_download_over_one_stream(gw):
    with RssWatch(gw) as rss:
        p = subprocess.Popen(["curl", "-s", "--http2-prior-knowledge", "--max-time", str(int(TRANSFER_TIMEOUT)),
                              "-w", "%{http_version} %{http_code}", "-o", "/dev/stdout",
                              f"http://127.0.0.1:{gw.port}/dl?size={BIG}"],
                             stdout=subprocess.PIPE)
        crc, n, tail = 0, 0, b""
        while True:
            piece = p.stdout.read(1 << 20)
            if not piece:
                break
            # the -w trailer follows the body: hold back its few bytes until the end
            data = tail + piece
            data, tail = data[:-16], data[-16:]
            crc = zlib.crc32(data, crc)
            n += len(data)
        p.wait(TRANSFER_TIMEOUT)
    body, trailer = tail[:len(tail) - len("2 200")], tail[len(tail) - len("2 200"):]
    crc = zlib.crc32(body, crc)
    n += len(body)
    assert trailer == b"2 200", trailer
    assert n == BIG and crc == pattern_crc(BIG), "download corrupted on the way"
    print(f"h2 download {BIG >> 20} MiB, RSS growth {rss.growth} KiB")
    rss.check()


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "no-length"])
def test_upload_over_one_stream(gw, upstream, with_length):
    size = BIG if with_length else MEDIUM
    args = ["curl", "-s", "--http2-prior-knowledge", "--max-time", str(int(TRANSFER_TIMEOUT)),
            "-T", "-", "-H", "Content-Type: application/octet-stream"]
    if with_length:
        args += ["-H", f"Content-Length: {size}"]
    with RssWatch(gw) as rss:
        p = subprocess.Popen(args + [f"http://127.0.0.1:{gw.port}/sink?sink=1"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)

        def feed():
            try:
                for piece in pattern_chunks(size, 1 << 20):
                    p.stdin.write(piece)
                p.stdin.close()
            except BrokenPipeError:
                pass
        t = threading.Thread(target=feed, daemon=True)
        t.start()
        out = p.stdout.read()  # not communicate(): it would close stdin under the feeder
        p.wait(TRANSFER_TIMEOUT)
        t.join(5)
    doc = json.loads(out)
    assert doc["body_len"] == size
    assert doc["body_crc"] == pattern_crc(size), "upload corrupted on the way"
    req = upstream.last()
    if with_length:
        assert req.header("content-length") == str(size)
    else:
        assert req.header("transfer-encoding") == "chunked"
    print(f"h2 upload {size >> 20} MiB, RSS growth {rss.growth} KiB")
    rss.check()


def test_a_stream_whose_client_stops_reading_stops_its_upstream(gw, upstream):
    size = MEDIUM
    with H2Client(gw.port, timeout=TRANSFER_TIMEOUT, auto_window=False,
                  settings={0x4: 1 << 20}, window=1 << 30) as c, RssWatch(gw) as rss:
        sid = c.start("GET", f"/dl?size={size}")
        c.pump(lambda: len(c.responses[sid].body) >= 1 << 20)  # its 1 MiB window is used up
        time.sleep(1.5)  # a stalled reader, on purpose
        in_flight = upstream.bytes_sent
        assert in_flight < 48 << 20, f"upstream pushed {in_flight >> 20} MiB to a stalled stream"
        # another stream of the same connection still gets through
        r = c.request("GET", "/other?size=1000")
        assert r.status == 200 and len(r.body) == 1000
        c.auto_window = True
        c.conn.acknowledge_received_data(len(c.responses[sid].body), sid)
        c.flush()
        r = c.wait(sid)
    assert len(r.body) == size and zlib.crc32(r.body) == pattern_crc(size)
    rss.check()
