"""HTTP/2 to upstreams (SPEC §8, issue 17) against a real, misbehaving HTTP/2 server
(h2_upstream.py, python3-h2): what the client gets when the upstream answers normally, goes
away, resets, stalls, lies or sends garbage; that nothing hangs; that the gateway serves the
next request; the pool's bookkeeping (connections, streams per connection, max_pending,
idle close, reload); and the counters of docs/observability.md."""

import signal
import socket
import threading
import time

import h2.events
import pytest

import prom
from client import Client, build_request
from h2_upstream import H2Upstream
from h2client import H2Client
from harness import gateway_config, is_sanitized_build, wait_until

INTERNAL_ERROR, REFUSED_STREAM, CANCEL, NO_ERROR = 0x2, 0x7, 0x8, 0x0


@pytest.fixture
def h2up():
    made = []

    def make(**kw):
        u = H2Upstream(**kw)
        made.append(u)
        return u

    yield make
    for u in made:
        u.stop()


def config(up, workers=1, timeouts=None, upstream=None, **top):
    spec = {"endpoints": [up.address], "protocol": "h2",
            "keepalive": {"max_idle": 8, "idle_timeout": "30s"}}
    spec.update(upstream or {})
    return gateway_config(
        upstreams={"up": spec},
        routes=[{"name": "default", "match": {"path_prefix": "/"}, "upstream": "up"}],
        workers=workers,
        timeouts={"upstream_response": "1s", **(timeouts or {})},
        **top)


def h2c_config(up, **kw):
    cfg = config(up, **kw)
    cfg["listeners"] = [{"name": "h2c", "address": "127.0.0.1:@PORT@", "h2c": True}]
    return cfg


def bad_responses(gw, reason):
    return prom.total(prom.scrape(gw), "gateway_upstream_bad_responses_total", reason=reason)


def get(gw, target, timeout=10.0, **kw):
    with Client(gw.port, timeout=timeout) as c:
        return c.request("GET", target, **kw)


def timed_get(gw, target, timeout=10.0):
    t0 = time.monotonic()
    r = get(gw, target, timeout)
    return r, time.monotonic() - t0


def still_serves(gw, up, same_connection=None):
    """The next request is answered (on the same upstream connection, when asked)."""
    before = up.accepted
    r = get(gw, "/next")
    assert r.status == 200, r
    if same_connection:
        assert up.accepted == before, f"{up.accepted - before} new upstream connections"
    return r


class TrailerClient(H2Client):
    """H2Client that keeps the response trailers."""

    def _handle(self, events):
        super()._handle(events)
        for e in events:
            if isinstance(e, h2.events.TrailersReceived) and e.stream_id in self.responses:
                self.responses[e.stream_id].trailers = list(e.headers)


# ------------------------------------------------------------------ the normal case


def test_answer_with_body_and_trailers_over_h1_and_h2(gateway_factory, h2up):
    up = h2up()
    gw = gateway_factory(h2c_config(up))
    r = get(gw, "/a?x=1")
    assert r.status == 200 and r.json()["path"] == "/a", r
    with Client(gw.port) as c:
        r = c.request("POST", "/up", body=b"b" * 100_000)
        assert r.status == 200 and r.json()["body_len"] == 100_000, r
    with TrailerClient(gw.port) as c:
        r = c.request("GET", "/t?trailers=1")
        assert r.status == 200 and r.json()["path"] == "/t", r
        assert dict(r.trailers) == {"grpc-status": "0", "x-trailer": "yes"}, r.trailers
    assert up.accepted == 1  # one multiplexed connection for the three


def test_response_trailers_are_filtered_as_over_http1(gateway_factory, h2up):
    """An HTTP/1.1 upstream's trailers pass through forwardableTrailer(): no set-cookie,
    content-type, authorization... An HTTP/2 upstream's must not get around it."""
    up = h2up()
    gw = gateway_factory(h2c_config(up))
    with TrailerClient(gw.port) as c:
        r = c.request("GET", "/t?trailers=1&trailer=set-cookie:sid=evil&trailer=content-type:text/html"
                                 "&trailer=authorization:Basic%20eA==")
        assert r.status == 200, r
        names = {n for n, _ in r.trailers}
        assert names == {"grpc-status", "x-trailer"}, r.trailers


# ------------------------------------------------------------------ timeouts


def test_response_timeout_on_the_first_stream_of_a_new_connection(gateway_factory, h2up):
    """The request ends while its connection is still connecting: the stream's deadline must
    survive the connect (the connect deadline is cleared then)."""
    up = h2up()
    gw = gateway_factory(config(up))
    r, took = timed_get(gw, "/n?never=1", timeout=15)
    assert r.status == 504, r
    assert 0.8 < took < 4, took
    still_serves(gw, up, same_connection=True)


def test_response_timeouts_per_stream_on_one_connection(gateway_factory, h2up):
    """Streams on one connection share its one lazy timer: each fails at its own deadline,
    an answered one not at all."""
    up = h2up()
    gw = gateway_factory(config(up))
    assert get(gw, "/warm").status == 200
    results = {}

    def run(name, target, delay):
        time.sleep(delay)
        results[name] = timed_get(gw, target)

    threads = [threading.Thread(target=run, args=a) for a in
               (("a", "/a?never=1", 0), ("b", "/b?delay=300", 0), ("c", "/c?never=1", 0.5))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert results["b"][0].status == 200, results
    assert results["a"][0].status == 504 and 0.8 < results["a"][1] < 2.5, results
    assert results["c"][0].status == 504 and 0.8 < results["c"][1] < 2.5, results
    assert up.accepted == 1
    still_serves(gw, up, same_connection=True)


def test_an_upstream_that_never_opens_its_window_for_an_upload_gets_504(gateway_factory, h2up):
    """No WINDOW_UPDATE for the body: the request never ends, so the response timeout never
    starts; the same timeout must bound the wait for the upstream to take more (as over
    HTTP/1.1, docs/configuration.md timeouts.upstream_response)."""
    up = h2up()
    gw = gateway_factory(config(up, timeouts={"body_read": "30s"}))
    size = 4 << 20
    with Client(gw.port, timeout=15) as c:
        c.send(build_request("POST", "/u?no_ack=1", None, b"", host="example.test")
               .replace(b"\r\n\r\n", f"\r\nContent-Length: {size}\r\n\r\n".encode(), 1))
        sender = threading.Thread(target=lambda: _send_quietly(c, b"u" * size), daemon=True)
        t0 = time.monotonic()
        sender.start()
        r = c.read_response()
        took = time.monotonic() - t0
    assert r.status == 504, r
    assert took < 5, took
    still_serves(gw, up)


def _send_quietly(c, data):
    try:
        c.sock.sendall(data)
    except OSError:
        pass


def test_a_client_slow_to_send_its_body_is_not_an_upstream_timeout(gateway_factory, h2up):
    """The upstream took every byte so far: waiting for the client is not the upstream's
    fault (the response timeout runs from the request's end)."""
    up = h2up()
    gw = gateway_factory(config(up, timeouts={"body_read": "30s"}))
    with Client(gw.port, timeout=15) as c:
        c.send(b"POST /slow HTTP/1.1\r\nHost: example.test\r\nContent-Length: 2000\r\n\r\n" + b"a" * 1000)
        time.sleep(1.8)  # longer than the upstream response timeout (1s)
        c.send(b"b" * 1000)
        r = c.read_response()
    assert r.status == 200 and r.json()["body_len"] == 2000, r


# ------------------------------------------------------------------ GOAWAY


def test_goaway_below_the_stream_retries_it_on_a_new_connection(gateway_factory, h2up):
    up = h2up()
    gw = gateway_factory(config(up))
    r = get(gw, "/g?goaway=below&once=1")
    assert r.status == 200, r
    assert r.json()["conn"] == 1, r  # sent again, on a new connection
    wait_until(lambda: up.open_connections() == 1, timeout=5, what="the going-away connection closed")
    still_serves(gw, up, same_connection=True)


def test_goaway_lets_the_streams_below_it_finish(gateway_factory, h2up):
    """Stream 1 (slow) is below the GOAWAY's last_stream_id and finishes there; stream 3 is
    above and goes again elsewhere; no new stream goes to the going-away connection."""
    up = h2up()
    gw = gateway_factory(config(up))
    results = {}

    def run(name, target, delay):
        time.sleep(delay)
        results[name] = get(gw, target)

    threads = [threading.Thread(target=run, args=a) for a in
               (("slow", "/s?delay=600", 0), ("refused", "/g?goaway=below&once=1", 0.2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert results["slow"].status == 200 and results["slow"].json()["conn"] == 0, results
    assert results["refused"].status == 200 and results["refused"].json()["conn"] == 1, results
    r = get(gw, "/after")
    assert r.status == 200 and r.json()["conn"] == 1, r
    wait_until(lambda: up.open_connections() == 1, timeout=5, what="the going-away connection closed")


def test_goaway_at_the_stream_answers_it_and_the_gateway_closes_the_connection(gateway_factory, h2up):
    """The upstream sends GOAWAY(last_stream_id = this stream), answers, and leaves the TCP
    connection open: the gateway closes it once its streams are done, and its slot in
    max_connections is given back."""
    up = h2up()
    gw = gateway_factory(config(up, upstream={"max_connections": 1, "max_pending": 4}))
    r = get(gw, "/g?goaway=above&goaway_keep=1")
    assert r.status == 200 and r.json()["conn"] == 0, r
    wait_until(lambda: up.open_connections() == 0, timeout=5, what="the gateway closed the connection")
    r = get(gw, "/next")  # not a 503 after waiting for the slot
    assert r.status == 200 and r.json()["conn"] == 1, r


# ------------------------------------------------------------------ resets and closes


def test_rst_stream_before_the_head_is_502(gateway_factory, h2up):
    up = h2up()
    gw = gateway_factory(config(up))
    r, took = timed_get(gw, f"/r?rst={INTERNAL_ERROR}")
    assert r.status == 502 and took < 0.9, (r, took)  # not the response timeout (1s)
    still_serves(gw, up, same_connection=True)


def test_refused_stream_is_sent_again(gateway_factory, h2up):
    up = h2up()
    gw = gateway_factory(config(up))
    r = get(gw, f"/r?rst={REFUSED_STREAM}&once=1")
    assert r.status == 200, r
    assert len(up.wait_requests(2)) == 2
    still_serves(gw, up, same_connection=True)


def test_rst_stream_after_the_head_truncates_the_response(gateway_factory, h2up):
    up = h2up()
    gw = gateway_factory(config(up))
    before = bad_responses(gw, "truncated")
    with Client(gw.port) as c:
        c.send(build_request("GET", f"/r?rst_after={INTERNAL_ERROR}&size=1000&rst_delay=200", None, b"",
                             host="example.test"))
        data = c.read_all(timeout=5)
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    assert not data.endswith(b"0\r\n\r\n"), data[-50:]  # not passed off as complete
    wait_until(lambda: bad_responses(gw, "truncated") == before + 1, timeout=5, what="truncated counted")
    still_serves(gw, up, same_connection=True)


def test_the_upstream_closing_with_streams_in_flight(gateway_factory, h2up):
    up = h2up()
    gw = gateway_factory(config(up))
    r, took = timed_get(gw, "/c?close=1")
    assert r.status == 502 and took < 0.9, (r, took)
    # a pooled connection closed under a GET: sent once more on a fresh one
    assert get(gw, "/warm").status == 200
    r = get(gw, "/c2?close=1&once=1")
    assert r.status == 200 and r.json()["conn"] == 2, r
    still_serves(gw, up, same_connection=True)


# ------------------------------------------------------------------ hostile answers


def test_garbage_fails_the_streams_at_once(gateway_factory, h2up):
    """Bytes that are no HTTP/2 frame are a connection error: the streams on it fail now
    (502), not at their response timeout, even if the upstream keeps the socket open."""
    up = h2up()
    gw = gateway_factory(config(up, timeouts={"upstream_response": "5s"}))
    assert get(gw, "/warm").status == 200
    before = bad_responses(gw, "malformed")
    r, took = timed_get(gw, "/x?garbage=1")
    assert r.status == 502 and took < 2, (r, took)
    assert bad_responses(gw, "malformed") == before + 1
    wait_until(lambda: up.open_connections() == 0, timeout=5, what="the gateway closed the connection")
    r = get(gw, "/next")
    assert r.status == 200 and r.json()["conn"] == 1, r


def test_a_head_over_the_limit_is_502_and_the_connection_goes_on(gateway_factory, h2up):
    up = h2up()
    gw = gateway_factory(config(up, limits={"max_response_header_bytes": "16KiB"}))
    assert get(gw, "/ok?head_bytes=10000").status == 200
    r = get(gw, "/big?head_bytes=20000")
    assert r.status == 502, r
    assert bad_responses(gw, "head_too_large") == 1
    still_serves(gw, up, same_connection=True)


@pytest.mark.parametrize("field", ["connection:close", "transfer-encoding:chunked", "upgrade:h2c",
                                   "keep-alive:timeout=5"])
def test_a_connection_specific_response_field_is_502(gateway_factory, h2up, field):
    up = h2up()
    gw = gateway_factory(config(up))
    r = get(gw, f"/h?hdr={field}")
    assert r.status == 502, r
    assert bad_responses(gw, "malformed") == 1
    still_serves(gw, up, same_connection=True)


@pytest.mark.parametrize("cl", ["5000", "10"])
def test_a_content_length_that_lies_never_reaches_the_client_as_complete(gateway_factory, h2up, cl):
    """nghttp2 checks DATA against content-length; the stream fails (malformed), and the
    client sees a 502 or a cut response, never a complete one of the wrong length."""
    up = h2up()
    gw = gateway_factory(config(up))
    with Client(gw.port) as c:
        c.send(build_request("GET", f"/l?size=1000&cl={cl}", None, b"", host="example.test"))
        try:
            r = c.read_response()
        except AssertionError:
            r = None  # cut short: the connection closed mid-body
    if r is not None:
        assert r.status == 502, r
    wait_until(lambda: bad_responses(gw, "malformed") == 1, timeout=5, what="malformed counted")
    still_serves(gw, up, same_connection=True)


@pytest.mark.parametrize("status", ["050", "000", "099"])
def test_a_status_below_100_is_502_and_its_body_never_reaches_the_client(gateway_factory, h2up, status):
    """nghttp2 takes any three digits but 101; "050" is a final response to it, and its DATA
    follows. Nothing of it may reach the client before a head (response splitting on a
    keep-alive HTTP/1.1 connection)."""
    up = h2up()
    gw = gateway_factory(config(up))
    with Client(gw.port) as c:
        r = c.request("GET", f"/s?status={status}")
        assert r.status == 502, r
        r = c.request("GET", "/next")  # the same client connection is still in step
        assert r.status == 200, r
    assert bad_responses(gw, "malformed") == 1


def test_interim_heads_do_not_grow_memory(gateway_factory, h2up):
    """Each interim head has its own limit (docs/configuration.md); what they carry is
    dropped, so many of them must not pile up in the stream."""
    if is_sanitized_build():
        pytest.skip("RSS is not meaningful under ASan")
    up = h2up()
    gw = gateway_factory(config(up, timeouts={"upstream_response": "30s"}))
    assert get(gw, "/warm").status == 200
    rss0 = gw.rss_kib()
    r = get(gw, "/i?interim=20000&interim_fields=3&interim_bytes=1000", timeout=60)
    assert r.status == 200, r
    grown = gw.rss_kib() - rss0
    assert grown < 16 * 1024, f"RSS grew {grown} KiB over 60 MB of interim heads"


# ------------------------------------------------------------------ flow control


def test_a_stalled_download_stalls_only_its_stream(gateway_factory, h2up):
    """One client reads nothing of a large response: its stream's window closes, the
    connection's does not; another request on the same connection is answered."""
    up = h2up()
    gw = gateway_factory(config(up, timeouts={"upstream_response": "10s"}))
    assert get(gw, "/warm").status == 200
    stalled = Client(gw.port, timeout=30)
    stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.send(build_request("GET", "/big?size=100000000", None, b"", host="example.test"))
    try:
        time.sleep(1.0)
        rss = gw.rss_kib()
        for _ in range(5):
            r, took = timed_get(gw, "/other")
            assert r.status == 200 and took < 3, (r, took)  # not held behind the stalled stream
        assert up.accepted == 1
        if not is_sanitized_build():
            assert gw.rss_kib() - rss < 8 * 1024
        # the stalled one still completes once read
        head = stalled.read_line()
        assert head.startswith(b"HTTP/1.1 200"), head
    finally:
        stalled.close()
    still_serves(gw, up, same_connection=True)


def test_an_answer_before_the_upload_ends(gateway_factory, h2up):
    """The upstream answers (and ends its side) at the request head: the client gets the
    answer; the upstream's stream is reset with NO_ERROR (RFC 9113 §8.1) and the connection
    goes on."""
    up = h2up()
    gw = gateway_factory(config(up, timeouts={"body_read": "30s"}))
    with Client(gw.port, timeout=10) as c:
        c.send(b"POST /e?early=1 HTTP/1.1\r\nHost: example.test\r\nContent-Length: 1000000\r\n\r\n"
               + b"e" * 100_000)
        r = c.read_response()
        assert r.status == 200 and r.json()["early"] is True, r
    req = up.wait_requests(1, pred=lambda q: q.path == "/e")[0]
    wait_until(lambda: req.reset_code is not None, timeout=5, what="the upstream stream reset")
    assert req.reset_code == NO_ERROR
    still_serves(gw, up, same_connection=True)


@pytest.mark.parametrize("how", ["refuse_after_body", "goaway_after_body"])
def test_a_refused_stream_whose_body_was_partly_sent_is_not_resent_truncated(gateway_factory, h2up, how):
    """REFUSED_STREAM (or a GOAWAY below the stream) after some body went out: the gateway
    no longer has those bytes, so sending the request again would send a body without its
    beginning. It must fail instead (or send it whole)."""
    up = h2up()
    gw = gateway_factory(config(up, timeouts={"body_read": "30s"}))
    with Client(gw.port, timeout=10) as c:
        c.send(f"POST /p?{how}=1&once=1 HTTP/1.1\r\nHost: example.test\r\n".encode() +
               b"Transfer-Encoding: chunked\r\n\r\n" + b"3e8\r\n" + b"1" * 1000 + b"\r\n")
        up.wait_requests(1, pred=lambda q: q.path == "/p" and q.body)
        time.sleep(0.3)
        c.send(b"3e8\r\n" + b"2" * 1000 + b"\r\n0\r\n\r\n")
        r = c.read_response()
    if r.status == 200:
        assert r.json()["body_len"] == 2000, r
    else:
        assert r.status == 502, r
    for q in up.snapshot():
        if q.path == "/p" and q.ended:
            assert len(q.body) == 2000, (q.stream, len(q.body), bytes(q.body[:10]))
    still_serves(gw, up)


# ------------------------------------------------------------------ the pool


def test_max_concurrent_streams_max_connections_and_max_pending(gateway_factory, h2up):
    """SETTINGS_MAX_CONCURRENT_STREAMS=1: a second request opens a second connection, a third
    waits (max_pending 1) and a fourth is refused (503) once max_connections (2) is reached."""
    up = h2up(max_concurrent_streams=1)
    gw = gateway_factory(config(up, upstream={"max_connections": 2, "max_pending": 1},
                                timeouts={"upstream_connect": "5s", "upstream_response": "5s"}))
    assert get(gw, "/warm").status == 200  # the first connection knows the setting
    results = {}

    def run(name, target, delay):
        time.sleep(delay)
        results[name] = timed_get(gw, target)

    plan = (("a", "/a?delay=1000", 0), ("b", "/b?delay=1000", 0.2),
            ("c", "/c", 0.5), ("d", "/d", 0.7))
    threads = [threading.Thread(target=run, args=p) for p in plan]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert results["a"][0].status == 200 and results["b"][0].status == 200, results
    assert results["c"][0].status == 200, results
    assert results["d"][0].status == 503 and results["d"][1] < 1, results  # at once, not queued
    assert up.accepted == 2, up.accepted
    assert up.max_open == 1, up.max_open
    still_serves(gw, up)


def test_an_idle_http2_connection_closes_after_the_idle_timeout(gateway_factory, h2up):
    up = h2up()
    gw = gateway_factory(config(up, upstream={"keepalive": {"max_idle": 8, "idle_timeout": "300ms"}}))
    assert get(gw, "/a").status == 200
    assert up.open_connections() == 1
    wait_until(lambda: up.open_connections() == 0, timeout=3, what="the idle connection closed")
    r = get(gw, "/b")
    assert r.status == 200 and r.json()["conn"] == 1, r


def test_reload_retires_http2_connections(gateway_factory, h2up, tmp_path):
    """On reload the idle connection closes at once; one with a stream in flight lets it
    finish, then closes."""
    up = h2up()
    cfg = config(up, workers=1, timeouts={"upstream_response": "5s"})
    gw = gateway_factory(cfg)
    assert get(gw, "/warm").status == 200
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", get(gw, "/slow?delay=800")))
    t.start()
    up.wait_requests(1, pred=lambda q: q.path == "/slow")
    before = prom.value(prom.scrape(gw), "gateway_config_reloads_total", result="success") or 0
    gw.signal(signal.SIGHUP)
    wait_until(lambda: (prom.value(prom.scrape(gw), "gateway_config_reloads_total", result="success") or 0)
               == before + 1, timeout=10, what="reload")
    t.join(10)
    assert result["r"].status == 200 and result["r"].json()["conn"] == 0, result
    wait_until(lambda: up.open_connections() == 0, timeout=5, what="the old generation's connection closed")
    r = get(gw, "/new")
    assert r.status == 200 and r.json()["conn"] == 1, r
