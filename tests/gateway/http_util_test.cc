#include "gateway/http_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/headers.h"

namespace gw {
namespace {

// ---------------------------------------------------------------------------------------
// reasonPhrase, errorCodeFor

TEST(HttpUtilTest, ReasonPhraseOfKnownStatuses) {
  const std::pair<int, std::string_view> cases[] = {
      {100, "Continue"},          {101, "Switching Protocols"},
      {200, "OK"},                {204, "No Content"},
      {301, "Moved Permanently"}, {304, "Not Modified"},
      {308, "Permanent Redirect"}, {400, "Bad Request"},
      {401, "Unauthorized"},      {403, "Forbidden"},
      {404, "Not Found"},         {408, "Request Timeout"},
      {413, "Payload Too Large"}, {414, "URI Too Long"},
      {429, "Too Many Requests"}, {431, "Request Header Fields Too Large"},
      {500, "Internal Server Error"}, {502, "Bad Gateway"},
      {503, "Service Unavailable"}, {504, "Gateway Timeout"},
  };
  for (const auto& [status, phrase] : cases) EXPECT_EQ(reasonPhrase(status), phrase) << status;
}

TEST(HttpUtilTest, ReasonPhraseOfUnknownStatusesNamesTheirClass) {
  const std::pair<int, std::string_view> cases[] = {
      {199, "Informational"}, {299, "Success"},      {399, "Redirection"},
      {418, "Client Error"},  {499, "Client Error"}, {599, "Server Error"},
  };
  for (const auto& [status, phrase] : cases) EXPECT_EQ(reasonPhrase(status), phrase) << status;
}

TEST(HttpUtilTest, ErrorCodeForEverySpecStatus) {
  // SPEC §3, in its order.
  const std::pair<int, std::string_view> cases[] = {
      {400, "BAD_REQUEST"},       {401, "UNAUTHORIZED"},        {403, "FORBIDDEN"},
      {404, "NOT_FOUND"},         {408, "REQUEST_TIMEOUT"},     {413, "PAYLOAD_TOO_LARGE"},
      {414, "URI_TOO_LONG"},      {429, "RATE_LIMITED"},        {431, "HEADERS_TOO_LARGE"},
      {502, "BAD_GATEWAY"},       {503, "SERVICE_UNAVAILABLE"}, {504, "GATEWAY_TIMEOUT"},
  };
  for (const auto& [status, code] : cases) EXPECT_EQ(errorCodeFor(status), code) << status;
}

TEST(HttpUtilTest, ErrorCodeForOtherStatusesFallsBackByClass) {
  EXPECT_EQ(errorCodeFor(500), "INTERNAL_ERROR");
  EXPECT_EQ(errorCodeFor(501), "INTERNAL_ERROR");
  EXPECT_EQ(errorCodeFor(405), "BAD_REQUEST");
  EXPECT_EQ(errorCodeFor(418), "BAD_REQUEST");
}

// ---------------------------------------------------------------------------------------
// appendJsonEscaped

// Escapes `raw`, checks that the result is printable ASCII, and parses it back as a JSON
// string; returns what the JSON parser read.
std::string roundTrip(std::string_view raw) {
  std::string escaped;
  appendJsonEscaped(escaped, raw);
  for (unsigned char c : escaped) {
    EXPECT_TRUE(c >= 0x20 && c < 0x7f) << "raw byte " << int(c) << " left in the output";
  }
  nlohmann::json parsed = nlohmann::json::parse("\"" + escaped + "\"", nullptr, false);
  EXPECT_FALSE(parsed.is_discarded()) << escaped;
  return parsed.is_string() ? parsed.get<std::string>() : std::string("<not a string>");
}

TEST(HttpUtilTest, JsonEscapingOfSpecialCharacters) {
  const std::pair<std::string_view, std::string_view> cases[] = {
      {"plain text", "plain text"},
      {"\"quoted\"", "\\\"quoted\\\""},
      {"back\\slash", "back\\\\slash"},
      {"line\nbreak", "line\\nbreak"},
      {"cr\rtab\t", "cr\\rtab\\t"},
      {std::string_view("nul\0!", 5), "nul\\u0000!"},
      {"\x01\x1f\x7f", "\\u0001\\u001f\\u007f"},
      {"/slash/", "/slash/"},
      {"", ""},
  };
  for (const auto& [raw, want] : cases) {
    std::string out = "prefix:";
    appendJsonEscaped(out, raw);
    EXPECT_EQ(out, "prefix:" + std::string(want)) << raw;
  }
}

TEST(HttpUtilTest, JsonEscapingOfEverySingleByteParsesBack) {
  for (int b = 0; b < 256; ++b) {
    std::string raw(1, char(b));
    std::string back = roundTrip(raw);
    if (b < 0x80) {
      EXPECT_EQ(back, raw) << "byte " << b;
    } else {
      // A byte >= 0x80 stands for U+0080..U+00FF: two bytes of UTF-8.
      std::string utf8 = {char(0xc0 | (b >> 6)), char(0x80 | (b & 0x3f))};
      EXPECT_EQ(back, utf8) << "byte " << b;
    }
  }
}

TEST(HttpUtilTest, JsonEscapingOfInvalidUtf8StaysValidJson) {
  // Truncated and overlong sequences, a lone continuation byte, a surrogate's encoding.
  const std::string_view cases[] = {"\xc3", "\xe2\x82", "\xc0\xaf", "\x80", "\xed\xa0\x80",
                                    "ok \xff\xfe end", "caf\xc3\xa9"};
  for (std::string_view raw : cases) {
    std::string back = roundTrip(raw);
    EXPECT_EQ(back.size(), raw.size() * 2 - std::count_if(raw.begin(), raw.end(), [](char c) {
                             return static_cast<unsigned char>(c) < 0x80;
                           }));
  }
}

// ---------------------------------------------------------------------------------------
// formatTimestamp, errorBody

std::string timestamp(uint64_t unix_ms) {
  char out[24];
  formatTimestamp(unix_ms, out);
  return std::string(out, 24);
}

TEST(HttpUtilTest, FormatTimestampOfKnownInstants) {
  const std::pair<uint64_t, std::string_view> cases[] = {
      {1795257000123ull, "2026-11-21T10:30:00.123Z"},  // SPEC §3's example
      {1795257000000ull, "2026-11-21T10:30:00.000Z"},
      {1795257000007ull, "2026-11-21T10:30:00.007Z"},
      {1795257000050ull, "2026-11-21T10:30:00.050Z"},
      {1795257000999ull, "2026-11-21T10:30:00.999Z"},
      {0, "1970-01-01T00:00:00.000Z"},
      {951868799001ull, "2000-02-29T23:59:59.001Z"},
      {2147483648000ull, "2038-01-19T03:14:08.000Z"},  // past 32-bit time_t
      {253402300799999ull, "9999-12-31T23:59:59.999Z"},
  };
  for (const auto& [ms, want] : cases) EXPECT_EQ(timestamp(ms), want) << ms;
}

TEST(HttpUtilTest, FormatTimestampCacheFollowsTheSecond) {
  // The date part is cached per second: alternating seconds must not leak into each other.
  EXPECT_EQ(timestamp(1795257000123ull), "2026-11-21T10:30:00.123Z");
  EXPECT_EQ(timestamp(1795257000456ull), "2026-11-21T10:30:00.456Z");
  EXPECT_EQ(timestamp(1795257001000ull), "2026-11-21T10:30:01.000Z");
  EXPECT_EQ(timestamp(1795257000999ull), "2026-11-21T10:30:00.999Z");
  EXPECT_EQ(timestamp(1795343400000ull), "2026-11-22T10:30:00.000Z");
}

TEST(HttpUtilTest, ErrorBodyIsJsonWithExactlyTheFourSpecFields) {
  std::string body = errorBody("RATE_LIMITED", "Too many requests", "req-1", 1795257000123ull);
  nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
  ASSERT_TRUE(j.is_object()) << body;
  EXPECT_EQ(j.size(), 4u);
  EXPECT_EQ(j.value("error_code", ""), "RATE_LIMITED");
  EXPECT_EQ(j.value("message", ""), "Too many requests");
  EXPECT_EQ(j.value("request_id", ""), "req-1");
  EXPECT_EQ(j.value("timestamp", ""), "2026-11-21T10:30:00.123Z");
}

TEST(HttpUtilTest, ErrorBodyEscapesWhatItIsGiven) {
  const std::string message = "bad \"thing\"\n\\ \x01 \xff";
  const std::string id = "id\"}, \"injected\": \"x";
  std::string body = errorBody("BAD_REQUEST", message, id, 0);
  nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
  ASSERT_TRUE(j.is_object()) << body;
  EXPECT_EQ(j.size(), 4u);
  EXPECT_FALSE(j.contains("injected"));
  EXPECT_EQ(j.value("request_id", ""), id);
  EXPECT_EQ(j.value("message", "").substr(0, 13), message.substr(0, 13));
  EXPECT_EQ(j.value("timestamp", ""), "1970-01-01T00:00:00.000Z");
}

TEST(HttpUtilTest, ErrorBodyWithEmptyRequestId) {
  nlohmann::json j = nlohmann::json::parse(errorBody("NOT_FOUND", "x", "", 0), nullptr, false);
  ASSERT_TRUE(j.is_object());
  EXPECT_TRUE(j.at("request_id").is_string());
  EXPECT_EQ(j.at("request_id"), "");
}

// ---------------------------------------------------------------------------------------
// isHopByHopHeader, forEachToken

TEST(HttpUtilTest, HopByHopHeaders) {
  for (std::string_view name : {"Connection", "keep-alive", "Proxy-Connection", "TE", "Trailer",
                                "Transfer-Encoding", "UPGRADE", "Proxy-Authenticate",
                                "proxy-authorization"}) {
    EXPECT_TRUE(isHopByHopHeader(name)) << name;
  }
  for (std::string_view name : {"Content-Length", "Host", "X-Connection", "Connection-X",
                                "Trailers", "Authorization", "", "te "}) {
    EXPECT_FALSE(isHopByHopHeader(name)) << name;
  }
}

std::vector<std::string> tokens(std::string_view value) {
  std::vector<std::string> out;
  forEachToken(value, [&](std::string_view t) { out.emplace_back(t); });
  return out;
}

TEST(HttpUtilTest, ForEachTokenSplitsOnCommasAndTrims) {
  using V = std::vector<std::string>;
  const std::pair<std::string_view, V> cases[] = {
      {"", V{}},
      {"close", V{"close"}},
      {"keep-alive, Upgrade", V{"keep-alive", "Upgrade"}},
      {" \ta ,\tb\t, c ", V{"a", "b", "c"}},
      {",,a,,", V{"a"}},
      {" , ", V{}},
      {"gzip, chunked", V{"gzip", "chunked"}},
      {"a b, c", V{"a b", "c"}},  // inner spaces are part of the token
  };
  for (const auto& [value, want] : cases) EXPECT_EQ(tokens(value), want) << value;
}

// ---------------------------------------------------------------------------------------
// headIsUnambiguous
//
// The parser leaves names and values as views into the contiguous head: the byte after a
// name is what followed it on the wire. Each case names its fields by the substrings of
// `head` they are, found left to right.

struct HeadCase {
  std::string_view label;
  std::string_view head;  // the header section as received
  std::vector<std::pair<std::string_view, std::string_view>> fields;
  bool unambiguous;
};

HeaderList viewsInto(const std::string& head, const HeadCase& c) {
  HeaderList list;
  size_t cursor = 0;
  for (const auto& [name, value] : c.fields) {
    size_t n = head.find(name, cursor);
    EXPECT_NE(n, std::string::npos) << c.label << ": no '" << name << "'";
    size_t v = head.find(value, n + name.size());
    EXPECT_NE(v, std::string::npos) << c.label << ": no '" << value << "'";
    if (n == std::string::npos || v == std::string::npos) return list;
    list.addRef(std::string_view(head).substr(n, name.size()),
                std::string_view(head).substr(v, value.size()));
    cursor = v + value.size();
  }
  return list;
}

void PrintTo(const HeadCase& c, std::ostream* os) { *os << c.label; }

class HeadIsUnambiguousTest : public ::testing::TestWithParam<HeadCase> {};

TEST_P(HeadIsUnambiguousTest, Verdict) {
  const HeadCase& c = GetParam();
  const std::string head(c.head);  // owned, contiguous, as the input block
  HeaderList list = viewsInto(head, c);
  ASSERT_EQ(list.size(), c.fields.size());
  EXPECT_EQ(headIsUnambiguous(list), c.unambiguous) << c.label;
}

INSTANTIATE_TEST_SUITE_P(
    Heads, HeadIsUnambiguousTest,
    ::testing::Values(
        HeadCase{"plain", "Host: a\r\nX-A: b\r\n\r\n", {{"Host", "a"}, {"X-A", "b"}}, true},
        HeadCase{"no headers", "\r\n", {}, true},
        HeadCase{"empty value", "Host: a\r\nX-E:\r\n\r\n", {{"Host", "a"}, {"X-E", ""}}, true},
        HeadCase{"space before colon", "X-A : b\r\n\r\n", {{"X-A ", "b"}}, false},
        HeadCase{"tab before colon", "X-A\t: b\r\n\r\n", {{"X-A\t", "b"}}, false},
        HeadCase{"te space before colon", "Transfer-Encoding : chunked\r\n\r\n",
                 {{"Transfer-Encoding ", "chunked"}}, false},
        HeadCase{"empty name", "Host: a\r\n: b\r\n\r\n", {{"Host", "a"}, {"", "b"}}, false},
        HeadCase{"obs-fold", "X-A: b\r\n c\r\n\r\n", {{"X-A", "b\r\n c"}}, false},
        HeadCase{"lf in value", "X-A: b\n c\r\n\r\n", {{"X-A", "b\n c"}}, false},
        HeadCase{"cr in value", "X-A: b\r c\r\n\r\n", {{"X-A", "b\r c"}}, false},
        HeadCase{"chunked", "Transfer-Encoding: chunked\r\n\r\n",
                 {{"Transfer-Encoding", "chunked"}}, true},
        HeadCase{"chunked any case", "transfer-encoding: CHUNKED\r\n\r\n",
                 {{"transfer-encoding", "CHUNKED"}}, true},
        HeadCase{"gzip then chunked", "Transfer-Encoding: gzip, chunked\r\n\r\n",
                 {{"Transfer-Encoding", "gzip, chunked"}}, false},
        HeadCase{"chunked twice in one", "Transfer-Encoding: chunked, chunked\r\n\r\n",
                 {{"Transfer-Encoding", "chunked, chunked"}}, false},
        HeadCase{"identity", "Transfer-Encoding: identity\r\n\r\n",
                 {{"Transfer-Encoding", "identity"}}, false},
        HeadCase{"gzip field then chunked field",
                 "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
                 {{"Transfer-Encoding", "gzip"}, {"Transfer-Encoding", "chunked"}}, false},
        HeadCase{"te header is not transfer-encoding", "TE: trailers\r\n\r\n",
                 {{"TE", "trailers"}}, true},
        HeadCase{"content-length", "Content-Length: 5\r\n\r\n", {{"Content-Length", "5"}},
                 true}),
    [](const ::testing::TestParamInfo<HeadCase>& info) {
      std::string name;
      for (char c : info.param.label) name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
      return name;
    });

}  // namespace
}  // namespace gw
