#include <gtest/gtest.h>

#include "gateway/tracing/exporter.h"

namespace gw::tracing {
namespace {

constexpr int64_t kNow = 1784300000;  // Fri, 17 Jul 2026 14:53:20 GMT

TEST(RetryAfterTest, Seconds) {
  EXPECT_EQ(retryAfterMs("2", kNow), 2000u);
  EXPECT_EQ(retryAfterMs(" 0 ", kNow), 0u);
  EXPECT_EQ(retryAfterMs("60", kNow), 60000u);
  // A collector cannot park the exporter for an hour, nor overflow the arithmetic.
  EXPECT_EQ(retryAfterMs("3600", kNow), kMaxRetryAfterMs);
  EXPECT_EQ(retryAfterMs("99999999999999999999999", kNow), kMaxRetryAfterMs);
}

TEST(RetryAfterTest, HttpDate) {
  EXPECT_EQ(retryAfterMs("Fri, 17 Jul 2026 14:53:25 GMT", kNow), 5000u);
  EXPECT_EQ(retryAfterMs("Fri, 17 Jul 2026 14:53:20 GMT", kNow), 0u);
  EXPECT_EQ(retryAfterMs("Thu, 01 Jan 2026 00:00:00 GMT", kNow), 0u);  // past
  EXPECT_EQ(retryAfterMs("Fri, 17 Jul 2026 16:00:00 GMT", kNow), kMaxRetryAfterMs);
}

TEST(RetryAfterTest, AnythingElseMeansTheBackoff) {
  for (const char* bad : {"", "  ", "-1", "1.5", "soon", "2s", "Fri, 17 Jul 2026 14:53:25",
                          "Fri, 17 Jul 2026 14:53:25 GMT junk"}) {
    EXPECT_FALSE(retryAfterMs(bad, kNow).has_value()) << bad;
  }
}

}  // namespace
}  // namespace gw::tracing
