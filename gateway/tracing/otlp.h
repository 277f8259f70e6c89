// The OTLP/HTTP trace messages (opentelemetry-proto, trace/v1 and collector/trace/v1) the
// gateway sends, encoded with ProtoWriter: one server span per sampled request, and the
// ExportTraceServiceRequest that carries a batch of them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace gw::tracing {

struct Attribute {
  std::string_view key;
  std::string_view text;  // a string value, unless `is_int`
  int64_t integer = 0;
  bool is_int = false;
};

struct SpanEvent {
  std::string_view name;
  uint64_t time_unix_ns = 0;
  const Attribute* attributes = nullptr;
  size_t attribute_count = 0;
};

struct SpanRecord {
  const uint8_t* trace_id = nullptr;        // 16 bytes
  const uint8_t* span_id = nullptr;         // 8 bytes
  const uint8_t* parent_span_id = nullptr;  // 8 bytes, or null for a root span
  uint8_t trace_flags = 0;
  std::string_view trace_state;
  std::string_view name;
  uint64_t start_unix_ns = 0;
  uint64_t end_unix_ns = 0;
  const Attribute* attributes = nullptr;
  size_t attribute_count = 0;
  const SpanEvent* events = nullptr;
  size_t event_count = 0;
  bool error = false;  // Status ERROR, else UNSET (the OpenTelemetry HTTP server rule)
  std::string_view status_message;
};

// Longer string values are cut there (at a UTF-8 character boundary): a span's size, and
// so the queue's memory, stays bounded whatever a client sends.
constexpr size_t kMaxAttributeBytes = 1024;

// Appends `span` as one `spans` field of a ScopeSpans message (tag and length included),
// ready to be concatenated with others into a batch.
void appendSpanField(std::string& out, const SpanRecord& span);

// The whole ExportTraceServiceRequest into `body` (cleared first): one ResourceSpans with
// the service.name resource attribute and one ScopeSpans whose spans are what `take`
// appends (already encoded by appendSpanField). Returns what `take` returned.
template <class Take>
size_t encodeExportRequest(std::string& body, std::string_view service_name, Take&& take);

// --- internals of encodeExportRequest ---
struct ExportEnvelope {
  size_t resource_spans, scope_spans;
};
ExportEnvelope beginExportRequest(std::string& body, std::string_view service_name);
void endExportRequest(std::string& body, const ExportEnvelope& envelope);

template <class Take>
size_t encodeExportRequest(std::string& body, std::string_view service_name, Take&& take) {
  body.clear();
  ExportEnvelope e = beginExportRequest(body, service_name);
  size_t n = take(body);
  endExportRequest(body, e);
  return n;
}

}  // namespace gw::tracing
