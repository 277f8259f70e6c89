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

// nlohmann's dump() refuses ill-formed UTF-8: an oracle written by someone else.
bool isValidUtf8(const std::string& s) {
  try {
    (void)nlohmann::json(s).dump();
    return true;
  } catch (const nlohmann::json::exception&) {
    return false;
  }
}

// Escapes `raw`, checks that the result is valid UTF-8 with no raw control character (so
// one log line stays one line whatever the input), and parses it back as a JSON string;
// returns what the JSON parser read.
std::string roundTrip(std::string_view raw) {
  std::string escaped;
  appendJsonEscaped(escaped, raw);
  EXPECT_TRUE(isValidUtf8(escaped)) << "ill-formed UTF-8 left in the output: " << escaped;
  for (unsigned char c : escaped) {
    EXPECT_TRUE(c >= 0x20 && c != 0x7f) << "raw control byte " << int(c) << " in the output";
  }
  nlohmann::json parsed = nlohmann::json::parse("\"" + escaped + "\"", nullptr, false);
  EXPECT_FALSE(parsed.is_discarded()) << escaped;
  return parsed.is_string() ? parsed.get<std::string>() : std::string("<not a string>");
}

std::string escaped(std::string_view raw) {
  std::string out;
  appendJsonEscaped(out, raw);
  return out;
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

TEST(HttpUtilTest, JsonEscapingPassesWellFormedUtf8Through) {
  // 2, 3 and 4 bytes, and the edges of Unicode's Table 3-7 (the first and last code point of
  // each row): written as they are, not byte by byte.
  const std::string_view cases[] = {
      "Jos\xc3\xa9",                  // é
      "\xe6\x97\xa5\xe6\x9c\xac",     // 日本
      "\xf0\x9f\x98\x80",             // 😀
      "Jos\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80",
      "\xc2\xa0", "\xdf\xbf",         // U+00A0, U+07FF
      "\xe0\xa0\x80", "\xe0\xbf\xbf", // U+0800, U+0FFF
      "\xe1\x80\x80", "\xec\xbf\xbf", // U+1000, U+CFFF
      "\xed\x80\x80", "\xed\x9f\xbf", // U+D000, U+D7FF (the last before the surrogates)
      "\xee\x80\x80", "\xef\xbf\xbf", // U+E000, U+FFFF
      "\xef\xbf\xbd",                 // U+FFFD sent by the client is kept as it is
      "\xf0\x90\x80\x80", "\xf0\xbf\xbf\xbf",  // U+10000, U+3FFFF
      "\xf1\x80\x80\x80", "\xf3\xbf\xbf\xbf",  // U+40000, U+FFFFF
      "\xf4\x80\x80\x80", "\xf4\x8f\xbf\xbf",  // U+100000, U+10FFFF
  };
  for (std::string_view raw : cases) {
    EXPECT_EQ(escaped(raw), raw);
    EXPECT_EQ(roundTrip(raw), raw);
  }
}

TEST(HttpUtilTest, JsonEscapingReplacesIllFormedUtf8) {
  // Each maximal subpart of an ill-formed sequence becomes one \ufffd (Unicode §3.9, as
  // browsers and Python's errors="replace" decode), written as an escape so that the raw
  // line tells a substitution from a U+FFFD the client sent.
  const std::pair<std::string_view, std::string_view> cases[] = {
      // overlong encodings
      {"\xc0\xaf", "\\ufffd\\ufffd"},
      {"\xc1\xbf", "\\ufffd\\ufffd"},
      {"\xe0\x80\xaf", "\\ufffd\\ufffd\\ufffd"},
      {"\xe0\x9f\xbf", "\\ufffd\\ufffd\\ufffd"},
      {"\xf0\x80\x80\xaf", "\\ufffd\\ufffd\\ufffd\\ufffd"},
      {"\xf0\x8f\xbf\xbf", "\\ufffd\\ufffd\\ufffd\\ufffd"},
      // surrogates D800-DFFF encoded in UTF-8 (CESU-8 style pairs too)
      {"\xed\xa0\x80", "\\ufffd\\ufffd\\ufffd"},
      {"\xed\xbf\xbf", "\\ufffd\\ufffd\\ufffd"},
      {"\xed\xa0\xbd\xed\xb8\x80", "\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd"},
      // truncated sequences: the valid prefix is one subpart
      {"\xc3", "\\ufffd"},
      {"\xe2\x82", "\\ufffd"},
      {"\xf0\x9f\x98", "\\ufffd"},
      {"caf\xc3", "caf\\ufffd"},
      {"\xe2\x82x", "\\ufffdx"},
      {"\xf0\x9f\x98 ok", "\\ufffd ok"},
      {"\xc3\xc3\xa9", "\\ufffd\xc3\xa9"},
      {"\xf0\x9f\x98\"", "\\ufffd\\\""},
      // bytes that never start a sequence, and beyond U+10FFFF
      {"\xf5\x80\x80\x80", "\\ufffd\\ufffd\\ufffd\\ufffd"},
      {"\xf8\x88\x80\x80\x80", "\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd"},
      {"\xff", "\\ufffd"},
      {"\xfe\xff", "\\ufffd\\ufffd"},
      {"\xf4\x90\x80\x80", "\\ufffd\\ufffd\\ufffd\\ufffd"},
      // lone continuation bytes
      {"\x80", "\\ufffd"},
      {"\xbf", "\\ufffd"},
      {"a\x80\x80z", "a\\ufffd\\ufffdz"},
      {"\xc3\xa9\xa9", "\xc3\xa9\\ufffd"},
  };
  for (const auto& [raw, want] : cases) {
    EXPECT_EQ(escaped(raw), want);
    roundTrip(raw);
  }
}

TEST(HttpUtilTest, JsonEscapingOfControlCodePoints) {
  // C0, DEL and C1 controls and the Unicode line and paragraph separators are escaped as
  // code points: a log viewer must not see a line break or a terminal escape in a value.
  const std::pair<std::string_view, std::string_view> cases[] = {
      {"\x1b[31m", "\\u001b[31m"},
      {"\xc2\x80", "\\u0080"},
      {"\xc2\x85", "\\u0085"},
      {"\xc2\x9b" "31m", "\\u009b31m"},
      {"\xc2\x9f", "\\u009f"},
      {"a\xe2\x80\xa8z", "a\\u2028z"},
      {"\xe2\x80\xa9", "\\u2029"},
  };
  for (const auto& [raw, want] : cases) {
    EXPECT_EQ(escaped(raw), want);
    EXPECT_EQ(roundTrip(raw), raw);
  }
}

TEST(HttpUtilTest, JsonEscapingOfEveryOneAndTwoByteStringIsValid) {
  // Whatever the bytes: valid JSON, valid UTF-8, and well-formed input read back unchanged.
  for (int a = 0; a < 256; ++a) {
    std::string one(1, char(a));
    std::string back = roundTrip(one);
    if (a < 0x80) EXPECT_EQ(back, one) << "byte " << a;
    else EXPECT_EQ(back, "\xef\xbf\xbd") << "byte " << a;
    for (int b = 0; b < 256; ++b) {
      std::string two = {char(a), char(b)};
      back = roundTrip(two);
      if (isValidUtf8(two)) EXPECT_EQ(back, two) << a << " " << b;
      else EXPECT_NE(back.find("\xef\xbf\xbd"), std::string::npos) << a << " " << b;
    }
  }
}

TEST(HttpUtilTest, JsonEscapingOfLongerSequencesAgreesWithAnIndependentValidator) {
  // Every lead byte from C0, then two bytes from a set that covers each boundary of Table
  // 3-7 and a fourth that ends, continues or restarts a sequence: well-formed input comes
  // back as it was, ill-formed never does.
  const unsigned char edges[] = {0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0,
                                 0xbf, 0xc0, 0xc2, 0xe0, 0xed, 0xf0, 0xf4, 0xff};
  const unsigned char last[] = {0x41, 0x80, 0xbf, 0xc2};
  for (int lead = 0xc0; lead < 0x100; ++lead) {
    for (unsigned char b : edges) {
      for (unsigned char c : edges) {
        for (unsigned char d : last) {
          std::string raw = {char(lead), char(b), char(c), char(d)};
          std::string back = roundTrip(raw);
          if (isValidUtf8(raw)) EXPECT_EQ(back, raw);
          else EXPECT_NE(back, raw);
        }
      }
    }
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

TEST(HttpUtilTest, ErrorBodyKeepsUnicodeAndReplacesIllFormedBytes) {
  std::string body = errorBody("BAD_REQUEST", "caf\xc3\xa9 \xe6\x97\xa5 \xff", "r", 0);
  EXPECT_TRUE(isValidUtf8(body)) << body;
  nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
  ASSERT_TRUE(j.is_object()) << body;
  EXPECT_EQ(j.value("message", ""), "caf\xc3\xa9 \xe6\x97\xa5 \xef\xbf\xbd");
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

// headIsUnambiguous leaves line breaks to the raw scan (they are found once for the whole
// head, not per value): the two together are the verdict.
TEST_P(HeadIsUnambiguousTest, Verdict) {
  const HeadCase& c = GetParam();
  const std::string head = "GET / HTTP/1.1\r\n" + std::string(c.head);  // contiguous, as the block
  HeaderList list = viewsInto(head, c);
  ASSERT_EQ(list.size(), c.fields.size());
  bool strict = rawHeadIsStrict(head.data(), head.data() + head.size());
  EXPECT_EQ(headIsUnambiguous(list) && strict, c.unambiguous) << c.label;
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
