// The protocol buffers wire format, writing side only, for the few OTLP messages the
// gateway sends (docs/dependencies.md says why it is not libprotobuf).
//
// Appends to a caller's string, so that a buffer's capacity is reused from one span or
// batch to the next. Nested messages are written in place: beginMessage() leaves room for
// a one-byte length and endMessage() widens it when the message came out longer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace gw::tracing {

class ProtoWriter {
 public:
  explicit ProtoWriter(std::string& out) : out_(out) {}

  void varint(uint32_t field, uint64_t value);         // int32/64, uint32/64, bool, enum
  void fixed64(uint32_t field, uint64_t value);        // fixed64, sfixed64, double's bits
  void fixed32(uint32_t field, uint32_t value);        // fixed32
  void bytes(uint32_t field, std::string_view value);  // bytes, string, a message's bytes
  void bytes(uint32_t field, const uint8_t* data, size_t n) {
    bytes(field, std::string_view(reinterpret_cast<const char*>(data), n));
  }

  // A nested message: the fields written until the matching endMessage() are its body.
  size_t beginMessage(uint32_t field);
  void endMessage(size_t mark);

  static void appendVarint(std::string& out, uint64_t value);
  static size_t varintSize(uint64_t value);

 private:
  void tag(uint32_t field, uint32_t wire_type) {
    appendVarint(out_, uint64_t(field) << 3 | wire_type);
  }

  std::string& out_;
};

}  // namespace gw::tracing
