// W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent` field a
// client sends, and the one the gateway sends upstream naming its own span.
//
// Pure functions, no allocation: they run for every request of a traced configuration,
// sampled or not.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace gw::tracing {

struct TraceParent {
  uint8_t trace_id[16];
  uint8_t parent_id[8];
  uint8_t flags = 0;
};

constexpr uint8_t kSampledFlag = 0x01;
// "00-" 32 hex "-" 16 hex "-" 2 hex
constexpr size_t kTraceParentSize = 55;

// A traceparent value as the spec's parsing rules read it, or nullopt for every form it
// calls invalid (the caller then starts a new trace): version ff or not two lower-case
// hex digits; a trace id or parent id of all zeros; fields of the wrong length or with
// anything but lower-case hex; version 00 with anything after the flags. A later version
// may carry more fields after a '-': its first three are read as version 00's.
std::optional<TraceParent> parseTraceParent(std::string_view value);

// Version 00 of the field: exactly kTraceParentSize characters into `out`.
void formatTraceParent(const uint8_t (&trace_id)[16], const uint8_t (&span_id)[8], uint8_t flags,
                       char* out);

// Lower-case hex of `n` bytes into `out` (2n characters).
void toHex(const uint8_t* bytes, size_t n, char* out);

}  // namespace gw::tracing
