// traceparent parsing against every malformed form of the W3C Trace Context test suite
// (w3c/trace-context test/test.py), and formatting.
#include "gateway/tracing/trace_context.h"

#include <gtest/gtest.h>

#include <string>

namespace gw::tracing {
namespace {

const std::string kTrace = "0af7651916cd43dd8448eb211c80319c";
const std::string kSpan = "b7ad6b7169203331";

std::string tp(const std::string& version, const std::string& trace, const std::string& span,
               const std::string& flags) {
  return version + "-" + trace + "-" + span + "-" + flags;
}

std::string hex(const uint8_t* b, size_t n) {
  std::string out(2 * n, '?');
  toHex(b, n, out.data());
  return out;
}

TEST(TraceParentTest, ReadsVersion00) {
  auto p = parseTraceParent(tp("00", kTrace, kSpan, "01"));
  ASSERT_TRUE(p);
  EXPECT_EQ(hex(p->trace_id, 16), kTrace);
  EXPECT_EQ(hex(p->parent_id, 8), kSpan);
  EXPECT_EQ(p->flags, 0x01);
  p = parseTraceParent(tp("00", kTrace, kSpan, "00"));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->flags, 0x00);
  // Flags the spec does not define yet are kept as they came.
  p = parseTraceParent(tp("00", kTrace, kSpan, "ff"));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->flags, 0xff);
}

TEST(TraceParentTest, RefusesBadVersions) {
  for (const char* v : {"ff", "0", "000", "0g", "AA", "0A", "-0", "  "}) {
    EXPECT_FALSE(parseTraceParent(std::string(v) + "-" + kTrace + "-" + kSpan + "-01")) << v;
  }
}

TEST(TraceParentTest, Version00TakesNothingAfterTheFlags) {
  EXPECT_FALSE(parseTraceParent(tp("00", kTrace, kSpan, "01") + "."));
  EXPECT_FALSE(parseTraceParent(tp("00", kTrace, kSpan, "01") + "-"));
  EXPECT_FALSE(parseTraceParent(tp("00", kTrace, kSpan, "01") + "-what-the-future-will-be-like"));
}

TEST(TraceParentTest, LaterVersionsMayAddFieldsAfterADash) {
  auto p = parseTraceParent(tp("cc", kTrace, kSpan, "01") + "-what-the-future-will-be-like");
  ASSERT_TRUE(p);
  EXPECT_EQ(hex(p->trace_id, 16), kTrace);
  EXPECT_EQ(hex(p->parent_id, 8), kSpan);
  EXPECT_TRUE(parseTraceParent(tp("cc", kTrace, kSpan, "01")));
  EXPECT_FALSE(parseTraceParent(tp("cc", kTrace, kSpan, "01") + ".what-the-future-will-be-like"));
  // Still at least version 00's fields, each of its length.
  EXPECT_FALSE(parseTraceParent(tp("cc", kTrace, kSpan, "0")));
  EXPECT_FALSE(parseTraceParent(tp("cc", kTrace + "0", kSpan, "01")));
}

TEST(TraceParentTest, RefusesAllZeroIds) {
  EXPECT_FALSE(parseTraceParent(tp("00", std::string(32, '0'), kSpan, "01")));
  EXPECT_FALSE(parseTraceParent(tp("00", kTrace, std::string(16, '0'), "01")));
  // One non-zero digit is enough.
  EXPECT_TRUE(parseTraceParent(tp("00", std::string(31, '0') + "1", kSpan, "01")));
  EXPECT_TRUE(parseTraceParent(tp("00", kTrace, std::string(15, '0') + "1", "01")));
}

TEST(TraceParentTest, RefusesWrongLengths) {
  EXPECT_FALSE(parseTraceParent(tp("00", kTrace.substr(1), kSpan, "01")));
  EXPECT_FALSE(parseTraceParent(tp("00", kTrace + "0", kSpan, "01")));
  EXPECT_FALSE(parseTraceParent(tp("00", kTrace, kSpan.substr(1), "01")));
  EXPECT_FALSE(parseTraceParent(tp("00", kTrace, kSpan + "0", "01")));
  EXPECT_FALSE(parseTraceParent(tp("00", kTrace, kSpan, "1")));
  EXPECT_FALSE(parseTraceParent(tp("00", kTrace, kSpan, "011")));
  EXPECT_FALSE(parseTraceParent(""));
  EXPECT_FALSE(parseTraceParent("00"));
  EXPECT_FALSE(parseTraceParent(tp("00", kTrace, kSpan, "")));
  // The right total length, the fields shifted.
  EXPECT_FALSE(parseTraceParent("00-" + kTrace.substr(1) + "-" + kSpan + "0-01"));
  EXPECT_FALSE(parseTraceParent("00-" + kTrace + "0" + kSpan.substr(1) + "-01"));
}

TEST(TraceParentTest, RefusesAnythingButLowerCaseHex) {
  std::string upper = kTrace;
  upper[0] = 'A';
  EXPECT_FALSE(parseTraceParent(tp("00", upper, kSpan, "01")));
  EXPECT_FALSE(parseTraceParent(tp("00", kTrace, "B7AD6B7169203331", "01")));
  EXPECT_FALSE(parseTraceParent(tp("00", kTrace, kSpan, "0A")));
  for (char bad : {'g', 'z', '.', ' ', '-', '+', '\0', '\xff'}) {
    std::string t = kTrace;
    t[7] = bad;
    EXPECT_FALSE(parseTraceParent(tp("00", t, kSpan, "01"))) << int(bad);
    std::string s = kSpan;
    s[3] = bad;
    EXPECT_FALSE(parseTraceParent(tp("00", kTrace, s, "01"))) << int(bad);
    std::string f = "0";
    f += bad;
    EXPECT_FALSE(parseTraceParent(tp("00", kTrace, kSpan, f))) << int(bad);
  }
}

TEST(TraceParentTest, RefusesOtherSeparators) {
  std::string good = tp("00", kTrace, kSpan, "01");
  for (size_t at : {2u, 35u, 52u}) {
    std::string bad = good;
    bad[at] = '_';
    EXPECT_FALSE(parseTraceParent(bad)) << at;
  }
  // Surrounding whitespace is the HTTP parser's to remove, not part of the value.
  EXPECT_FALSE(parseTraceParent(" " + good));
  EXPECT_FALSE(parseTraceParent(good + " "));
}

TEST(TraceParentTest, FormatsVersion00) {
  uint8_t trace[16], span[8];
  for (int i = 0; i < 16; ++i) trace[i] = uint8_t(0xf0 + i);
  for (int i = 0; i < 8; ++i) span[i] = uint8_t(i);
  char out[kTraceParentSize];
  formatTraceParent(trace, span, 0x01, out);
  std::string text(out, kTraceParentSize);
  EXPECT_EQ(text, "00-f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff-0001020304050607-01");
  auto back = parseTraceParent(text);
  ASSERT_TRUE(back);
  EXPECT_EQ(hex(back->trace_id, 16), "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
  EXPECT_EQ(back->flags, 0x01);
}

}  // namespace
}  // namespace gw::tracing
