#include "gateway/tracing/trace_context.h"

namespace gw::tracing {
namespace {

// Lower-case hex only: the spec's HEXDIGLC. Upper case is invalid, not tolerated, so
// that every hop writes and compares ids the same way.
int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

bool readHex(std::string_view text, uint8_t* out) {
  for (size_t i = 0; i < text.size() / 2; ++i) {
    int hi = hexValue(text[2 * i]);
    int lo = hexValue(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = uint8_t(hi << 4 | lo);
  }
  return true;
}

bool allZero(const uint8_t* bytes, size_t n) {
  uint8_t any = 0;
  for (size_t i = 0; i < n; ++i) any |= bytes[i];
  return any == 0;
}

}  // namespace

std::optional<TraceParent> parseTraceParent(std::string_view v) {
  if (v.size() < kTraceParentSize) return std::nullopt;
  uint8_t version;
  if (v[2] != '-' || !readHex(v.substr(0, 2), &version) || version == 0xff) return std::nullopt;
  // Version 00 is exactly this long; a later one may append fields, each after a '-'.
  if (version == 0 ? v.size() != kTraceParentSize
                   : v.size() > kTraceParentSize && v[kTraceParentSize] != '-') {
    return std::nullopt;
  }
  if (v[35] != '-' || v[52] != '-') return std::nullopt;
  TraceParent tp;
  if (!readHex(v.substr(3, 32), tp.trace_id) || !readHex(v.substr(36, 16), tp.parent_id) ||
      !readHex(v.substr(53, 2), &tp.flags)) {
    return std::nullopt;
  }
  if (allZero(tp.trace_id, 16) || allZero(tp.parent_id, 8)) return std::nullopt;
  return tp;
}

void toHex(const uint8_t* bytes, size_t n, char* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kHex[bytes[i] >> 4];
    out[2 * i + 1] = kHex[bytes[i] & 15];
  }
}

void formatTraceParent(const uint8_t (&trace_id)[16], const uint8_t (&span_id)[8], uint8_t flags,
                       char* out) {
  out[0] = '0';
  out[1] = '0';
  out[2] = '-';
  toHex(trace_id, 16, out + 3);
  out[35] = '-';
  toHex(span_id, 8, out + 36);
  out[52] = '-';
  toHex(&flags, 1, out + 53);
}

}  // namespace gw::tracing
