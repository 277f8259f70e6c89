"""CORS proven with a real browser (issue: filter chain): headless Chromium (Debian
`chromium`) loads a page from one origin (http://127.0.0.2:A) whose script fetch()es the
gateway on another (http://127.0.0.1:B), and records which requests the browser let the
page see: an allowed origin's simple GET (and its exposed X-Request-ID), a disallowed
origin, a preflighted PUT with a custom header (and refused preflights), credentialed
requests (credentials: 'include') with allow_credentials, with `*` without credentials
(the browser must refuse) and `*` with credentials (the gateway echoes the origin).

The browser is driven over the DevTools protocol (--remote-debugging-port=0, the port read
from DevToolsActivePort) with a minimal WebSocket client written here: Python standard
library only. Skipped with a message when `chromium` is not installed
(scripts/install-deps.sh test installs it). Bounded: every wait has a deadline, the whole
test stays well under 60 s, and the browser's process group is killed by its id."""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.parse

import pytest

from client import websocket_frame
from harness import PDEATHSIG_PREFIX, gateway_config, kill_and_reap

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="the browser CORS test needs headless Chromium: Debian package `chromium` "
           "(`scripts/install-deps.sh test` installs it)")

BROWSER_START_TIMEOUT = 20.0
PAGE_TIMEOUT = 25.0


# -- a minimal WebSocket client (RFC 6455), enough for the DevTools protocol ------------------

class DevTools:
    _GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, ws_url: str, timeout: float = 10.0):
        u = urllib.parse.urlsplit(ws_url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16))
        # No Origin header: DevTools accepts clients that send none.
        self.sock.sendall(b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                          b"Sec-WebSocket-Version: 13\r\n\r\n"
                          % (u.path.encode(), u.hostname.encode(), u.port, key))
        head = b""
        while b"\r\n\r\n" not in head:
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError(f"DevTools closed during the handshake: {head!r}")
            head += data
        head, _, self.buf = head.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        if b" 101 " not in lines[0]:
            raise ConnectionError(f"DevTools refused the WebSocket: {head!r}")
        accept = base64.b64encode(hashlib.sha1(key + self._GUID).digest())
        if not any(l.lower().startswith(b"sec-websocket-accept:") and l.split(b":", 1)[1].strip() == accept
                   for l in lines[1:]):
            raise ConnectionError(f"bad Sec-WebSocket-Accept: {head!r}")
        self.next_id = 0

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _send(self, payload: bytes, opcode: int = 1) -> None:
        self.sock.sendall(websocket_frame(payload, opcode))

    def _exact(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(max(65536, n - len(self.buf)))
            except socket.timeout:
                raise AssertionError("DevTools: no answer in time")
            if not data:
                raise ConnectionError("DevTools connection closed")
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _message(self, deadline: float) -> str:
        parts = []
        while True:
            b0, b1 = self._exact(2, deadline)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._exact(2, deadline))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._exact(8, deadline))
            mask = self._exact(4, deadline) if b1 & 0x80 else None
            payload = self._exact(n, deadline)
            if mask:
                payload = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
            opcode = b0 & 0x0F
            if opcode == 8:
                raise ConnectionError("DevTools sent close")
            if opcode == 9:
                self._send(payload, opcode=10)
                continue
            if opcode == 10:
                continue
            parts.append(payload)
            if b0 & 0x80:
                return b"".join(parts).decode()

    def call(self, method: str, params: dict | None = None, timeout: float = 10.0) -> dict:
        self.next_id += 1
        my_id = self.next_id
        self._send(json.dumps({"id": my_id, "method": method, "params": params or {}}).encode())
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self._message(deadline))
            if msg.get("id") == my_id:  # events (no id) are ignored
                if "error" in msg:
                    raise AssertionError(f"DevTools {method}: {msg['error']}")
                return msg["result"]

    def evaluate(self, expression: str, timeout: float = 10.0, await_promise: bool = False):
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": await_promise}, timeout)
        if "exceptionDetails" in res:
            raise AssertionError(f"page script failed: {res['exceptionDetails']}")
        return res["result"].get("value")


# -- the browser -----------------------------------------------------------------------------

class Browser:
    def __init__(self, profile_dir):
        self.profile = str(profile_dir)
        args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--no-default-browser-check",
                "--no-proxy-server", "--disable-crash-reporter", "--disable-breakpad",
                f"--user-data-dir={self.profile}",
                "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                "about:blank"]
        self.log = open(os.path.join(self.profile, "chromium.log"), "wb")
        # Own process group (killed whole by its id), parent-death signal like the gateways.
        # Chromium's crash handler daemonizes (its own session) and keeps its database
        # under XDG_CONFIG_HOME: point that into the profile, so that nothing is written
        # outside it and kill() can tell our handler from any other by its command line.
        env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(self.profile, "xdg"))
        self.proc = subprocess.Popen([*PDEATHSIG_PREFIX, *args], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log, env=env,
                                     start_new_session=True)
        self.devtools = None

    def connect(self, timeout: float = BROWSER_START_TIMEOUT) -> DevTools:
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        port = None
        while port is None:
            if self.proc.poll() is not None:
                raise AssertionError(f"chromium exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                with open(port_file) as f:
                    first = f.readline().strip()
                port = int(first) if first else None
            except (OSError, ValueError):
                pass
            if port is None:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no DevToolsActivePort after {timeout}s:\n{self.log_text()}")
                time.sleep(0.05)
        ws_url = None
        while ws_url is None:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/json/list")
                targets = json.loads(conn.getresponse().read())
                conn.close()
                pages = [t for t in targets if t.get("type") == "page" and t.get("webSocketDebuggerUrl")]
                ws_url = pages[0]["webSocketDebuggerUrl"] if pages else None
            except (OSError, ValueError):
                pass
            if ws_url is None:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no page target after {timeout}s:\n{self.log_text()}")
                time.sleep(0.05)
        self.devtools = DevTools(ws_url)
        return self.devtools

    def log_text(self) -> str:
        try:
            with open(os.path.join(self.profile, "chromium.log"), "rb") as f:
                return f.read()[-4000:].decode(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        if self.devtools:
            self.devtools.close()
        kill_and_reap(self.proc, group=True)
        # The renderer and GPU helpers share the group; the crash handlers do not, but
        # name the profile in their command line.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in self._own_processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.log.close()

    def _own_processes(self) -> list[int]:
        mine = []
        needle = self.profile.encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if needle in f.read():
                        mine.append(int(entry))
            except OSError:
                pass
        return mine


# -- the page --------------------------------------------------------------------------------

PAGE = """<!doctype html>
<meta charset="utf-8"><title>cors test</title>
<pre id="out">running</pre>
<script>
const GATEWAY = %(gateway)s;
const CASES = %(cases)s;
async function attempt(path, init) {
  try {
    const r = await fetch(GATEWAY + path, init);
    const body = await r.text();
    return {ok: true, status: r.status, request_id: r.headers.get("X-Request-ID"),
            body_length: body.length};
  } catch (e) {
    return {ok: false, error: String(e)};
  }
}
window.testDone = (async () => {
  const out = {};
  for (const [name, path, init] of CASES) out[name] = await attempt(path, init);  // in order
  document.getElementById("out").textContent = JSON.stringify(out);
  return out;
})();
</script>
"""

PUT_CUSTOM = {"method": "PUT", "headers": {"X-Custom": "yes", "Content-Type": "application/json"},
              "body": "{\"n\": 1}"}
CASES = [
    # name, path, fetch() init
    ("simple_allowed", "/cred/simple", {}),
    ("simple_disallowed", "/other/simple", {}),
    ("preflighted_put", "/cred/put", PUT_CUSTOM),
    ("preflight_refused_header", "/cred/badheader",
     {"method": "PUT", "headers": {"X-Evil": "1"}}),
    ("preflight_refused_method", "/cred/delete", {"method": "DELETE"}),
    ("credentialed_allowed", "/cred/with-cookies", {"credentials": "include"}),
    ("credentialed_put", "/cred/put-with-cookies", {**PUT_CUSTOM, "credentials": "include"}),
    ("star_anonymous", "/star/anon", {}),
    ("star_credentialed", "/star/with-cookies", {"credentials": "include"}),
    ("star_with_credentials_config", "/anycreds/with-cookies", {"credentials": "include"}),
    ("cors_off_route", "/nocors/simple", {}),
]


class PageServer:
    """Serves `html` on a loopback address other than the gateway's: another origin."""

    def __init__(self):
        self.html = b""
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != "/":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(owner.html)))
                self.end_headers()
                self.wfile.write(owner.html)

            def log_message(self, *args):
                pass

        try:
            self.server = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Handler)
            self.origin = f"http://127.0.0.2:{self.server.server_address[1]}"
        except OSError:  # no 127.0.0.2: another host name is another origin too
            self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            self.origin = f"http://localhost:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_browser_lets_through_exactly_what_the_cors_config_allows(gateway_factory, upstream,
                                                                  tmp_path):
    started = time.monotonic()
    page = PageServer()
    try:
        origin = page.origin
        gw = gateway_factory(gateway_config(
            upstreams={"up": [upstream]},
            default_filters={
                "request_id": {},
                "security_headers": {},
                "cors": {"allow_origins": [origin], "allow_methods": ["GET", "POST", "PUT"],
                         "allow_headers": ["X-Custom", "Content-Type"],
                         "expose_headers": ["X-Request-ID"], "allow_credentials": True},
            },
            routes=[
                {"name": "cred", "match": {"path_prefix": "/cred"}, "upstream": "up"},
                {"name": "other", "match": {"path_prefix": "/other"}, "upstream": "up",
                 "filters": {"cors": {"allow_origins": ["https://elsewhere.example"]}}},
                {"name": "star", "match": {"path_prefix": "/star"}, "upstream": "up",
                 "filters": {"cors": {"allow_origins": ["*"], "expose_headers": ["X-Request-ID"]}}},
                {"name": "anycreds", "match": {"path_prefix": "/anycreds"}, "upstream": "up",
                 "filters": {"cors": {"allow_origins": ["*"], "allow_credentials": True}}},
                {"name": "nocors", "match": {"path_prefix": "/nocors"}, "upstream": "up",
                 "filters": {"cors": "off"}},
            ]))
        page.html = (PAGE % {"gateway": json.dumps(f"http://127.0.0.1:{gw.port}"),
                             "cases": json.dumps(CASES)}).encode()
        profile = tmp_path / "chromium-profile"
        profile.mkdir()
        browser = Browser(profile)
        try:
            dt = browser.connect()
            dt.call("Page.navigate", {"url": origin + "/"})
            deadline = time.monotonic() + PAGE_TIMEOUT
            while dt.evaluate("typeof window.testDone") != "object":
                if time.monotonic() > deadline:
                    raise AssertionError(f"page did not load:\n{browser.log_text()}")
                time.sleep(0.05)
            assert dt.evaluate("location.origin") == origin
            results = dt.evaluate("window.testDone", timeout=max(1.0, deadline - time.monotonic()),
                                  await_promise=True)
        finally:
            browser.kill()
    finally:
        page.stop()

    def let_through(name):
        return results[name]["ok"]

    summary = {k: (v["ok"], v.get("status"), v.get("error")) for k, v in results.items()}
    print("browser results:", json.dumps(summary))  # shown by pytest on failure / -s
    # Allowed origin, simple GET: readable, with the exposed X-Request-ID.
    assert let_through("simple_allowed") and results["simple_allowed"]["status"] == 200, summary
    assert results["simple_allowed"]["request_id"], "X-Request-ID is exposed to the page"
    assert results["simple_allowed"]["body_length"] > 0
    # Disallowed origin: the browser hides the answer.
    assert not let_through("simple_disallowed"), summary
    # The preflighted PUT with a custom header goes through; refused preflights stop it.
    assert let_through("preflighted_put") and results["preflighted_put"]["status"] == 200, summary
    assert not let_through("preflight_refused_header"), summary
    assert not let_through("preflight_refused_method"), summary
    # Credentials: with the exact origin echoed and Allow-Credentials, yes.
    assert let_through("credentialed_allowed"), summary
    assert let_through("credentialed_put"), summary
    # `*` lets an anonymous request through, never a credentialed one...
    assert let_through("star_anonymous"), summary
    assert results["star_anonymous"]["request_id"], summary
    assert not let_through("star_credentialed"), summary
    # ...unless allow_credentials makes the gateway echo the origin instead of `*`.
    assert let_through("star_with_credentials_config"), summary
    # cors: off on the route: no grant, the browser refuses.
    assert not let_through("cors_off_route"), summary

    # What reached the upstream: never an OPTIONS (the gateway answered every preflight),
    # never the requests whose preflight was refused.
    seen = [(r.method, r.path) for r in upstream.snapshot()]
    assert not any(m == "OPTIONS" for m, _ in seen), seen
    assert ("PUT", "/cred/put") in seen and ("PUT", "/cred/put-with-cookies") in seen, seen
    assert not any(p in ("/cred/badheader", "/cred/delete") for _, p in seen), seen
    put = next(r for r in upstream.snapshot() if r.path == "/cred/put")
    assert put.header("X-Custom") == "yes" and put.header("Origin") == origin
    # Simple requests are sent whatever the answer; the browser only hides it.
    assert ("GET", "/other/simple") in seen and ("GET", "/star/with-cookies") in seen, seen

    # The gateway's side: the preflights it answered.
    log = gw.wait_access_log(1)
    preflights = {e["path"]: e["status"] for e in gw.access_log() if e["method"] == "OPTIONS"}
    assert preflights.get("/cred/put") == 204, preflights
    assert preflights.get("/cred/put-with-cookies") == 204, preflights
    assert preflights.get("/cred/badheader") == 403, preflights
    assert preflights.get("/cred/delete") == 403, preflights
    assert "/cred/simple" not in preflights, "a simple GET needs no preflight"
    assert log

    assert time.monotonic() - started < 60, "bounded: under a minute"
