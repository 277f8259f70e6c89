#include "gateway/tracing/otlp.h"

#include "gateway/tracing/protobuf_writer.h"

#ifndef GATEWAY_VERSION
#define GATEWAY_VERSION "dev"
#endif

namespace gw::tracing {
namespace {

// Field numbers of opentelemetry-proto v1 (trace.proto, common.proto, resource.proto,
// trace_service.proto).
namespace field {
constexpr uint32_t kExportResourceSpans = 1;
constexpr uint32_t kResourceSpansResource = 1, kResourceSpansScopeSpans = 2;
constexpr uint32_t kResourceAttributes = 1;
constexpr uint32_t kScopeSpansScope = 1, kScopeSpansSpans = 2;
constexpr uint32_t kScopeName = 1, kScopeVersion = 2;
constexpr uint32_t kSpanTraceId = 1, kSpanSpanId = 2, kSpanTraceState = 3, kSpanParentSpanId = 4,
                   kSpanName = 5, kSpanKind = 6, kSpanStart = 7, kSpanEnd = 8, kSpanAttributes = 9,
                   kSpanEvents = 11, kSpanStatus = 15, kSpanFlags = 16;
constexpr uint32_t kEventTime = 1, kEventName = 2, kEventAttributes = 3;
constexpr uint32_t kStatusMessage = 2, kStatusCode = 3;
constexpr uint32_t kKeyValueKey = 1, kKeyValueValue = 2;
constexpr uint32_t kAnyValueString = 1, kAnyValueInt = 3;
}  // namespace field

constexpr uint64_t kSpanKindServer = 2;
constexpr uint64_t kStatusCodeError = 2;
// SpanFlags: the low byte is the W3C trace flags; these say whether the parent is remote.
constexpr uint32_t kFlagHasIsRemote = 0x100, kFlagIsRemote = 0x200;

std::string_view cut(std::string_view s) {
  if (s.size() <= kMaxAttributeBytes) return s;
  size_t n = kMaxAttributeBytes;
  while (n > 0 && (uint8_t(s[n]) & 0xC0) == 0x80) --n;  // not inside a UTF-8 sequence
  return s.substr(0, n);
}

void appendAttribute(ProtoWriter& w, uint32_t field_number, const Attribute& a) {
  size_t kv = w.beginMessage(field_number);
  w.bytes(field::kKeyValueKey, a.key);
  size_t value = w.beginMessage(field::kKeyValueValue);
  if (a.is_int) {
    w.varint(field::kAnyValueInt, uint64_t(a.integer));
  } else {
    w.bytes(field::kAnyValueString, cut(a.text));
  }
  w.endMessage(value);
  w.endMessage(kv);
}

}  // namespace

void appendSpanField(std::string& out, const SpanRecord& s) {
  ProtoWriter w(out);
  size_t span = w.beginMessage(field::kScopeSpansSpans);
  w.bytes(field::kSpanTraceId, s.trace_id, 16);
  w.bytes(field::kSpanSpanId, s.span_id, 8);
  if (!s.trace_state.empty()) w.bytes(field::kSpanTraceState, cut(s.trace_state));
  if (s.parent_span_id) w.bytes(field::kSpanParentSpanId, s.parent_span_id, 8);
  w.bytes(field::kSpanName, cut(s.name));
  w.varint(field::kSpanKind, kSpanKindServer);
  w.fixed64(field::kSpanStart, s.start_unix_ns);
  w.fixed64(field::kSpanEnd, s.end_unix_ns);
  for (size_t i = 0; i < s.attribute_count; ++i) {
    appendAttribute(w, field::kSpanAttributes, s.attributes[i]);
  }
  for (size_t i = 0; i < s.event_count; ++i) {
    const SpanEvent& e = s.events[i];
    size_t event = w.beginMessage(field::kSpanEvents);
    w.fixed64(field::kEventTime, e.time_unix_ns);
    w.bytes(field::kEventName, e.name);
    for (size_t j = 0; j < e.attribute_count; ++j) {
      appendAttribute(w, field::kEventAttributes, e.attributes[j]);
    }
    w.endMessage(event);
  }
  if (s.error) {
    size_t status = w.beginMessage(field::kSpanStatus);
    if (!s.status_message.empty()) w.bytes(field::kStatusMessage, cut(s.status_message));
    w.varint(field::kStatusCode, kStatusCodeError);
    w.endMessage(status);
  }
  w.fixed32(field::kSpanFlags,
            s.trace_flags | kFlagHasIsRemote | (s.parent_span_id ? kFlagIsRemote : 0));
  w.endMessage(span);
}

ExportEnvelope beginExportRequest(std::string& body, std::string_view service_name) {
  ProtoWriter w(body);
  ExportEnvelope e;
  e.resource_spans = w.beginMessage(field::kExportResourceSpans);
  size_t resource = w.beginMessage(field::kResourceSpansResource);
  appendAttribute(w, field::kResourceAttributes, {"service.name", service_name});
  w.endMessage(resource);
  e.scope_spans = w.beginMessage(field::kResourceSpansScopeSpans);
  size_t scope = w.beginMessage(field::kScopeSpansScope);
  w.bytes(field::kScopeName, "gateway");
  w.bytes(field::kScopeVersion, GATEWAY_VERSION);
  w.endMessage(scope);
  return e;
}

void endExportRequest(std::string& body, const ExportEnvelope& e) {
  ProtoWriter w(body);
  // Inner first: closing the outer message first would shift the inner one's mark.
  w.endMessage(e.scope_spans);
  w.endMessage(e.resource_spans);
}

}  // namespace gw::tracing
