// Collects an HTTP message head from llhttp's span callbacks as offsets into the
// connection's InputBlock, so the block may grow (and move) while a long head arrives;
// views are made once the head is complete and the block no longer moves.
#pragma once

#include <llhttp.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/buffer.h"
#include "gateway/headers.h"

namespace gw {

class HeadCollector {
 public:
  struct Span {
    uint32_t off = 0;
    uint32_t len = 0;
  };

  void reset() {
    first_line_ = {};
    fields_.clear();
    in_value_ = false;
  }
  // Returns the accumulated length of the first-line span (URL or status text).
  size_t onFirstLine(const char* base, const char* at, size_t len) { return extend(first_line_, base, at, len); }
  size_t onField(const char* base, const char* at, size_t len) {
    if (fields_.empty() || in_value_) {
      fields_.push_back({});
      in_value_ = false;
    }
    return extend(fields_.back().first, base, at, len);
  }
  size_t onValue(const char* base, const char* at, size_t len) {
    in_value_ = true;
    return extend(fields_.back().second, base, at, len);
  }
  size_t fieldCount() const { return fields_.size(); }
  // Bytes from the head's start to the end of its last span (the terminator aside).
  size_t extent() const {
    if (fields_.empty()) return first_line_.off + first_line_.len;
    const auto& [name, value] = fields_.back();
    return value.len ? value.off + value.len : name.off + name.len;
  }
  std::string_view firstLine(const char* base) const { return view(base, first_line_); }
  // Appends the fields, as views into `base`, to `out`. Values are trimmed of trailing
  // whitespace (llhttp leaves it in; RFC 9110 says it is not part of the value).
  void toHeaders(const char* base, HeaderList& out) const;

 private:
  static size_t extend(Span& s, const char* base, const char* at, size_t len) {
    if (s.len == 0) s.off = uint32_t(at - base);
    s.len += uint32_t(len);
    return s.len;
  }
  static std::string_view view(const char* base, Span s) { return {base + s.off, s.len}; }

  Span first_line_;
  std::vector<std::pair<Span, Span>> fields_;
  bool in_value_ = false;
};

inline void HeadCollector::toHeaders(const char* base, HeaderList& out) const {
  for (const auto& [name, value] : fields_) {
    std::string_view v = view(base, value);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    out.addRef(view(base, name), v);
  }
}

// Collects a chunked body's trailer section (RFC 9112 §7.1.2) from llhttp's field
// callbacks, which come after the body, over any number of reads: each field is copied
// into the list's arena once complete. Held to the head's rules: at most `max_bytes` in
// all, no control character in a value; fields that frame, route or are hop-by-hop are
// not kept (forwardableTrailer).
class TrailerCollector {
 public:
  enum class Result { Ok, TooLarge, Malformed };

  void reset() {
    name_.clear();
    value_.clear();
    bytes_ = 0;
  }
  bool seen() const { return bytes_ > 0; }
  Result onName(const char* at, size_t len, size_t max_bytes) { return add(name_, at, len, max_bytes); }
  Result onValue(const char* at, size_t len, size_t max_bytes) { return add(value_, at, len, max_bytes); }
  Result onFieldComplete(HeaderList& into, size_t max_fields);

 private:
  Result add(std::string& to, const char* at, size_t len, size_t max_bytes) {
    bytes_ += len;
    if (bytes_ > max_bytes) return Result::TooLarge;
    to.append(at, len);
    return Result::Ok;
  }

  std::string name_, value_;
  size_t bytes_ = 0;
};

}  // namespace gw
