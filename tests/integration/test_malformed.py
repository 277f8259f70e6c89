"""Requests that HTTP/1.1 parsers disagree on are refused with 400 (SPEC §2, Limits and
timeouts) and never reach the upstream; the connection is closed after the answer."""

import pytest

from client import Client
from harness import simple_config

CASES = {
    "content-length-and-chunked":
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
    "differing-content-lengths":
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "content-length-list":
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\nabcd",
    "transfer-encoding-not-chunked":
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    "chunked-not-final":
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "obsolete-line-folding":
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n  two\r\n\r\n",
    "bare-lf-line-ends":
        b"GET /x HTTP/1.1\nHost: a\n\n",
    "bare-lf-in-head":
        b"GET /x HTTP/1.1\r\nHost: a\nX-A: 1\r\n\r\n",
    "nul-in-header-value":
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n",
    "whitespace-before-colon":
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n",
    "whitespace-before-colon-transfer-encoding":
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n"
        b"0\r\n\r\n",
    "two-host-headers":
        b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "bad-chunk-size":
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
}


@pytest.fixture(scope="module")
def gw_up(tmp_path_factory):
    from harness import Gateway
    from upstream import Upstream
    up = Upstream("up")
    gw = Gateway(tmp_path_factory.mktemp("malformed"), simple_config(up))
    try:
        gw.start()
        yield gw, up
        gw.stop()
    finally:
        gw.kill()
        up.stop()


@pytest.mark.parametrize("name", list(CASES))
def test_ambiguous_request_is_400(gw_up, name):
    gw, up = gw_up
    before = len(up.snapshot())
    with Client(gw.port, timeout=5) as c:
        c.send(CASES[name])
        r = c.read_response()
        assert r.status == 400, f"{name}: {r!r}"
        assert r.header("content-type") == "application/json"
        assert r.json()["error_code"] == "BAD_REQUEST"
        assert c.closed_by_peer(5), f"{name}: connection left open after a 400"
    reached = up.snapshot()[before:]
    assert not reached, f"{name}: reached the upstream as {[(q.target, q.headers) for q in reached]}"
