#include "gateway/tracing/request_trace.h"

#include <cstring>
#include <ctime>

#include "gateway/exchange.h"
#include "gateway/router.h"
#include "gateway/tracing/exporter.h"
#include "gateway/tracing/otlp.h"
#include "gateway/tracing/tracing_config.h"

namespace gw::tracing {
namespace {

constexpr std::string_view kTraceParent = "traceparent";
constexpr std::string_view kTraceState = "tracestate";

// Ids are never all zero: the spec makes such an id invalid, and a collector drops it.
void randomId(WorkerServices& worker, uint8_t* out, size_t n) {
  uint64_t r[2];
  do {
    worker.random128(r);
  } while (r[0] == 0 || (n == 16 && r[1] == 0));
  std::memcpy(out, r, n);
}

uint64_t unixNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

}  // namespace

void RequestTrace::begin(const TracingConfig& config, HeaderList& headers, WorkerServices& worker,
                         StringArena& arena, std::string_view proto, std::string_view host_name) {
  std::string_view received, state;
  size_t parents = 0;
  bool has_state = false;
  for (const Header& h : headers) {
    if (equalsIgnoreCase(h.name, kTraceParent)) {
      received = h.value;
      ++parents;
    } else if (equalsIgnoreCase(h.name, kTraceState)) {
      if (!has_state) state = h.value;
      has_state = true;
    }
  }
  // Two traceparents cannot both be the caller's: neither is trusted.
  std::optional<TraceParent> parent;
  if (parents == 1) parent = parseTraceParent(received);
  active = true;
  has_parent = parent.has_value();
  if (parent) {
    std::memcpy(trace_id, parent->trace_id, 16);
    std::memcpy(parent_id, parent->parent_id, 8);
  } else {
    randomId(worker, trace_id, 16);
  }
  randomId(worker, span_id, 8);
  sampled = config.sampler.sample(trace_id, parent ? &parent->flags : nullptr);
  flags = uint8_t(((parent ? parent->flags : 0) & ~kSampledFlag) | (sampled ? kSampledFlag : 0));
  formatTraceParent(trace_id, span_id, flags, traceparent);

  if (parents > 0) headers.remove(kTraceParent);
  if (!parent && has_state) headers.remove(kTraceState);
  headers.addRef("traceparent", {traceparent, kTraceParentSize});

  if (!sampled) return;
  trace_state =
      parent && has_state ? arena.copy(state.substr(0, kMaxAttributeBytes)) : std::string_view();
  user_agent = arena.copy(headers.get("user-agent").substr(0, kMaxAttributeBytes));
  host = arena.copy(stripPort(host_name).substr(0, kMaxAttributeBytes));
  protocol = proto;
}

void exportServerSpan(const Exchange& ex) {
  const RequestTrace& t = ex.trace;
  const RequestContext& ctx = ex.ctx;
  std::string_view route = ctx.route ? std::string_view(ctx.route->name) : std::string_view();
  std::string_view version = t.protocol;
  if (version.substr(0, 5) == "HTTP/") version.remove_prefix(5);

  Attribute attrs[12];
  size_t n = 0;
  auto text = [&](std::string_view key, std::string_view value) {
    if (!value.empty()) attrs[n++] = {key, value};
  };
  text("http.request.method", ctx.method);
  text("url.path", ctx.path);
  text("url.scheme", ctx.tls || ctx.forwarded_https ? "https" : "http");
  text("http.route", route);
  if (ex.status > 0) attrs[n++] = {"http.response.status_code", {}, ex.status, true};
  text("server.address", t.host);
  text("client.address", ctx.client_ip);
  text("user_agent.original", t.user_agent);
  text("network.protocol.version", version);
  text("gateway.request_id", ctx.request_id);
  text("gateway.upstream", ex.upstream_name);
  text("gateway.error_code", ex.error_code);

  // "{method} {route}" (the semantic conventions' name, with the route's configured name
  // as its template), or the method alone for a request no route took.
  thread_local std::string name, span;
  name.assign(ctx.method);
  if (!route.empty()) name.append(" ").append(route);

  SpanRecord r;
  uint64_t now_mono = monotonicNs();
  r.end_unix_ns = unixNs();
  auto unixAt = [&](uint64_t mono) { return r.end_unix_ns - (now_mono - mono); };
  // The upstream's part of the timeline, as two events rather than a child span: the
  // upstream's traceparent names the server span (SPEC §10), and events cost no ids.
  // With retries, the first request sent and the answer that was used.
  Attribute endpoint[] = {{"gateway.upstream.endpoint", ex.upstream_endpoint}};
  SpanEvent events[2];
  size_t event_count = 0;
  if (ex.upstream_start_ns) {
    events[event_count++] = {"upstream request", unixAt(ex.upstream_start_ns), nullptr, 0};
    if (ex.upstream_end_ns > ex.upstream_start_ns) {
      // Also set when the attempt failed (the gateway then answers with its error_code).
      std::string_view name = ex.error_code.empty() ? "upstream response" : "upstream failure";
      events[event_count++] = {name, unixAt(ex.upstream_end_ns), endpoint,
                               ex.upstream_endpoint.empty() ? 0u : 1u};
    }
  }
  r.trace_id = t.trace_id;
  r.span_id = t.span_id;
  r.parent_span_id = t.has_parent ? t.parent_id : nullptr;
  r.trace_flags = t.flags;
  r.trace_state = t.trace_state;
  r.name = name;
  r.start_unix_ns = unixAt(ex.start_ns);
  r.events = events;
  r.event_count = event_count;
  r.attributes = attrs;
  r.attribute_count = n;
  // OpenTelemetry's HTTP server rule (5xx), and the gateway's own refusals: a 401 or 429
  // it answered is an outcome an operator looks for in traces.
  r.error = !ex.error_code.empty() || ex.status >= 500;
  r.status_message = ex.error_code;
  span.clear();
  appendSpanField(span, r);
  Exporter::submit(span);
}

}  // namespace gw::tracing
