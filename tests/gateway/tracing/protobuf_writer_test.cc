// The wire format against known encodings (the protobuf documentation's examples), and
// the OTLP messages read back by a small decoder written here from the wire format spec.
#include "gateway/tracing/protobuf_writer.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "gateway/tracing/otlp.h"

namespace gw::tracing {
namespace {

std::string bytesOf(std::initializer_list<int> b) {
  std::string s;
  for (int c : b) s.push_back(char(c));
  return s;
}

TEST(ProtoWriterTest, VarintsAsTheSpecWritesThem) {
  std::string out;
  ProtoWriter w(out);
  w.varint(1, 150);  // the documentation's "08 96 01"
  EXPECT_EQ(out, bytesOf({0x08, 0x96, 0x01}));
  out.clear();
  w.varint(2, 0);
  w.varint(3, 1);
  w.varint(4, 127);
  w.varint(5, 128);
  EXPECT_EQ(out, bytesOf({0x10, 0x00, 0x18, 0x01, 0x20, 0x7f, 0x28, 0x80, 0x01}));
  out.clear();
  w.varint(1, UINT64_MAX);  // ten bytes; a negative int64 too
  EXPECT_EQ(out, bytesOf({0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}));
  out.clear();
  w.varint(16, 1);  // a field number past 15 takes a two-byte tag
  EXPECT_EQ(out, bytesOf({0x80, 0x01, 0x01}));
  EXPECT_EQ(ProtoWriter::varintSize(0), 1u);
  EXPECT_EQ(ProtoWriter::varintSize(127), 1u);
  EXPECT_EQ(ProtoWriter::varintSize(128), 2u);
  EXPECT_EQ(ProtoWriter::varintSize(16383), 2u);
  EXPECT_EQ(ProtoWriter::varintSize(16384), 3u);
}

TEST(ProtoWriterTest, FixedAreLittleEndian) {
  std::string out;
  ProtoWriter w(out);
  w.fixed64(7, 0x0102030405060708ull);
  EXPECT_EQ(out, bytesOf({0x39, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01}));
  out.clear();
  w.fixed32(16, 0x0301);
  EXPECT_EQ(out, bytesOf({0x85, 0x01, 0x01, 0x03, 0x00, 0x00}));
}

TEST(ProtoWriterTest, LengthDelimited) {
  std::string out;
  ProtoWriter w(out);
  w.bytes(2, "testing");  // the documentation's "12 07 74 65 73 74 69 6e 67"
  EXPECT_EQ(out, bytesOf({0x12, 0x07}) + "testing");
  out.clear();
  w.bytes(1, "");
  EXPECT_EQ(out, bytesOf({0x0a, 0x00}));
}

TEST(ProtoWriterTest, NestedMessagesOfEveryLengthWidth) {
  for (size_t n : {0u, 1u, 125u, 126u, 127u, 128u, 300u, 16381u, 16382u, 16383u, 20000u}) {
    std::string out = "x";  // something before: marks are positions in the buffer
    ProtoWriter w(out);
    size_t outer = w.beginMessage(3);
    size_t inner = w.beginMessage(1);
    w.bytes(2, std::string(n, 'a'));
    w.endMessage(inner);
    w.varint(4, 9);
    w.endMessage(outer);
    // Expected, built bottom-up the other way.
    std::string field2;
    field2 += char(0x12);
    ProtoWriter::appendVarint(field2, n);
    field2 += std::string(n, 'a');
    std::string inner_msg;
    inner_msg += char(0x0a);
    ProtoWriter::appendVarint(inner_msg, field2.size());
    inner_msg += field2;
    inner_msg += bytesOf({0x20, 0x09});
    std::string expected = "x";
    expected += char(0x1a);
    ProtoWriter::appendVarint(expected, inner_msg.size());
    expected += inner_msg;
    EXPECT_EQ(out, expected) << n;
  }
}

// --- a reader of the wire format, for the OTLP test below ---

struct Field {
  uint32_t number;
  int wire;
  uint64_t number_value = 0;  // varint, fixed
  std::string bytes;          // length-delimited
};

bool readVarint(const std::string& s, size_t& at, uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (at >= s.size()) return false;
    uint8_t b = uint8_t(s[at++]);
    v |= uint64_t(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

std::vector<Field> decode(const std::string& s) {
  std::vector<Field> out;
  size_t at = 0;
  while (at < s.size()) {
    uint64_t key;
    if (!readVarint(s, at, key)) throw std::runtime_error("bad key");
    Field f{uint32_t(key >> 3), int(key & 7), 0, {}};
    if (f.wire == 0) {
      if (!readVarint(s, at, f.number_value)) throw std::runtime_error("bad varint");
    } else if (f.wire == 1 || f.wire == 5) {
      size_t n = f.wire == 1 ? 8 : 4;
      if (at + n > s.size()) throw std::runtime_error("short fixed");
      for (size_t i = 0; i < n; ++i) f.number_value |= uint64_t(uint8_t(s[at + i])) << (8 * i);
      at += n;
    } else if (f.wire == 2) {
      uint64_t len;
      if (!readVarint(s, at, len) || at + len > s.size()) throw std::runtime_error("bad length");
      f.bytes = s.substr(at, len);
      at += len;
    } else {
      throw std::runtime_error("unexpected wire type");
    }
    out.push_back(std::move(f));
  }
  return out;
}

std::vector<Field> all(const std::vector<Field>& fields, uint32_t number) {
  std::vector<Field> out;
  for (const auto& f : fields) {
    if (f.number == number) out.push_back(f);
  }
  return out;
}

const Field& one(const std::vector<Field>& fields, uint32_t number) {
  for (const auto& f : fields) {
    if (f.number == number) return f;
  }
  throw std::runtime_error("no field " + std::to_string(number));
}

// KeyValue list -> key: "s:text" or "i:number".
std::map<std::string, std::string> attributesOf(const std::vector<Field>& kvs) {
  std::map<std::string, std::string> out;
  for (const auto& kv : kvs) {
    auto fields = decode(kv.bytes);
    auto value = decode(one(fields, 2).bytes);
    const Field& v = value.at(0);
    out[one(fields, 1).bytes] =
        v.number == 1 ? "s:" + v.bytes : "i:" + std::to_string(int64_t(v.number_value));
  }
  return out;
}

TEST(OtlpTest, ExportRequestReadsBack) {
  uint8_t trace[16], span[8], parent[8];
  for (int i = 0; i < 16; ++i) trace[i] = uint8_t(i + 1);
  for (int i = 0; i < 8; ++i) span[i] = uint8_t(0xa0 + i);
  for (int i = 0; i < 8; ++i) parent[i] = uint8_t(0xb0 + i);
  std::string long_path(5000, 'p');
  Attribute attrs[] = {{"url.path", long_path}, {"http.response.status_code", {}, 502, true}};
  SpanRecord r;
  r.trace_id = trace;
  r.span_id = span;
  r.parent_span_id = parent;
  r.trace_flags = 1;
  r.trace_state = "k=v";
  r.name = "GET api";
  r.start_unix_ns = 1700000000123456789ull;
  r.end_unix_ns = 1700000000223456789ull;
  r.attributes = attrs;
  r.attribute_count = 2;
  Attribute event_attrs[] = {{"gateway.upstream.endpoint", "10.0.0.1:80"}};
  SpanEvent events[] = {{"upstream request", 1700000000130000000ull, nullptr, 0},
                        {"upstream response", 1700000000200000000ull, event_attrs, 1}};
  r.events = events;
  r.event_count = 2;
  r.error = true;
  r.status_message = "BAD_GATEWAY";
  std::string spans;
  appendSpanField(spans, r);
  r.parent_span_id = nullptr;
  r.error = false;
  appendSpanField(spans, r);

  std::string body;
  size_t n = encodeExportRequest(body, "svc", [&](std::string& out) {
    out += spans;
    return 2;
  });
  EXPECT_EQ(n, 2u);
  auto request = decode(body);
  ASSERT_EQ(request.size(), 1u);
  auto resource_spans = decode(one(request, 1).bytes);
  auto resource = decode(one(resource_spans, 1).bytes);
  EXPECT_EQ(attributesOf(all(resource, 1)),
            (std::map<std::string, std::string>{{"service.name", "s:svc"}}));
  auto scope_spans = decode(one(resource_spans, 2).bytes);
  auto scope = decode(one(scope_spans, 1).bytes);
  EXPECT_EQ(one(scope, 1).bytes, "gateway");
  auto decoded = all(scope_spans, 2);
  ASSERT_EQ(decoded.size(), 2u);

  auto first = decode(decoded[0].bytes);
  EXPECT_EQ(one(first, 1).bytes, std::string(reinterpret_cast<char*>(trace), 16));
  EXPECT_EQ(one(first, 2).bytes, std::string(reinterpret_cast<char*>(span), 8));
  EXPECT_EQ(one(first, 3).bytes, "k=v");
  EXPECT_EQ(one(first, 4).bytes, std::string(reinterpret_cast<char*>(parent), 8));
  EXPECT_EQ(one(first, 5).bytes, "GET api");
  EXPECT_EQ(one(first, 6).number_value, 2u);  // SPAN_KIND_SERVER
  EXPECT_EQ(one(first, 7).wire, 1);
  EXPECT_EQ(one(first, 7).number_value, r.start_unix_ns);
  EXPECT_EQ(one(first, 8).number_value, r.end_unix_ns);
  auto attributes = attributesOf(all(first, 9));
  EXPECT_EQ(attributes["url.path"], "s:" + std::string(kMaxAttributeBytes, 'p'));
  EXPECT_EQ(attributes["http.response.status_code"], "i:502");
  auto decoded_events = all(first, 11);
  ASSERT_EQ(decoded_events.size(), 2u);
  auto e0 = decode(decoded_events[0].bytes), e1 = decode(decoded_events[1].bytes);
  EXPECT_EQ(one(e0, 1).wire, 1);
  EXPECT_EQ(one(e0, 1).number_value, 1700000000130000000ull);
  EXPECT_EQ(one(e0, 2).bytes, "upstream request");
  EXPECT_TRUE(all(e0, 3).empty());
  EXPECT_EQ(one(e1, 2).bytes, "upstream response");
  EXPECT_EQ(attributesOf(all(e1, 3)),
            (std::map<std::string, std::string>{{"gateway.upstream.endpoint", "s:10.0.0.1:80"}}));
  auto status = decode(one(first, 15).bytes);
  EXPECT_EQ(one(status, 2).bytes, "BAD_GATEWAY");
  EXPECT_EQ(one(status, 3).number_value, 2u);      // STATUS_CODE_ERROR
  EXPECT_EQ(one(first, 16).number_value, 0x301u);  // sampled, parent known to be remote

  auto second = decode(decoded[1].bytes);
  EXPECT_EQ(all(second, 11).size(), 2u);
  EXPECT_TRUE(all(second, 4).empty());   // a root span
  EXPECT_TRUE(all(second, 15).empty());  // status UNSET
  EXPECT_EQ(one(second, 16).number_value, 0x101u);
}

TEST(OtlpTest, LongValuesAreCutOnACharacterBoundary) {
  std::string value(kMaxAttributeBytes - 1, 'a');
  value += "\xc3\xa9tail";  // é straddles the limit
  Attribute attrs[] = {{"user_agent.original", value}};
  uint8_t id[16] = {1}, span[8] = {1};
  SpanRecord r;
  r.trace_id = id;
  r.span_id = span;
  r.name = "GET";
  r.attributes = attrs;
  r.attribute_count = 1;
  std::string out;
  appendSpanField(out, r);
  auto span_fields = decode(decode(out).at(0).bytes);
  EXPECT_EQ(attributesOf(all(span_fields, 9))["user_agent.original"],
            "s:" + std::string(kMaxAttributeBytes - 1, 'a'));
}

}  // namespace
}  // namespace gw::tracing
