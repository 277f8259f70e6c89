"""A controllable HTTP/2 upstream (h2c, prior knowledge) for the integration tests, on
python3-h2 with validation off, so that it can answer what a hostile server would.

One thread per connection; raw frames (hyperframe) where python-h2 would refuse or would
change its own state (a GOAWAY that lets the streams below it go on, garbage). It counts
the connections it accepts, the most streams open at once on one connection, and records
every stream: its request head, body, trailers and how it ended (the RST_STREAM code the
gateway sent, if any).

What a stream gets is chosen by query parameters of its :path (they survive routing), as
the HTTP/1.1 upstream's (upstream.py):

  (none)            200, a JSON echo ({"path", "method", "body_len", "conn", "stream"})
                    after the request's END_STREAM
  size=N            N bytes of b"x" instead of the echo, as the stream window allows
  cl=1              with a content-length (cl=N: content-length N, whatever the body)
  trailers=1        trailers after the body: grpc-status: 0, x-trailer: yes
  trailer=N:V       one more trailer field (repeatable, not validated)
  hdr=N:V           one more response field (repeatable, not validated)
  status=TEXT       this :status, as it is (e.g. 050)
  head_bytes=N      about N bytes of response fields (x-pad-I: 1000 bytes each)
  interim=N         N interim 103 heads first, each with interim_fields (default 1) fields
                    of interim_bytes (default 1000) bytes
  delay=MS          the answer waits
  never=1           never answered
  early=1           answered (and ended) when the request head arrives
  rst=CODE          RST_STREAM(CODE) when the request head arrives
  rst_after=CODE    the head and part of the body (size, default 1000), then (after
                    rst_delay=MS) RST_STREAM(CODE)
  goaway=below|above  GOAWAY(NO_ERROR) when the request head arrives, with last_stream_id
                    below this stream (it was not processed) or at it (it is answered); the
                    connection closes when its remaining streams are done
  refuse_after_body=1  RST_STREAM(REFUSED_STREAM) once the first body bytes arrived
  goaway_after_body=1  GOAWAY(last_stream_id=0) once the first body bytes arrived
  close=1           the TCP connection closes when the request head arrives
  garbage=1         bytes that are no HTTP/2 frame, when the request head arrives; the
                    connection stays open
  no_ack=1          the stream's received DATA is never acknowledged (no WINDOW_UPDATE)
  goaway_keep=1     after a GOAWAY the server does not close the connection itself
  once=1            misbehave only the first time this :path arrives (later: the echo,
                    size, cl and trailers only), e.g. so that a retry succeeds

Per-instance settings: `max_concurrent_streams`, `initial_window_size` (sent in the
server's SETTINGS).
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame


@dataclass
class H2Request:
    conn: int
    stream: int
    headers: list
    body: bytearray = field(default_factory=bytearray)
    trailers: list = field(default_factory=list)
    ended: bool = False
    reset_code: int | None = None  # RST_STREAM from the gateway
    answered: bool = False
    tame: bool = False  # once=1 and this :path was seen before: no misbehaviour

    def header(self, name: str):
        for n, v in self.headers:
            if n == name:
                return v
        return None

    @property
    def path(self) -> str:
        return urllib.parse.urlsplit(self.header(":path") or "").path

    @property
    def query(self) -> dict:
        return dict(self._params())

    def query_all(self, name: str) -> list:
        return [v for n, v in self._params() if n == name]

    def _params(self) -> list:
        params = urllib.parse.parse_qsl(urllib.parse.urlsplit(self.header(":path") or "").query)
        if self.tame:
            params = [(n, v) for n, v in params if n in TAME_PARAMS]
        return params


TAME_PARAMS = ("size", "cl", "trailers", "trailer")


class _Conn:
    """One accepted connection and its python-h2 state machine; only its thread touches it."""

    def __init__(self, server: "H2Upstream", sock: socket.socket, index: int):
        self.server = server
        self.sock = sock
        self.index = index
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8",
                                        validate_outbound_headers=False,
                                        normalize_outbound_headers=False,
                                        validate_inbound_headers=False)
        self.h2 = h2.connection.H2Connection(config=cfg)
        self.streams: dict[int, H2Request] = {}
        self.outgoing: dict[int, list] = {}   # stream -> [remaining bytes, trailers or None]
        self.timers: list = []                # (due, fn)
        self.goaway_sent = False
        self.keep_after_goaway = False
        self.closed = False

    # -- writing ------------------------------------------------------------------------

    def flush(self):
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def raw(self, data: bytes):
        self.flush()
        self.sock.sendall(data)

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def goaway(self, last_stream_id: int, keep: bool = False):
        self.goaway_sent = True
        self.keep_after_goaway = keep
        self.raw(GoAwayFrame(0, last_stream_id=last_stream_id, error_code=0).serialize())

    # -- answers ------------------------------------------------------------------------

    def answer(self, req: H2Request, early: bool = False):
        if req.answered or req.reset_code is not None:
            return
        req.answered = True
        q = req.query
        sid = req.stream
        if "interim" in q:
            # Fields that fit the HPACK table are sent as indexes after the first head: a
            # few bytes on the wire each, decoded in full by the gateway.
            fields = [(f"x-interim-{i}", "i" * int(q.get("interim_bytes", "1000")))
                      for i in range(int(q.get("interim_fields", "1")))]
            for i in range(int(q["interim"])):
                self.h2.send_headers(sid, [(":status", "103"), *fields])
                if i % 100 == 99:
                    self.flush()
            self.flush()
        if "size" in q:
            body = b"x" * int(q["size"])
        else:
            body = json.dumps({"path": req.path, "method": req.header(":method"),
                               "body_len": len(req.body), "conn": self.index,
                               "stream": sid, "early": early}).encode()
        headers = [(":status", q.get("status", "200")), ("content-type", "application/json")]
        if q.get("cl") == "1":
            headers.append(("content-length", str(len(body))))
        elif "cl" in q:
            headers.append(("content-length", q["cl"]))  # a lie
        for i in range(int(q.get("head_bytes", "0")) // 1000):
            headers.append((f"x-pad-{i}", "p" * 1000))
        for h in req.query_all("hdr"):
            n, _, v = h.partition(":")
            headers.append((n, v))
        trailers = None
        if q.get("trailers") == "1" or req.query_all("trailer"):
            trailers = [("grpc-status", "0"), ("x-trailer", "yes")] if q.get("trailers") == "1" else []
            for t in req.query_all("trailer"):
                n, _, v = t.partition(":")
                trailers.append((n, v))
        if "rst_after" in q:
            self.h2.send_headers(sid, headers)
            self.h2.send_data(sid, b"y" * int(q.get("size", "1000")))
            self.flush()
            code = int(q["rst_after"])

            def reset():
                self.h2.reset_stream(sid, code)
                self.flush()
            self.timers.append((time.monotonic() + int(q.get("rst_delay", "0")) / 1000, reset))
            return
        self.h2.send_headers(sid, headers, end_stream=not body and not trailers)
        if body or trailers:
            self.outgoing[sid] = [memoryview(body), trailers]
        self.pump_out()

    def pump_out(self):
        for sid in list(self.outgoing):
            rest, trailers = self.outgoing[sid]
            try:
                while rest:
                    window = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
                    if window <= 0:
                        break
                    piece, rest = rest[:window], rest[window:]
                    self.h2.send_data(sid, bytes(piece), end_stream=not rest and not trailers)
                    self.outgoing[sid][0] = rest
                    self.flush()
                if not rest:
                    if trailers:
                        self.h2.send_headers(sid, trailers, end_stream=True)
                    del self.outgoing[sid]
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
                self.outgoing.pop(sid, None)
        self.flush()
        self.maybe_finish()

    def maybe_finish(self):
        # After our GOAWAY, the connection ends once the streams it let go on are answered.
        if self.goaway_sent and not self.keep_after_goaway and not self.outgoing and all(
                r.answered or r.reset_code is not None or r.stream > self.goaway_last
                for r in self.streams.values()):
            self.close()

    # -- events -------------------------------------------------------------------------

    def on_request(self, sid: int, headers: list, ended: bool):
        req = H2Request(self.index, sid, list(headers), ended=ended)
        self.streams[sid] = req
        with self.server.lock:
            if req.query.get("once") == "1":
                req.tame = req.header(":path") in self.server.seen
                self.server.seen.add(req.header(":path"))
            self.server.requests.append(req)
            self.server.max_open = max(self.server.max_open, self.h2.open_inbound_streams)
        q = req.query
        if q.get("close") == "1":
            self.close()
            return
        if q.get("garbage") == "1":
            self.raw(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            return
        if "rst" in q:
            self.h2.reset_stream(sid, int(q["rst"]))
            self.flush()
            return
        if "goaway" in q:
            self.goaway_last = sid - 2 if q["goaway"] == "below" else sid
            self.goaway(max(self.goaway_last, 0), keep=q.get("goaway_keep") == "1")
            if q["goaway"] == "below":
                return
        if q.get("early") == "1":
            self.answer(req, early=True)
            return
        if ended:
            self.on_ended(req)

    def on_ended(self, req: H2Request):
        q = req.query
        if q.get("never") == "1" or self.server.hang:
            return
        if "delay" in q:
            self.timers.append((time.monotonic() + int(q["delay"]) / 1000, lambda: self.answer(req)))
            return
        self.answer(req)

    def on_data(self, sid: int, data: bytes, flow_len: int):
        req = self.streams.get(sid)
        if req is None:
            return
        first = not req.body
        req.body += data
        q = req.query
        if q.get("no_ack") != "1" and flow_len:
            self.h2.acknowledge_received_data(flow_len, sid)
        if first and data and q.get("refuse_after_body") == "1":
            self.h2.reset_stream(sid, 0x7)
        if first and data and q.get("goaway_after_body") == "1":
            self.goaway_last = 0
            self.goaway(0)

    def run(self):
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values=self.server.settings)
        self.h2.initiate_connection()
        self.goaway_last = 1 << 31
        try:
            self.flush()
            while not self.closed and not self.server.stopping.is_set():
                now = time.monotonic()
                for t in [t for t in self.timers if t[0] <= now]:
                    self.timers.remove(t)
                    try:
                        t[1]()
                    except h2.exceptions.StreamClosedError:
                        pass  # the gateway reset it meanwhile
                if self.closed:
                    break
                r, _, _ = select.select([self.sock], [], [], 0.02)
                if not r:
                    continue
                data = self.sock.recv(1 << 16)
                if not data:
                    break
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError as e:
                    self.server.errors.append(f"conn {self.index}: {type(e).__name__}: {e}")
                    self.flush()
                    break
                for e in events:
                    self.handle(e)
                    if self.closed:
                        break
                if not self.closed:
                    self.pump_out()
        except (OSError, ValueError):  # closed by stop() from another thread
            pass
        finally:
            self.close()

    def handle(self, e):
        if isinstance(e, h2.events.RequestReceived):
            self.on_request(e.stream_id, e.headers, e.stream_ended is not None)
        elif isinstance(e, h2.events.DataReceived):
            self.on_data(e.stream_id, e.data, e.flow_controlled_length)
        elif isinstance(e, h2.events.TrailersReceived):
            req = self.streams.get(e.stream_id)
            if req:
                req.trailers = list(e.headers)
        elif isinstance(e, h2.events.StreamEnded):
            req = self.streams.get(e.stream_id)
            if req and not req.ended:
                req.ended = True
                self.on_ended(req)
        elif isinstance(e, h2.events.StreamReset):
            req = self.streams.get(e.stream_id)
            if req:
                req.reset_code = int(e.error_code)
            self.outgoing.pop(e.stream_id, None)


class H2Upstream:
    def __init__(self, max_concurrent_streams: int | None = None,
                 initial_window_size: int | None = None):
        self.settings = {}
        if max_concurrent_streams is not None:
            self.settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = max_concurrent_streams
        if initial_window_size is not None:
            self.settings[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] = initial_window_size
        self.hang = False
        self.lock = threading.Lock()
        self.requests: list[H2Request] = []
        self.errors: list[str] = []
        self.accepted = 0
        self.max_open = 0
        self.seen: set = set()
        self.stopping = threading.Event()
        self._conns: list[_Conn] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name="h2-upstream")
        self._thread.start()

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                s, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                c = _Conn(self, s, self.accepted)
                self.accepted += 1
                self._conns.append(c)
            threading.Thread(target=c.run, daemon=True, name=f"h2-upstream-{c.index}").start()

    def open_connections(self) -> int:
        with self.lock:
            return sum(1 for c in self._conns if not c.closed)

    def snapshot(self) -> list[H2Request]:
        with self.lock:
            return list(self.requests)

    def wait_requests(self, n: int, timeout: float = 10.0, pred=None) -> list[H2Request]:
        deadline = time.monotonic() + timeout
        while True:
            reqs = [r for r in self.snapshot() if pred is None or pred(r)]
            if len(reqs) >= n:
                return reqs
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(reqs)} upstream streams after {timeout}s, expected {n}")
            time.sleep(0.01)

    def stop(self):
        self.stopping.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            c.close()
