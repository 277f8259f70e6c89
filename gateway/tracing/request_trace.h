// One request's part in a trace: the trace context it continues or starts, the
// traceparent its upstream receives, and the server span exported when it is sampled.
//
// Lives in the pooled Exchange (no allocation): begin() runs for every request of a
// configuration with `tracing` and costs a parse, two random draws and a header; all the
// rest (copies for the span, encoding, queueing) happens for sampled requests only.
#pragma once

#include <cstdint>
#include <string_view>

#include "gateway/tracing/trace_context.h"

namespace gw {
class Exchange;
class HeaderList;
class StringArena;
class WorkerServices;
}  // namespace gw

namespace gw::tracing {

struct TracingConfig;

struct RequestTrace {
  bool active = false;  // tracing is configured: the fields below are set
  bool sampled = false;
  bool has_parent = false;  // continues a caller's valid traceparent
  uint8_t flags = 0;
  uint8_t trace_id[16];
  uint8_t span_id[8];
  uint8_t parent_id[8];
  char traceparent[kTraceParentSize];  // the gateway's span, as sent upstream
  // Sampled requests only, arena copies (the head's bytes may move once the body flows).
  std::string_view trace_state;
  std::string_view user_agent;
  std::string_view host;
  std::string_view protocol;

  void reset() { active = sampled = false; }

  // Continues the trace of a valid `traceparent` in `headers` or starts one, decides
  // sampling, and leaves in `headers` what the upstream must see: one traceparent, the
  // gateway's; the caller's tracestate only when its trace is continued (the spec
  // discards a tracestate without a valid traceparent).
  void begin(const TracingConfig& config, HeaderList& headers, WorkerServices& worker,
             StringArena& arena, std::string_view protocol, std::string_view host);

  std::string_view traceIdHex() const { return {traceparent + 3, 32}; }
  std::string_view spanIdHex() const { return {traceparent + 36, 16}; }
};

// The request's server span to the exporter (sampled requests; after the response).
void exportServerSpan(const Exchange& exchange);

}  // namespace gw::tracing
