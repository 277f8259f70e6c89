#include "gateway/upstream/grpc_health.h"

#include <gtest/gtest.h>

#include <string>

namespace gw::grpc_health {
namespace {

using namespace std::string_literals;

std::string framed(const std::string& message, char flag = 0) {
  auto n = uint32_t(message.size());
  return std::string{flag, char(n >> 24), char(n >> 16), char(n >> 8), char(n)} + message;
}

TEST(GrpcHealthTest, RequestForTheWholeServerIsAnEmptyMessage) {
  EXPECT_EQ(encodeRequest(""), "\0\0\0\0\0"s);
}

TEST(GrpcHealthTest, RequestNamesTheService) {
  // What protoc's encoder writes for HealthCheckRequest{service: "echo.Echo"}.
  EXPECT_EQ(encodeRequest("echo.Echo"), framed("\x0a\x09" "echo.Echo"));
  std::string longer(300, 's');
  EXPECT_EQ(encodeRequest(longer), framed("\x0a\xac\x02"s + longer));
}

TEST(GrpcHealthTest, DecodesEachStatus) {
  EXPECT_EQ(decodeResponse(framed("\x08\x01")), kServing);
  EXPECT_EQ(decodeResponse(framed("\x08\x02")), kNotServing);
  EXPECT_EQ(decodeResponse(framed("\x08\x03")), kServiceUnknown);
  EXPECT_EQ(decodeResponse(framed("")), kUnknown);  // proto3 leaves UNKNOWN (0) out
  EXPECT_EQ(decodeResponse(framed("\x08\x07")), 7u);  // outside the enum: not SERVING
}

TEST(GrpcHealthTest, SkipsUnknownFieldsAndTheLastStatusWins) {
  std::string unknown = "\x10\x05"s                  // field 2 varint
                        "\x19\x01\x02\x03\x04\x05\x06\x07\x08"s  // field 3 fixed64
                        "\x22\x03\x61\x62\x63"s      // field 4 bytes
                        "\x2d\x01\x02\x03\x04"s;     // field 5 fixed32
  EXPECT_EQ(decodeResponse(framed("\x08\x02"s + unknown + "\x08\x01")), kServing);
  EXPECT_EQ(decodeResponse(framed("\x08\x01"s + unknown + "\x08\x02")), kNotServing);
  // A padded (non-minimal) varint is still the value.
  EXPECT_EQ(decodeResponse(framed("\x08\x81\x80\x80\x00"s)), kServing);
}

TEST(GrpcHealthTest, RefusesBadFraming) {
  EXPECT_EQ(decodeResponse(""), std::nullopt);
  EXPECT_EQ(decodeResponse("\0\0\0"s), std::nullopt);
  EXPECT_EQ(decodeResponse(framed("\x08\x01", 1)), std::nullopt);  // compressed
  std::string body = framed("\x08\x01");
  EXPECT_EQ(decodeResponse(body + "x"), std::nullopt);                  // bytes past the message
  EXPECT_EQ(decodeResponse(body.substr(0, body.size() - 1)), std::nullopt);  // cut short
  EXPECT_EQ(decodeResponse(body + body), std::nullopt);                 // two messages
  EXPECT_EQ(decodeResponse("\0\xff\xff\xff\xff\x08\x01"s), std::nullopt);
  EXPECT_EQ(decodeResponse(framed(std::string(kMaxResponseBody, '\0'))), std::nullopt);
}

TEST(GrpcHealthTest, RefusesBadProtobuf) {
  for (std::string bad : {"\x08"s,                        // no value
                          "\x08\x80"s,                    // varint cut short
                          "\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f"s,  // over 64 bits
                          "\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"s,  // 11 bytes
                          "\x00\x01"s,                    // field 0
                          "\x0b"s,                        // wire type 3 (group)
                          "\x0e\x00"s,                    // wire type 6
                          "\x22\x05\x61"s,                // length past the end
                          "\x22\xff\xff\xff\xff\x0f"s,    // huge length
                          "\x19\x01\x02"s,                // fixed64 cut short
                          "\x2d\x01"s}) {                 // fixed32 cut short
    EXPECT_EQ(decodeResponse(framed(bad)), std::nullopt) << testing::PrintToString(bad);
  }
  // The largest varint is fine.
  EXPECT_EQ(decodeResponse(framed("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"s)), UINT64_MAX);
}

TEST(GrpcHealthTest, ArbitraryBytesNeverCrash) {
  // Every two-byte message, alone and three times over, gives an answer.
  for (int a = 0; a < 256; ++a)
    for (int b = 0; b < 256; ++b) {
      std::string m{char(a), char(b)};
      (void)decodeResponse(framed(m));
      (void)decodeResponse(framed(m + m + m));
    }
  SUCCEED();
}

}  // namespace
}  // namespace gw::grpc_health
