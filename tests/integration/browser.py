"""Headless Chromium (Debian `chromium`) driven over the DevTools protocol with a minimal
WebSocket client: Python standard library only. Shared by the browser tests
(test_cors_browser.py, test_status_page.py). `CHROMIUM` is None when it is not installed.
Every wait is bounded; the browser's process group and its crash handlers are killed by
PID."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.parse

from client import websocket_frame
from harness import PDEATHSIG_PREFIX, kill_and_reap

CHROMIUM = shutil.which("chromium")
BROWSER_START_TIMEOUT = 20.0


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
        # Events (messages without an id) received while waiting for answers, in order,
        # for the domains a test enabled (Network, Runtime, Log).
        self.events: list[dict] = []

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
            if "id" not in msg:
                self.events.append(msg)
                continue
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise AssertionError(f"DevTools {method}: {msg['error']}")
                return msg["result"]

    def poll_events(self, seconds: float) -> None:
        """Reads the events that arrive within `seconds` into self.events."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                msg = json.loads(self._message(deadline))
            except AssertionError:  # the deadline passed with nothing more
                return
            if "id" not in msg:
                self.events.append(msg)

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
        deadline = time.monotonic() + timeout

        def wait_for(read, what):
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"chromium exited with {self.proc.returncode}:\n{self.log_text()}")
                try:
                    value = read()
                except (OSError, ValueError):
                    value = None
                if value is not None:
                    return value
                if time.monotonic() > deadline:
                    raise AssertionError(f"no {what} after {timeout}s:\n{self.log_text()}")
                time.sleep(0.05)

        def read_port():
            with open(os.path.join(self.profile, "DevToolsActivePort")) as f:
                first = f.readline().strip()
            return int(first) if first else None

        port = wait_for(read_port, "DevToolsActivePort")

        def read_page_url():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("GET", "/json/list")
                targets = json.loads(conn.getresponse().read())
            finally:
                conn.close()
            pages = [t for t in targets if t.get("type") == "page" and t.get("webSocketDebuggerUrl")]
            return pages[0]["webSocketDebuggerUrl"] if pages else None

        ws_url = wait_for(read_page_url, "page target")
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
