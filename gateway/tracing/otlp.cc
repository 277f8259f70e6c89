#include "gateway/tracing/otlp.h"

#include <cassert>
#include <cstring>

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

// The span is written in two passes: its messages' sizes first, then every byte forward
// through a raw cursor into space resized once. The worker encodes a span per sampled
// request; ProtoWriter's appends (a capacity check each, a length widened by an insert
// when a message passes 127 bytes, as a span always does) cost it twice as much.
size_t varintSize(uint64_t v) { return ProtoWriter::varintSize(v); }
size_t lengthField(uint32_t field_number, size_t n) {
  return varintSize(uint64_t(field_number) << 3) + varintSize(n) + n;
}

// The sizes of an attribute's AnyValue and KeyValue messages.
struct AttributeSize {
  size_t value, key_value;
};
AttributeSize attributeSize(const Attribute& a) {
  AttributeSize s;
  s.value = a.is_int ? 1 + varintSize(uint64_t(a.integer))
                     : lengthField(field::kAnyValueString, cut(a.text).size());
  s.key_value = lengthField(field::kKeyValueKey, a.key.size()) +
                lengthField(field::kKeyValueValue, s.value);
  return s;
}

size_t eventSize(const SpanEvent& e) {
  size_t n = 1 + 8 + lengthField(field::kEventName, e.name.size());
  for (size_t j = 0; j < e.attribute_count; ++j) {
    n += lengthField(field::kEventAttributes, attributeSize(e.attributes[j]).key_value);
  }
  return n;
}

size_t statusSize(const SpanRecord& s) {
  size_t n = 1 + varintSize(kStatusCodeError);
  if (!s.status_message.empty()) n += lengthField(field::kStatusMessage, cut(s.status_message).size());
  return n;
}

size_t spanSize(const SpanRecord& s) {
  size_t n = lengthField(field::kSpanTraceId, 16) + lengthField(field::kSpanSpanId, 8);
  if (!s.trace_state.empty()) n += lengthField(field::kSpanTraceState, cut(s.trace_state).size());
  if (s.parent_span_id) n += lengthField(field::kSpanParentSpanId, 8);
  n += lengthField(field::kSpanName, cut(s.name).size());
  n += 1 + varintSize(kSpanKindServer) + 2 * (1 + 8);
  for (size_t i = 0; i < s.attribute_count; ++i) {
    n += lengthField(field::kSpanAttributes, attributeSize(s.attributes[i]).key_value);
  }
  for (size_t i = 0; i < s.event_count; ++i) n += lengthField(field::kSpanEvents, eventSize(s.events[i]));
  if (s.error) n += lengthField(field::kSpanStatus, statusSize(s));
  return n + varintSize(uint64_t(field::kSpanFlags) << 3) + 4;
}

// Writes forward from `p`; the caller made the room.
struct Cursor {
  char* p;

  void varint(uint64_t v) {
    while (v >= 0x80) {
      *p++ = char(uint8_t(v) | 0x80);
      v >>= 7;
    }
    *p++ = char(v);
  }
  void tag(uint32_t field_number, uint32_t wire_type) {
    varint(uint64_t(field_number) << 3 | wire_type);
  }
  void length(uint32_t field_number, size_t n) {
    tag(field_number, 2);
    varint(n);
  }
  void bytes(uint32_t field_number, const void* data, size_t n) {
    length(field_number, n);
    std::memcpy(p, data, n);
    p += n;
  }
  void bytes(uint32_t field_number, std::string_view v) { bytes(field_number, v.data(), v.size()); }
  void fixed64(uint32_t field_number, uint64_t v) {
    tag(field_number, 1);
    for (int i = 0; i < 8; ++i) *p++ = char(uint8_t(v >> (8 * i)));  // little-endian
  }
  void fixed32(uint32_t field_number, uint32_t v) {
    tag(field_number, 5);
    for (int i = 0; i < 4; ++i) *p++ = char(uint8_t(v >> (8 * i)));
  }
  void attribute(uint32_t field_number, const Attribute& a) {
    AttributeSize s = attributeSize(a);
    length(field_number, s.key_value);
    bytes(field::kKeyValueKey, a.key);
    length(field::kKeyValueValue, s.value);
    if (a.is_int) {
      tag(field::kAnyValueInt, 0);
      varint(uint64_t(a.integer));
    } else {
      bytes(field::kAnyValueString, cut(a.text));
    }
  }
};

}  // namespace

void appendSpanField(std::string& out, const SpanRecord& s) {
  size_t body = spanSize(s);
  size_t start = out.size();
  out.resize(start + lengthField(field::kScopeSpansSpans, body));
  Cursor w{out.data() + start};
  w.length(field::kScopeSpansSpans, body);
  w.bytes(field::kSpanTraceId, s.trace_id, 16);
  w.bytes(field::kSpanSpanId, s.span_id, 8);
  if (!s.trace_state.empty()) w.bytes(field::kSpanTraceState, cut(s.trace_state));
  if (s.parent_span_id) w.bytes(field::kSpanParentSpanId, s.parent_span_id, 8);
  w.bytes(field::kSpanName, cut(s.name));
  w.tag(field::kSpanKind, 0);
  w.varint(kSpanKindServer);
  w.fixed64(field::kSpanStart, s.start_unix_ns);
  w.fixed64(field::kSpanEnd, s.end_unix_ns);
  for (size_t i = 0; i < s.attribute_count; ++i) w.attribute(field::kSpanAttributes, s.attributes[i]);
  for (size_t i = 0; i < s.event_count; ++i) {
    const SpanEvent& e = s.events[i];
    w.length(field::kSpanEvents, eventSize(e));
    w.fixed64(field::kEventTime, e.time_unix_ns);
    w.bytes(field::kEventName, e.name);
    for (size_t j = 0; j < e.attribute_count; ++j) w.attribute(field::kEventAttributes, e.attributes[j]);
  }
  if (s.error) {
    w.length(field::kSpanStatus, statusSize(s));
    if (!s.status_message.empty()) w.bytes(field::kStatusMessage, cut(s.status_message));
    w.tag(field::kStatusCode, 0);
    w.varint(kStatusCodeError);
  }
  w.fixed32(field::kSpanFlags,
            s.trace_flags | kFlagHasIsRemote | (s.parent_span_id ? kFlagIsRemote : 0));
  assert(w.p == out.data() + out.size());
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
