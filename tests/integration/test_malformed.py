"""Requests that HTTP/1.1 parsers disagree on are refused with 400 (SPEC §2, Limits and
timeouts) and never reach the upstream; the connection is closed after the answer. The
classic CL.TE / TE.CL / TE.TE variants, Content-Length forms, line ends, request targets
and chunk framing (issue 3 asks for at least 40 cases)."""

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
    # CL.TE, TE.CL and TE.TE variants
    "cl-te-classic":
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nG",
    "te-cl-classic":
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
        b"8\r\nSMUGGLED\r\n0\r\n\r\n",
    "te-te-gzip-then-chunked":
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
    "te-te-twice-chunked":
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n0\r\n\r\n",
    "te-xchunked": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te-tab-after-chunked":
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n",
    "te-trailing-comma": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n0\r\n\r\n",
    "te-identity": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
    "te-gzip-chunked-list":
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "te-obs-fold":
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 3\r\n\r\nabc",
    # Content-Length forms parsers read differently
    "content-length-same-twice":
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "content-length-negative": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    "content-length-plus": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
    "content-length-hex": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc",
    "content-length-inner-space": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\nabc",
    "content-length-overflow":
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    "content-length-space-before-colon":
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\nabc",
    # Line ends and folding
    "obs-fold-after-empty-value": b"GET /x HTTP/1.1\r\nHost: a\r\nX-F:\r\n two\r\n\r\n",
    "obs-fold-with-tab": b"GET /x HTTP/1.1\r\nHost: a\r\nX-F: one\r\n\ttwo\r\n\r\n",
    "obs-fold-host": b"GET /x HTTP/1.1\r\nHost:\r\n evil.example\r\n\r\n",
    "bare-lf-ends-head": b"GET /x HTTP/1.1\r\nHost: a\r\n\n",
    "bare-lf-after-leading-empty-lines": b"\r\n\r\nGET /x HTTP/1.1\nHost: a\r\n\r\n",
    "bare-cr-in-head": b"GET /x HTTP/1.1\rHost: a\r\n\r\n",
    "lone-cr-ends-head":
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\n\rX\r\n\r\nabc",
    "tab-before-colon": b"GET /x HTTP/1.1\r\nHost: a\r\nX-A\t: 1\r\n\r\n",
    # Request line and target
    "nul-in-target": b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n",
    "control-in-target": b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n",
    "space-in-target": b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
    "http-2-0-on-http1": b"GET /x HTTP/2.0\r\nHost: a\r\n\r\n",
    "garbage-version": b"GET /x HTTP/1.x\r\nHost: a\r\n\r\n",
    "fragment-in-target": b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
    "absolute-form-userinfo": b"GET http://user@a/x HTTP/1.1\r\nHost: a\r\n\r\n",
    "path-escapes-root": b"GET /../x HTTP/1.1\r\nHost: a\r\n\r\n",
    "encoded-dots-escape-root": b"GET /%2e%2e/x HTTP/1.1\r\nHost: a\r\n\r\n",
    "asterisk-form-get": b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
    "connect-method": b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    # Header names and Host
    "empty-header-name": b"GET /x HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n",
    "space-in-header-name": b"GET /x HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n",
    "missing-host-http11": b"GET /x HTTP/1.1\r\nX-A: b\r\n\r\n",
    "host-with-userinfo": b"GET /x HTTP/1.1\r\nHost: user@a\r\n\r\n",
    # Chunked bodies
    "chunk-size-overflow":
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n",
    "chunk-size-negative":
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nabc\r\n0\r\n\r\n",
    "chunk-data-without-crlf":
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n",
    "chunk-extension-flood":
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;" + b"e" * 6000 +
        b"\r\nabc\r\n0\r\n\r\n",
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
