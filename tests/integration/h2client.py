"""An HTTP/2 client for the integration tests, on python3-h2 (a third-party protocol
implementation, so the gateway is checked against someone else's reading of RFC 9113).

`H2Client(port, tls=False)` opens a connection (TLS with ALPN h2, or h2c prior knowledge)
and `request()` sends one request and waits for its answer; `start()`/`wait()` keep several
streams open at once. Validation of what is sent is off, so that tests can send what a
hostile client would (upper-case names, connection-specific fields, a wrong
content-length); `send_frame()` writes raw frames (hyperframe) for the floods of SPEC §7.
"""

from __future__ import annotations

import json
import socket
import ssl
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import Frame

from http_reader import HeaderLookup


def client_connection() -> h2.connection.H2Connection:
    """A python-h2 client state machine that sends what a hostile client would (no
    validation or normalisation of what goes out) and takes the gateway's answers as they
    are, for the tests to judge."""
    cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                    validate_outbound_headers=False,
                                    normalize_outbound_headers=False,
                                    validate_inbound_headers=False)
    return h2.connection.H2Connection(config=cfg)


class H2Response(HeaderLookup):
    def __init__(self, stream_id: int):
        self.stream_id = stream_id
        self.status = None
        self.headers: list = []
        self.body = bytearray()
        self.reset_code = None  # RST_STREAM's error code, when the stream was reset
        self.ended = False

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<H2Response {self.status} reset={self.reset_code} {bytes(self.body[:200])!r}>"


class ConnectionEnded(Exception):
    def __init__(self, error_code, last_stream_id):
        super().__init__(f"GOAWAY error_code={error_code} last_stream_id={last_stream_id}")
        self.error_code = error_code
        self.last_stream_id = last_stream_id


class H2Client:
    def __init__(self, port: int, tls: bool = False, host: str = "127.0.0.1", timeout: float = 10.0,
                 settings: dict | None = None, window: int | None = None, auto_window: bool = True):
        raw = socket.create_connection((host, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2", "http/1.1"])
            raw = ctx.wrap_socket(raw, server_hostname="localhost")
            assert raw.selected_alpn_protocol() == "h2", raw.selected_alpn_protocol()
        self.sock = raw
        self.timeout = timeout
        self.auto_window = auto_window
        self.conn = client_connection()
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values=settings or {})
        self.conn.initiate_connection()
        if window:
            self.conn.increment_flow_control_window(window)
        self.responses: dict[int, H2Response] = {}
        self._pending = bytearray()
        self.error = None
        self.goaway: ConnectionEnded | None = None
        self.closed = False
        self.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def send_frame(self, frame: Frame):
        self.flush()
        self.sock.sendall(frame.serialize())

    # -- requests -----------------------------------------------------------------------

    def start(self, method: str = "GET", path: str = "/", headers=(), body: bytes | None = b"",
              authority: str | None = "example.test", scheme: str = "http", end: bool = True) -> int:
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", scheme), (":path", path)]
        if authority is not None:
            hdrs.insert(1, (":authority", authority))
        hdrs += list(headers)
        self.responses[sid] = H2Response(sid)
        self.conn.send_headers(sid, hdrs, end_stream=end and not body)
        if body:
            self.send_body(sid, body, end=end)
        self.flush()
        return sid

    def send_body(self, sid: int, body: bytes, end: bool = True):
        """The body as the windows allow; stops when the gateway answered (a 413) or reset
        the stream, or the connection ended."""
        view = memoryview(body)
        while view and not self.done(sid) and not self.closed:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.pump(lambda: self.conn.local_flow_control_window(sid) > 0 or self.done(sid))
                continue
            piece, view = view[:window], view[window:]
            try:
                self.conn.send_data(sid, bytes(piece), end_stream=end and not view)
            except h2.exceptions.StreamClosedError:
                return
            self.flush()
        if end and not body:
            self.conn.end_stream(sid)
            self.flush()

    def done(self, sid: int) -> bool:
        r = self.responses[sid]
        return r.ended or r.reset_code is not None

    def wait(self, sid: int, timeout: float | None = None) -> H2Response:
        self.pump(lambda: self.done(sid), timeout)
        return self.responses[sid]

    def request(self, method: str = "GET", path: str = "/", headers=(), body: bytes = b"",
                **kw) -> H2Response:
        return self.wait(self.start(method, path, headers, body, **kw))

    # -- events -------------------------------------------------------------------------

    def pump(self, until, timeout: float | None = None):
        """Reads and handles events until until() is true; raises ConnectionEnded when the
        server sent GOAWAY (or closed) first."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not until():
            if self.closed:
                raise self.goaway or ConnectionEnded(None, None)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer in time")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
                continue
            self.feed(data)

    def read_until_closed(self, timeout: float = 10.0) -> ConnectionEnded | None:
        """Reads until the server closes; returns its GOAWAY (or None)."""
        try:
            self.pump(lambda: False, timeout)
        except ConnectionEnded:
            pass
        return self.goaway

    def feed(self, data: bytes):
        # Frame by frame: python-h2 closes its state machine on any GOAWAY, while RFC 9113
        # §6.8 lets the streams up to its last_stream_id finish; after a graceful GOAWAY the
        # client is put back in the open state so that their frames are still read.
        self._pending += data
        while len(self._pending) >= 9:
            size = 9 + int.from_bytes(self._pending[:3], "big")
            if len(self._pending) < size:
                break
            frame, self._pending = bytes(self._pending[:size]), self._pending[size:]
            try:
                events = self.conn.receive_data(frame)
            except h2.exceptions.ProtocolError as e:
                # the gateway's bytes python-h2 could not take: kept for the report
                self.error = f"{type(e).__name__}: {e} on frame {frame[:40]!r}"
                self.closed = True
                return
            self._handle(events)
            if self.goaway and self.goaway.error_code == 0:
                self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        try:
            self.flush()
        except OSError:
            self.closed = True

    def _handle(self, events):
        for e in events:
            sid = getattr(e, "stream_id", None)
            r = self.responses.get(sid) if sid else None
            if isinstance(e, h2.events.ResponseReceived) and r:
                r.headers = [(n, v) for n, v in e.headers if not n.startswith(":")]
                r.status = int(dict(e.headers)[":status"])
            elif isinstance(e, h2.events.DataReceived):
                if r:
                    r.body += e.data
                if self.auto_window and e.flow_controlled_length:
                    self.conn.acknowledge_received_data(e.flow_controlled_length, sid)
            elif isinstance(e, h2.events.StreamEnded) and r:
                r.ended = True
            elif isinstance(e, h2.events.StreamReset) and r:
                r.reset_code = int(e.error_code)
            elif isinstance(e, h2.events.ConnectionTerminated):
                self.goaway = ConnectionEnded(int(e.error_code), e.last_stream_id)
                if e.error_code != 0:
                    self.closed = True
