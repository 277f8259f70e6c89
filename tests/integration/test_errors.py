"""The gateway's own answers (SPEC §3) and the access log (SPEC §6): 404, 502 (upstream
closing without an answer, garbage), 503 (upstream down, connect timeout), 504 (response
timeout), responses cut short, and the fields of each access-log line."""

import json
import re
import signal
import socket
import struct
import time

import pytest

import prom
from client import Client, ProtocolError
from harness import (ACCESS_LOG_KEYS, gateway_config, open_paths, refusing_address, simple_config,
                     wait_until)

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def assert_error_body(r, status, code):
    assert r.status == status, r
    assert r.header("content-type") == "application/json", r
    assert r.header("content-length") == str(len(r.body)), r
    body = r.json()
    assert set(body) == {"error_code", "message", "request_id", "timestamp"}, body
    assert body["error_code"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["request_id"], str) and body["request_id"]
    assert TIMESTAMP.match(body["timestamp"]), body["timestamp"]
    # no internals: no file paths, no addresses, no stack traces
    text = r.body.decode()
    for leak in ("/work", ".cc", "127.0.0.1", "Traceback", "std::", "errno"):
        assert leak not in text, text
    return body


@pytest.fixture
def gw(gateway_factory, upstream):
    return gateway_factory(gateway_config(
        upstreams={"up": [upstream]},
        routes=[{"name": "only", "match": {"path_prefix": "/app"}, "upstream": "up"}]))


def test_404_json_and_access_log(gw):
    with Client(gw.port) as c:
        r = c.request("GET", "/nowhere?x=1")
        body = assert_error_body(r, 404, "NOT_FOUND")
        assert c.still_open(), "a 404 to a GET keeps the connection"
    entry = gw.wait_access_log(1)[0]
    for k in ACCESS_LOG_KEYS:
        assert k in entry, f"access log lacks {k}: {entry}"
    assert entry["status"] == 404
    assert entry["error_code"] == "NOT_FOUND"
    assert entry["request_id"] == body["request_id"]
    assert entry["route"] == ""
    assert entry["path"] == "/nowhere"
    assert entry["method"] == "GET"


def test_request_ids_are_unique(gw):
    ids = set()
    with Client(gw.port) as c:
        for _ in range(20):
            ids.add(c.request("GET", "/nowhere").json()["request_id"])
    assert len(ids) == 20


def test_access_log_fields_for_a_proxied_request(gw, upstream):
    with Client(gw.port) as c:
        r = c.request("POST", "/app/x?q=1", body=b"0123456789")
        assert r.status == 200
    e = gw.wait_access_log(1)[0]
    for k in ACCESS_LOG_KEYS:
        assert k in e, f"access log lacks {k}: {e}"
    assert "error_code" not in e or e["error_code"] in ("", None)
    assert TIMESTAMP.match(e["timestamp"]), e
    assert e["request_id"]
    assert e["client_ip"] == "127.0.0.1"
    assert e["method"] == "POST"
    assert e["protocol"] == "HTTP/1.1"
    assert e["path"] == "/app/x"
    assert e["route"] == "only"
    assert e["status"] == 200
    assert isinstance(e["duration_ms"], (int, float)) and e["duration_ms"] >= 0
    assert e["upstream"] == "up"
    assert e["upstream_endpoint"] == upstream.address
    assert isinstance(e["upstream_duration_ms"], (int, float))
    assert 0 <= e["upstream_duration_ms"] <= e["duration_ms"] + 1
    assert isinstance(e["bytes_in"], int) and e["bytes_in"] >= 10
    assert isinstance(e["bytes_out"], int) and e["bytes_out"] >= len(r.body)
    assert e["tls"] is False


def test_bytes_that_are_not_utf8_keep_every_access_log_line_valid(gateway_factory, upstream):
    # Bytes that are not UTF-8 in the request line and in headers the gateway reads (the
    # request id, X-Forwarded-For from a trusted peer): every line stays valid JSON and valid
    # UTF-8, and none of those bytes is logged as it came (docs/observability.md).
    gw = gateway_factory(gateway_config(
        upstreams={"up": [upstream]}, trusted_proxies=["127.0.0.1/32"],
        default_filters={"request_id": {}},
        routes=[{"name": "only", "match": {"path_prefix": "/app"}, "upstream": "up"}]))
    bad = b"\xff\xfe\xc0\xaf\xed\xa0\x80\xe2\x82"
    requests = [
        b"GET /app/caf\xc3\xa9/" + bad + b" HTTP/1.1\r\nHost: example.test\r\n\r\n",
        b"GET /app/x HTTP/1.1\r\nHost: example.test\r\nUser-Agent: " + bad + b"\r\n"
        b"X-Request-ID: " + bad + b"\r\nX-Forwarded-For: 192.0.2.1, " + bad + b"\r\n\r\n",
    ]
    for raw in requests:
        with Client(gw.port) as c:
            c.send(raw)
            assert c.read_response().status in (200, 400)
    gw.wait_access_log(len(requests))
    for line in gw.stdout_path.read_bytes().splitlines():
        assert bad not in line
        text = line.decode("utf-8")  # strict: a raw byte that is not UTF-8 fails here
        assert not any(ord(ch) < 0x20 for ch in text), line
        entry = json.loads(text)
        assert not any(bad.decode("latin-1") in v for v in entry.values() if isinstance(v, str))


def test_access_log_counts_bytes(gw, upstream):
    with Client(gw.port) as c:
        r = c.request("GET", "/app/big?size=100000")
        assert r.body_len == 100000
    e = gw.wait_access_log(1)[0]
    assert 100000 <= e["bytes_out"] < 100000 + 1000, e


def test_access_log_file_is_written_while_the_gateway_runs(gateway_factory, upstream, tmp_path):
    # A file is written through a buffer; its lines must still show up within about a
    # second (`tail -f`), not only when the gateway stops.
    path = tmp_path / "access.log"
    gw = gateway_factory(gateway_config(
        upstreams={"up": [upstream]},
        routes=[{"name": "only", "match": {"path_prefix": "/app"}, "upstream": "up"}],
        logging={"access_log": str(path)}, default_filters={"request_id": {}}))
    with Client(gw.port) as c:
        for i in range(3):
            assert c.request("GET", f"/app/{i}", headers={"X-Request-ID": f"file-{i}"}).status == 200

    def logged():
        text = path.read_text() if path.exists() else ""
        return [json.loads(line)["request_id"] for line in text.splitlines()]

    wait_until(lambda: logged() == ["file-0", "file-1", "file-2"], timeout=5, what=f"3 lines in {path}")
    assert gw.running
    assert gw.access_log() == []  # nothing on stdout


def logged_ids(path) -> list[str]:
    text = path.read_text() if path.exists() else ""
    return [json.loads(line)["request_id"] for line in text.splitlines()]


def test_sigusr1_reopens_the_access_log_after_rotation(gateway_factory, upstream, tmp_path):
    # logrotate's default (no copytruncate): move the file, then tell the gateway, as nginx
    # is told with USR1. The moved file gets no new line and is no longer held open.
    path, rotated = tmp_path / "access.log", tmp_path / "access.log.1"
    gw = gateway_factory(simple_config(upstream, logging={"access_log": str(path)},
                                       default_filters={"request_id": {}}))
    with Client(gw.port) as c:
        assert c.request("GET", "/before", headers={"X-Request-ID": "before"}).status == 200
        wait_until(lambda: logged_ids(path) == ["before"], timeout=5, what="the first line")
        path.rename(rotated)
        gw.signal(signal.SIGUSR1)
        wait_until(lambda: path.exists(), timeout=5, what="a new file at the configured path")
        assert c.request("GET", "/after", headers={"X-Request-ID": "after"}).status == 200
    wait_until(lambda: logged_ids(path) == ["after"], timeout=5, what="the new line in the new file")
    assert logged_ids(rotated) == ["before"]
    assert str(rotated) not in open_paths(gw)
    assert any(e.get("message") == "access log reopened" for e in gw.app_log())
    assert gw.running


def test_sigusr1_with_the_access_log_off_reopens_nothing(gateway_factory, upstream):
    gw = gateway_factory(simple_config(upstream, logging={"access_log": "off"}))
    gw.signal(signal.SIGUSR1)
    wait_until(lambda: any(e.get("message") == "access log is off: nothing to reopen"
                           for e in gw.app_log()), timeout=5, what="the line")
    assert not any(e.get("message") == "access log reopened" for e in gw.app_log())
    with Client(gw.port) as c:
        assert c.request("GET", "/x").status == 200


def test_sigusr1_keeps_the_old_file_when_the_path_cannot_be_opened(gateway_factory, upstream,
                                                                 tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "access.log"
    gw = gateway_factory(simple_config(upstream, logging={"access_log": str(path)},
                                       default_filters={"request_id": {}}))
    path.unlink()
    logs.rmdir()  # nothing can be opened at the path now, whoever the gateway runs as
    gw.signal(signal.SIGUSR1)
    wait_until(lambda: any(e.get("message", "").startswith("cannot reopen the access log")
                           for e in gw.app_log()), timeout=5, what="the error line")
    with Client(gw.port) as c:
        assert c.request("GET", "/still").status == 200
    assert gw.running
    # Still writing to the file it had (deleted, so only /proc shows it).
    assert f"{path} (deleted)" in open_paths(gw), open_paths(gw)


def test_503_when_upstream_is_down(gateway_factory):
    dead = refusing_address()
    gw = gateway_factory(gateway_config(
        upstreams={"up": [dead]},
        routes=[{"name": "r", "match": {"path_prefix": "/"}, "upstream": "up"}]))
    with Client(gw.port) as c:
        body = assert_error_body(c.request("GET", "/x"), 503, "SERVICE_UNAVAILABLE")
        assert c.still_open()
        assert_error_body(c.request("GET", "/y"), 503, "SERVICE_UNAVAILABLE")
    e = gw.find_access(lambda e: e["request_id"] == body["request_id"])
    assert e["status"] == 503 and e["error_code"] == "SERVICE_UNAVAILABLE"
    assert e["upstream"] == "up"


@pytest.mark.parametrize("how", ["drop=1", "reset=1", "garbage=1"])
def test_502_when_upstream_fails_before_answering(gw, upstream, how):
    with Client(gw.port) as c:
        assert_error_body(c.request("GET", f"/app/x?{how}"), 502, "BAD_GATEWAY")
        # the client connection is still good
        assert c.request("GET", "/app/after").status == 200


def test_502_when_upstream_closes_without_answering_a_post(gw, upstream):
    with Client(gw.port) as c:
        assert_error_body(c.request("POST", "/app/x?drop=1", body=b"data"), 502, "BAD_GATEWAY")


@pytest.mark.parametrize("answer", [
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Type: text/pl", id="truncated_head"),
    pytest.param(b"HTTP/1.1 abc Nope\r\nContent-Length: 0\r\n\r\n", id="invalid_status_line"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                 id="conflicting_framing"),
])
def test_502_on_a_broken_upstream_answer(gw, upstream, answer):
    def send_and_close(req, conn):
        conn.send(answer)
        return False
    upstream.handler = send_and_close
    with Client(gw.port) as c:
        assert_error_body(c.request("GET", "/app/x"), 502, "BAD_GATEWAY")


@pytest.mark.parametrize("query", ["size=200000&truncate=50000",
                                   "size=200000&chunked=1&truncate=50000"])
def test_response_cut_short_is_not_completed(gw, upstream, query):
    # Once the head has gone out, the only honest signal is to close the connection:
    # the client must not see a complete message.
    with Client(gw.port) as c:
        c.send(b"GET /app/x?" + query.encode() + b" HTTP/1.1\r\nHost: example.test\r\n\r\n")
        with pytest.raises(ProtocolError):
            c.read_response(keep_body=False)
        assert c.eof


def test_503_on_upstream_connect_timeout(gateway_factory):
    # A listening socket whose accept queue is full: the kernel drops further SYNs, so a
    # connect neither succeeds nor fails (only 127.0.0.0/8 is usable here).
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(s)
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            probe.connect(("127.0.0.1", port))
            pytest.skip("cannot simulate a connect timeout here: the backlog did not fill")
        except socket.timeout:
            pass
        finally:
            probe.close()
        gw = gateway_factory(gateway_config(
            upstreams={"up": [f"127.0.0.1:{port}"]},
            routes=[{"name": "r", "match": {"path_prefix": "/"}, "upstream": "up"}],
            timeouts={"upstream_connect": "300ms"}))
        with Client(gw.port) as c:
            t = time.monotonic()
            r = c.request("GET", "/slow-connect")
            elapsed = time.monotonic() - t
            assert_error_body(r, 503, "SERVICE_UNAVAILABLE")
            assert 0.25 <= elapsed < 3.0, elapsed
    finally:
        for s in fillers:
            s.close()
        lsock.close()


def test_504_on_upstream_response_timeout(gateway_factory, upstream):
    gw = gateway_factory(simple_config(upstream, timeouts={"upstream_response": "300ms"}))
    with Client(gw.port) as c:
        t = time.monotonic()
        r = c.request("GET", "/slow?delay=3000")
        elapsed = time.monotonic() - t
        body = assert_error_body(r, 504, "GATEWAY_TIMEOUT")
        assert 0.25 <= elapsed < 2.5, elapsed
        # the connection is still usable, and fast answers still pass
        assert c.request("GET", "/fast?delay=10").status == 200
    e = gw.find_access(lambda e: e["request_id"] == body["request_id"])
    assert e["status"] == 504 and e["error_code"] == "GATEWAY_TIMEOUT"


def test_route_timeout_overrides_the_global_one(gateway_factory, upstream):
    gw = gateway_factory(gateway_config(
        upstreams={"up": [upstream]},
        routes=[{"name": "quick", "match": {"path_prefix": "/quick"}, "upstream": "up",
                 "timeout": "300ms"},
                {"name": "rest", "match": {"path_prefix": "/"}, "upstream": "up"}],
        timeouts={"upstream_response": "10s"}))
    with Client(gw.port) as c:
        t = time.monotonic()
        assert_error_body(c.request("GET", "/quick?delay=3000"), 504, "GATEWAY_TIMEOUT")
        assert time.monotonic() - t < 2.5
        assert c.request("GET", "/other?delay=600").status == 200


def test_response_timeout_covers_the_head_only(gateway_factory, upstream):
    # upstream_response bounds the time to the response head; a body that keeps flowing
    # after it is not cut.
    def slow_body(req, conn):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        for i in range(10):
            time.sleep(0.08)
            conn.send(b"x")
        return True
    upstream.handler = slow_body
    gw = gateway_factory(simple_config(upstream, timeouts={"upstream_response": "300ms"}))
    with Client(gw.port) as c:
        r = c.request("GET", "/slow-body")
        assert r.status == 200 and r.body == b"x" * 10


def _reused_connection_config(upstream, idle_timeout, response_timeout):
    return gateway_config(
        upstreams={"up": {"endpoints": [upstream],
                          "keepalive": {"max_idle": 8, "idle_timeout": idle_timeout}}},
        routes=[{"name": "r", "match": {"path_prefix": "/"}, "upstream": "up"}],
        workers=1, timeouts={"upstream_response": response_timeout})


def test_response_timeout_on_a_reused_connection_fires_on_time(gateway_factory, upstream):
    # The pooled connection's timer runs for its far keep-alive deadline; the response
    # deadline, earlier, must re-arm it.
    gw = gateway_factory(_reused_connection_config(upstream, "60s", "300ms"))
    with Client(gw.port) as c:
        assert c.request("GET", "/fast?delay=10").status == 200
        t = time.monotonic()
        assert_error_body(c.request("GET", "/slow?delay=3000"), 504, "GATEWAY_TIMEOUT")
        assert 0.25 <= time.monotonic() - t < 2.5
    first, second = upstream.wait_requests(2)
    assert second.conn_id == first.conn_id and second.index == 1


def test_keepalive_deadline_passing_during_a_response_does_not_cut_it(gateway_factory, upstream):
    # The other way round: the timer still runs for a keep-alive deadline (200 ms) that
    # falls during the next, slower response (600 ms, within its 3 s); it must move on to
    # the response deadline rather than end the request.
    gw = gateway_factory(_reused_connection_config(upstream, "200ms", "3s"))
    with Client(gw.port) as c:
        assert c.request("GET", "/fast?delay=10").status == 200
        assert c.request("GET", "/slower?delay=600").status == 200
        time.sleep(0.5)  # now the pooled connection's idle deadline passes: it is closed
        assert c.request("GET", "/again?delay=10").status == 200
    first, second, third = upstream.wait_requests(3)
    assert second.conn_id == first.conn_id and second.index == 1
    assert third.conn_id != first.conn_id


def test_bad_request_is_400_json_and_closes(gw):
    with Client(gw.port) as c:
        c.send(b"GET /app/x HTTP/1.1\r\nHost: example.test\r\nContent-Length: 3\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        assert_error_body(c.read_response(), 400, "BAD_REQUEST")
        assert c.closed_by_peer()


def test_missing_host_in_http11_is_400(gw):
    with Client(gw.port) as c:
        c.send(b"GET /app/x HTTP/1.1\r\n\r\n")
        assert_error_body(c.read_response(), 400, "BAD_REQUEST")


def test_head_error_reply_has_no_body(gw):
    with Client(gw.port) as c:
        r = c.request("HEAD", "/nowhere")
        assert r.status == 404 and r.body == b""
        assert int(r.header("content-length")) > 0
        assert c.request("GET", "/app/next").status == 200


@pytest.mark.parametrize("request_bytes", [
    b"GET /nowhere HTTP/1.1\r\nHost: example.test\r\n\r\n",  # 404 from routing
    b"GET /app/x HTTP/1.1\r\n\r\n",  # 400 before routing
])
def test_client_reset_behind_a_request_answered_locally(gw, request_bytes):
    """The request and the client's RST are both queued when the gateway reads: the answer's
    write fails inside the parser's callback. (It used to free the request there and crash
    on it right after.) The gateway is stopped meanwhile so that both are queued for sure."""
    c = Client(gw.port)
    prom.wait_value(gw, "gateway_connections_active", 1, timeout=5, listener="http")
    gw.signal(signal.SIGSTOP)
    try:
        c.send(request_bytes)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    finally:
        gw.signal(signal.SIGCONT)
    prom.wait_value(gw, "gateway_connections_active", 0, timeout=5, listener="http")
    assert gw.running
    with Client(gw.port) as c2:
        assert c2.request("GET", "/nowhere").status == 404


def test_408_when_the_head_is_too_slow(gateway_factory, upstream):
    gw = gateway_factory(simple_config(upstream, timeouts={"header_read": "400ms"}))
    with Client(gw.port) as c:
        c.send(b"GET /slow-head HTTP/1.1\r\nHost: exa")
        t = time.monotonic()
        r = c.read_response()
        assert 0.3 <= time.monotonic() - t < 3.0
        assert_error_body(r, 408, "REQUEST_TIMEOUT")
        assert c.closed_by_peer()
    assert upstream.snapshot() == []


def test_idle_keepalive_connection_is_closed_after_idle_timeout(gateway_factory, upstream):
    gw = gateway_factory(simple_config(upstream, timeouts={"idle": "400ms"}))
    with Client(gw.port) as c:
        assert c.request("GET", "/x").status == 200
        t = time.monotonic()
        assert c.closed_by_peer(5)
        assert time.monotonic() - t >= 0.3
