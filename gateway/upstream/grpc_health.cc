#include "gateway/upstream/grpc_health.h"

#include "gateway/tracing/protobuf_writer.h"

namespace gw::grpc_health {
namespace {

constexpr size_t kPrefix = 5;
constexpr uint32_t kServiceField = 1;  // HealthCheckRequest.service
constexpr uint32_t kStatusField = 1;   // HealthCheckResponse.status

// Reads the protobuf wire format from a bounded buffer; every read checks what is left,
// so truncated or garbage input ends in `false`, never past the end.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}

  bool done() const { return pos_ == in_.size(); }

  bool varint(uint64_t& out) {
    out = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ == in_.size()) return false;
      auto byte = uint8_t(in_[pos_++]);
      // The 10th byte may only hold the top bit of a 64-bit value.
      if (shift == 63 && byte > 1) return false;
      out |= uint64_t(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return true;
    }
    return false;
  }

  bool skip(uint64_t n) {
    if (n > in_.size() - pos_) return false;
    pos_ += size_t(n);
    return true;
  }

  // Skips a field of `wire_type` whose tag was just read: unknown fields are legal.
  bool skipField(uint64_t wire_type) {
    uint64_t v;
    switch (wire_type) {
      case 0: return varint(v);
      case 1: return skip(8);
      case 2: return varint(v) && skip(v);
      case 5: return skip(4);
      default: return false;  // groups (3, 4) are not proto3; 6 and 7 do not exist
    }
  }

 private:
  std::string_view in_;
  size_t pos_ = 0;
};

}  // namespace

std::string encodeRequest(std::string_view service) {
  std::string message;
  // proto3 leaves a default (empty) string out.
  if (!service.empty()) tracing::ProtoWriter(message).bytes(kServiceField, service);
  std::string body(kPrefix, '\0');
  auto n = uint32_t(message.size());
  for (int i = 0; i < 4; ++i) body[1 + i] = char(uint8_t(n >> (24 - 8 * i)));
  return body + message;
}

std::optional<uint64_t> decodeResponse(std::string_view body) {
  if (body.size() < kPrefix || body.size() > kMaxResponseBody) return std::nullopt;
  // We sent no grpc-accept-encoding, so a compressed message is a broken server.
  if (body[0] != 0) return std::nullopt;
  uint32_t length = 0;
  for (int i = 1; i < 5; ++i) length = length << 8 | uint8_t(body[i]);
  if (length != body.size() - kPrefix) return std::nullopt;
  Reader r(body.substr(kPrefix));
  uint64_t status = kUnknown;
  while (!r.done()) {
    uint64_t tag;
    if (!r.varint(tag) || (tag >> 3) == 0) return std::nullopt;  // field 0 does not exist
    if (tag >> 3 == kStatusField && (tag & 7) == 0) {
      // A repeated scalar field: the last one wins.
      if (!r.varint(status)) return std::nullopt;
    } else if (!r.skipField(tag & 7)) {
      return std::nullopt;
    }
  }
  return status;
}

}  // namespace gw::grpc_health
