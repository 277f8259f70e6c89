#include "gateway/tracing/protobuf_writer.h"

namespace gw::tracing {

void ProtoWriter::appendVarint(std::string& out, uint64_t value) {
  char buf[10];
  size_t n = 0;
  while (value >= 0x80) {
    buf[n++] = char(uint8_t(value) | 0x80);
    value >>= 7;
  }
  buf[n++] = char(value);
  out.append(buf, n);
}

size_t ProtoWriter::varintSize(uint64_t value) {
  size_t n = 1;
  while (value >= 0x80) {
    value >>= 7;
    ++n;
  }
  return n;
}

void ProtoWriter::varint(uint32_t field, uint64_t value) {
  tag(field, 0);
  appendVarint(out_, value);
}

void ProtoWriter::fixed64(uint32_t field, uint64_t value) {
  tag(field, 1);
  char buf[8];
  for (int i = 0; i < 8; ++i) buf[i] = char(uint8_t(value >> (8 * i)));  // little-endian
  out_.append(buf, 8);
}

void ProtoWriter::fixed32(uint32_t field, uint32_t value) {
  tag(field, 5);
  char buf[4];
  for (int i = 0; i < 4; ++i) buf[i] = char(uint8_t(value >> (8 * i)));
  out_.append(buf, 4);
}

void ProtoWriter::bytes(uint32_t field, std::string_view value) {
  tag(field, 2);
  appendVarint(out_, value.size());
  out_.append(value);
}

size_t ProtoWriter::beginMessage(uint32_t field) {
  tag(field, 2);
  out_.push_back('\0');  // the length, when it fits in one byte (most attributes)
  return out_.size();
}

void ProtoWriter::endMessage(size_t mark) {
  size_t length = out_.size() - mark;
  size_t width = varintSize(length);
  if (width > 1) out_.insert(mark, width - 1, '\0');
  // A varint is minimal here: decoders accept padded ones, but not every one of them.
  size_t at = mark - 1;
  uint64_t v = length;
  while (v >= 0x80) {
    out_[at++] = char(uint8_t(v) | 0x80);
    v >>= 7;
  }
  out_[at] = char(v);
}

}  // namespace gw::tracing
