// The per-request costs of tracing on a worker: reading a traceparent, and encoding a
// sampled request's server span (what Exchange::finish does before queueing it).
#include <benchmark/benchmark.h>

#include <cstring>
#include <string>

#include "gateway/tracing/otlp.h"
#include "gateway/tracing/trace_context.h"

namespace gw::tracing {
namespace {

void BM_ParseTraceParent(benchmark::State& state) {
  std::string value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  for (auto _ : state) benchmark::DoNotOptimize(parseTraceParent(value));
}
BENCHMARK(BM_ParseTraceParent);

void BM_FormatTraceParent(benchmark::State& state) {
  uint8_t trace[16], span[8];
  std::memset(trace, 0xab, 16);
  std::memset(span, 0xcd, 8);
  char out[kTraceParentSize];
  for (auto _ : state) {
    formatTraceParent(trace, span, 1, out);
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_FormatTraceParent);

// The span of a proxied GET as request_trace.cc builds it: 11 attributes, 2 events.
void BM_EncodeServerSpan(benchmark::State& state) {
  uint8_t trace[16], span[8], parent[8];
  std::memset(trace, 1, 16);
  std::memset(span, 2, 8);
  std::memset(parent, 3, 8);
  Attribute attrs[] = {{"http.request.method", "GET"},
                       {"url.path", "/api/v1/orders/12345"},
                       {"url.scheme", "https"},
                       {"http.route", "api"},
                       {"http.response.status_code", {}, 200, true},
                       {"server.address", "shop.example.com"},
                       {"client.address", "203.0.113.7"},
                       {"user_agent.original", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"},
                       {"network.protocol.version", "1.1"},
                       {"gateway.request_id", "01a25241-564d-79f3-94e0-467761d41e26"},
                       {"gateway.upstream", "app"}};
  Attribute endpoint[] = {{"gateway.upstream.endpoint", "10.0.0.12:8080"}};
  SpanEvent events[] = {{"upstream request", 1, nullptr, 0},
                        {"upstream response", 2, endpoint, 1}};
  SpanRecord r;
  r.trace_id = trace;
  r.span_id = span;
  r.parent_span_id = parent;
  r.trace_flags = 1;
  r.name = "GET api";
  r.start_unix_ns = 1;
  r.end_unix_ns = 3;
  r.attributes = attrs;
  r.attribute_count = std::size(attrs);
  r.events = events;
  r.event_count = 2;
  std::string out;
  for (auto _ : state) {
    out.clear();
    appendSpanField(out, r);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["bytes"] = double(out.size());
}
BENCHMARK(BM_EncodeServerSpan);

}  // namespace
}  // namespace gw::tracing
