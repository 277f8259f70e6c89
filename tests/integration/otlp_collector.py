"""A collector stand-in for the tracing tests: an OTLP/HTTP receiver (http.server) that
decodes every export body with python3-protobuf, from message definitions written here and
compiled by protoc: an independent decoder for the gateway's hand-written encoder."""

import http.server
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness import wait_until

# opentelemetry-proto v1 (common, resource, trace, collector/trace), the messages and
# fields the gateway writes and a few it does not (events, links), with their numbers.
OTLP_PROTO = """
syntax = "proto3";
package otlptest;

message AnyValue {
  oneof value {
    string string_value = 1;
    bool bool_value = 2;
    int64 int_value = 3;
    double double_value = 4;
    ArrayValue array_value = 5;
    KeyValueList kvlist_value = 6;
    bytes bytes_value = 7;
  }
}
message ArrayValue { repeated AnyValue values = 1; }
message KeyValueList { repeated KeyValue values = 1; }
message KeyValue { string key = 1; AnyValue value = 2; }
message InstrumentationScope {
  string name = 1;
  string version = 2;
  repeated KeyValue attributes = 3;
  uint32 dropped_attributes_count = 4;
}
message Resource { repeated KeyValue attributes = 1; uint32 dropped_attributes_count = 2; }
message Status { reserved 1; string message = 2; StatusCode code = 3;
  enum StatusCode { STATUS_CODE_UNSET = 0; STATUS_CODE_OK = 1; STATUS_CODE_ERROR = 2; } }
message Span {
  bytes trace_id = 1;
  bytes span_id = 2;
  string trace_state = 3;
  bytes parent_span_id = 4;
  fixed32 flags = 16;
  string name = 5;
  enum SpanKind { SPAN_KIND_UNSPECIFIED = 0; SPAN_KIND_INTERNAL = 1; SPAN_KIND_SERVER = 2;
    SPAN_KIND_CLIENT = 3; SPAN_KIND_PRODUCER = 4; SPAN_KIND_CONSUMER = 5; }
  SpanKind kind = 6;
  fixed64 start_time_unix_nano = 7;
  fixed64 end_time_unix_nano = 8;
  repeated KeyValue attributes = 9;
  uint32 dropped_attributes_count = 10;
  message Event { fixed64 time_unix_nano = 1; string name = 2; repeated KeyValue attributes = 3;
    uint32 dropped_attributes_count = 4; }
  repeated Event events = 11;
  uint32 dropped_events_count = 12;
  message Link { bytes trace_id = 1; bytes span_id = 2; string trace_state = 3;
    repeated KeyValue attributes = 4; uint32 dropped_attributes_count = 5; fixed32 flags = 6; }
  repeated Link links = 13;
  uint32 dropped_links_count = 14;
  Status status = 15;
}
message ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2; string schema_url = 3; }
message ResourceSpans { reserved 1000; Resource resource = 1; repeated ScopeSpans scope_spans = 2;
  string schema_url = 3; }
message ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
"""



def compile_otlp(directory: Path):
    """The module protoc generates from OTLP_PROTO, in `directory`."""
    (directory / "otlptest.proto").write_text(OTLP_PROTO)
    subprocess.run(["protoc", f"--proto_path={directory}", f"--python_out={directory}",
                    "otlptest.proto"], check=True, capture_output=True, timeout=60)
    sys.path.insert(0, str(directory))
    try:
        import otlptest_pb2
    finally:
        sys.path.remove(str(directory))
    return otlptest_pb2


class Collector:
    """POST /v1/traces: each body decoded strictly (ParseFromString, every field known)
    and kept with its arrival time. `answers`: (status, headers) for the next requests,
    then 200; `delay`: seconds before answering. HTTP/1.1 connections are kept (their
    number is `connections`) unless `closes` says otherwise for the next requests, one
    entry each: None (kept), "close" (answered, then closed without a word), "header"
    (answered with `Connection: close`), "drop" (closed without an answer, not kept in
    `posts`)."""

    def __init__(self, otlp, answers=(), delay=0.0, tls=None, closes=()):
        self.otlp = otlp
        self.answers = list(answers)
        self.delay = delay
        self.closes = list(closes)
        self.posts = []  # (time, path, headers, ExportTraceServiceRequest)
        self.connections = 0
        self.lock = threading.Lock()
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with collector.lock:
                    collector.connections += 1

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = collector.otlp.ExportTraceServiceRequest()
                request.ParseFromString(body)
                with collector.lock:
                    close = collector.closes.pop(0) if collector.closes else None
                    if close == "drop":
                        self.close_connection = True
                        return
                    collector.posts.append((time.monotonic(), self.path, dict(self.headers), request))
                    status, headers = collector.answers.pop(0) if collector.answers else (200, {})
                if collector.delay:
                    time.sleep(collector.delay)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                if close == "header":
                    self.send_header("Connection", "close")
                self.end_headers()
                if close:
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if tls:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self):
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def spans(self):
        with self.lock:
            return [span for _, _, _, req in self.posts for rs in req.resource_spans
                    for ss in rs.scope_spans for span in ss.spans]

    def span_of(self, trace_id_hex, timeout=10.0):
        found = []

        def check():
            found[:] = [s for s in self.spans() if s.trace_id.hex() == trace_id_hex]
            return found

        wait_until(check, timeout=timeout, what=f"a span of trace {trace_id_hex}")
        assert len(found) == 1, found
        return found[0]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
