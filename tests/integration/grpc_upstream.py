#!/usr/bin/python3
"""A gRPC upstream for the integration tests: grpcio's server in a process of its own, so
that a test can kill it, stop it or restart it on its port like any real service.
Normally started through grpc_support.GrpcUpstream; runnable by hand too:

    /usr/bin/python3 tests/integration/grpc_upstream.py --port 50051 [--tls CERT KEY]
        [--health SERVICE=STATUS ...] [--health-file FILE] [--log FILE]
        [--max-concurrent-streams N] [--workers N] [--generated DIR]

It prints one line, `{"port": N}`, once it listens (port 0 takes a free one), and stops
on SIGTERM or SIGINT. Plaintext HTTP/2 (h2c, prior knowledge) unless `--tls` gives a
certificate and key (then ALPN h2).

Services (tests/integration/protos/): echo.Echo with Unary, ServerStream, ClientStream and
Bidi, and grpc.health.v1.Health/Check.

Request metadata that steers an Echo call (all optional):

    x-delay-ms: N          wait N ms before the first answer (or the abort); a call the
                           client cancels or whose deadline passes stops waiting
    x-abort-code: C        end the call with status C: a number (14) or a name
                           (UNAVAILABLE); 0/OK is refused with INVALID_ARGUMENT
    x-abort-message: M     its grpc-message (default "aborted by request")
    x-abort-after: N       abort only after N messages were sent (ServerStream) or
                           received (ClientStream, Bidi); without it, before any message
    x-echo-metadata: any   send the request's metadata back as initial metadata, under
                           the same names (grpc-*, pseudo-headers, user-agent,
                           content-type and te left out; -bin values as bytes)
    x-add-trailer: k=v     one more trailing metadata entry (repeatable)
    x-interval-ms: N       ServerStream: pause between two messages

Every Echo response carries, as initial metadata, `x-peer` (context.peer(), e.g.
`ipv4:127.0.0.1:40512`: one value per TCP connection) and, as trailing metadata,
`x-trailer: ok`, `x-trailer-bin: b"\\x00\\x01\\xfe\\xff"`, `x-peer`, the `x-add-trailer`
entries and, for the streaming kinds, `x-count` / `x-bytes` (messages and payload bytes
received). An aborted call that sent nothing yet is trailers-only: everything goes in the
trailers.

Echo answers: Unary returns the message with count=1, bytes=len(payload); ServerStream
sends StreamReq.count messages whose payload is StreamReq.size bytes of the message's
index (mod 256) and text its index; ClientStream returns count and bytes of the whole
stream; Bidi answers each message at once with its payload and text, and the running
count and bytes.

Health: Check(service) answers the status the health table gives that name: SERVING,
NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN; `hang` never answers (until the caller gives up);
`error:CODE` ends the call with that gRPC status; a name not in the table gets NOT_FOUND
(as the standard health service does). The table is `--health` entries (default
`""=SERVING`), or the JSON object in `--health-file`, read again at every check (a
file that does not parse keeps the last good table), so a test changes it while the
server runs.

`--log FILE`: one JSON line per call as it starts: {"time": unix seconds, "method":
"/echo.Echo/Unary", "peer": ..., "metadata": [[name, value], ...] (-bin values hex),
"service": the health check's service name, or null}.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grpc  # noqa: E402

import grpc_support  # noqa: E402

NOT_ECHOED = {"user-agent", "content-type", "te", "host", "connection", "transfer-encoding",
              "upgrade", "keep-alive", "proxy-connection"}
FIXED_TRAILERS = [("x-trailer", "ok"), ("x-trailer-bin", b"\x00\x01\xfe\xff")]


def status_code(text: str) -> grpc.StatusCode | None:
    """grpc.StatusCode from a number or a name; None for OK or anything unknown."""
    text = text.strip()
    for code in grpc.StatusCode:
        if code is grpc.StatusCode.OK:
            continue
        if text.upper() == code.name or text == str(code.value[0]):
            return code
    return None


class CallLog:
    def __init__(self, path: str | None):
        self.file = open(path, "a", encoding="utf-8") if path else None
        self.lock = threading.Lock()

    def record(self, method: str, context, service: str | None = None) -> None:
        if not self.file:
            return
        md = [[k, v.hex() if isinstance(v, bytes) else v] for k, v in context.invocation_metadata()]
        line = json.dumps({"time": time.time(), "method": method, "peer": context.peer(),
                           "metadata": md, "service": service})
        with self.lock:
            self.file.write(line + "\n")
            self.file.flush()


def wait_or_cancelled(context, seconds: float) -> bool:
    """Sleeps `seconds` unless the call ends first (cancelled, deadline passed); False
    when it ended."""
    ended = threading.Event()
    if not context.add_callback(ended.set):
        return False
    return not ended.wait(seconds)


class Call:
    """The metadata-driven behaviour shared by the four Echo methods."""

    def __init__(self, context, log: CallLog, method: str):
        self.context = context
        log.record(method, context)
        self.md: dict[str, list] = {}
        for k, v in context.invocation_metadata():
            self.md.setdefault(k, []).append(v)
        self.count = 0
        self.bytes = 0
        self.started = False
        self.abort_after = self.int_value("x-abort-after")

    def value(self, name: str):
        values = self.md.get(name)
        return values[-1] if values else None

    def int_value(self, name: str) -> int | None:
        v = self.value(name)
        if v is None:
            return None
        try:
            return max(0, int(v))
        except ValueError:
            self.context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{name} is not a number: {v!r}")

    def peer_md(self):
        return [("x-peer", self.context.peer())]

    def begin(self) -> None:
        """Waits x-delay-ms, aborts now when asked without x-abort-after, else sends the
        initial metadata."""
        delay = self.int_value("x-delay-ms")
        if delay and not wait_or_cancelled(self.context, delay / 1000):
            self.context.abort(grpc.StatusCode.CANCELLED, "the call ended during x-delay-ms")
        if self.value("x-abort-code") is not None and self.abort_after is None:
            self.abort()
        initial = self.peer_md()
        if self.value("x-echo-metadata") is not None:
            initial += [(k, v) for k, v in self.context.invocation_metadata()
                        if not k.startswith(("grpc-", ":")) and k not in NOT_ECHOED]
        self.context.send_initial_metadata(initial)
        self.started = True

    def trailers(self, counts: bool):
        md = FIXED_TRAILERS + self.peer_md()
        for entry in self.md.get("x-add-trailer", []):
            name, sep, value = entry.partition("=")
            if not sep or not name:
                self.context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"x-add-trailer wants name=value, got {entry!r}")
            md.append((name.strip().lower(), value))
        if counts:
            md += [("x-count", str(self.count)), ("x-bytes", str(self.bytes))]
        return md

    def abort(self, counts: bool = False) -> None:
        code = status_code(self.value("x-abort-code"))
        if code is None:
            self.context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                               f"x-abort-code: no such non-OK status {self.value('x-abort-code')!r}")
        self.context.set_trailing_metadata(self.trailers(counts))
        self.context.abort(code, self.value("x-abort-message") or "aborted by request")

    def received(self, msg) -> None:
        self.count += 1
        self.bytes += len(msg.payload)

    def maybe_abort_after(self, n: int, counts: bool) -> None:
        if self.abort_after is not None and n >= self.abort_after and self.value("x-abort-code"):
            self.abort(counts)

    def end(self, counts: bool) -> None:
        self.context.set_trailing_metadata(self.trailers(counts))


class Echo:
    def __init__(self, pb, log: CallLog):
        self.pb = pb
        self.log = log

    def Unary(self, request, context):
        call = Call(context, self.log, "/echo.Echo/Unary")
        call.begin()
        call.received(request)
        call.end(counts=False)
        return self.pb.Msg(payload=request.payload, text=request.text, count=1,
                           bytes=len(request.payload))

    def ServerStream(self, request, context):
        call = Call(context, self.log, "/echo.Echo/ServerStream")
        call.begin()
        interval = call.int_value("x-interval-ms") or 0
        for i in range(max(0, request.count)):
            call.maybe_abort_after(i, counts=False)
            if i and interval and not wait_or_cancelled(context, interval / 1000):
                return
            yield self.pb.Msg(payload=bytes([i % 256]) * max(0, request.size), text=str(i))
        call.maybe_abort_after(request.count, counts=False)
        call.end(counts=False)

    def ClientStream(self, request_iterator, context):
        call = Call(context, self.log, "/echo.Echo/ClientStream")
        call.begin()
        call.maybe_abort_after(0, counts=True)
        for msg in request_iterator:
            call.received(msg)
            call.maybe_abort_after(call.count, counts=True)
        call.end(counts=True)
        return self.pb.Msg(count=call.count, bytes=call.bytes)

    def Bidi(self, request_iterator, context):
        call = Call(context, self.log, "/echo.Echo/Bidi")
        call.begin()
        call.maybe_abort_after(0, counts=True)
        for msg in request_iterator:
            call.received(msg)
            yield self.pb.Msg(payload=msg.payload, text=msg.text, count=call.count, bytes=call.bytes)
            call.maybe_abort_after(call.count, counts=True)
        call.end(counts=True)


class Health:
    STATUSES = ("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")

    def __init__(self, pb, log: CallLog, table: dict, path: str | None):
        self.pb = pb
        self.log = log
        self.table = table
        self.path = path

    def current(self) -> dict:
        if self.path:
            try:
                table = json.loads(Path(self.path).read_text())
                if isinstance(table, dict):
                    self.table = table
            except (OSError, ValueError):
                pass  # being rewritten, or gone: the last good table stands
        return self.table

    def Check(self, request, context):
        self.log.record("/grpc.health.v1.Health/Check", context, request.service)
        status = self.current().get(request.service)
        if status is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        status = str(status)
        if status == "hang":
            wait_or_cancelled(context, 3600)
            context.abort(grpc.StatusCode.CANCELLED, "hang ended")
        if status.startswith("error:"):
            code = status_code(status[len("error:"):]) or grpc.StatusCode.UNKNOWN
            context.abort(code, f"health status {status}")
        if status not in self.STATUSES:
            context.abort(grpc.StatusCode.INTERNAL, f"bad status {status!r} in the health table")
        return self.pb.HealthCheckResponse(status=self.STATUSES.index(status))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--health", action="append", default=[], metavar="SERVICE=STATUS")
    p.add_argument("--health-file")
    p.add_argument("--log")
    p.add_argument("--max-concurrent-streams", type=int)
    p.add_argument("--workers", type=int, default=256,
                   help="handler threads: each open call holds one")
    p.add_argument("--generated", help="directory of the compiled protos (else compiled here)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    pb = grpc_support.protos(Path(args.generated) if args.generated else None)
    table = {}
    for entry in args.health or ["=SERVING"]:
        service, sep, status = entry.partition("=")
        if not sep:
            print(f"--health wants SERVICE=STATUS, got {entry!r}", file=sys.stderr)
            return 2
        table[service] = status
    log = CallLog(args.log)
    options = [("grpc.so_reuseport", 0),  # a second server must not share the port
               ("grpc.max_receive_message_length", 64 << 20),
               ("grpc.max_send_message_length", 64 << 20)]
    if args.max_concurrent_streams:
        options.append(("grpc.max_concurrent_streams", args.max_concurrent_streams))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers), options=options)
    pb.echo_grpc.add_EchoServicer_to_server(Echo(pb.echo, log), server)
    pb.health_grpc.add_HealthServicer_to_server(Health(pb.health, log, table, args.health_file),
                                                server)
    address = f"{args.host}:{args.port}"
    if args.tls:
        creds = grpc.ssl_server_credentials([(Path(args.tls[1]).read_bytes(),
                                              Path(args.tls[0]).read_bytes())])
        port = server.add_secure_port(address, creds)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        print(f"cannot listen on {address}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    print(json.dumps({"port": port}), flush=True)
    stop.wait()
    server.stop(grace=0).wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
