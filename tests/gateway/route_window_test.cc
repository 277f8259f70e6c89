#include "gateway/admin/route_window.h"

#include <gtest/gtest.h>


namespace gw::window {
namespace {

constexpr uint64_t kSecond = 1'000'000'000;
constexpr uint64_t kMs = 1'000'000;
// Far from zero, as a monotonic clock is, so "60 seconds before" is a valid time.
constexpr uint64_t kStart = 1'000'000 * kSecond;

Totals sum(const RouteWindows& w, uint16_t route, uint64_t now_ns) {
  Totals t;
  w.sumInto(route, now_ns, t);
  return t;
}

TEST(RouteWindow, BucketsAreHalfOctavesThatHoldTheirValues) {
  EXPECT_EQ(latencyBucket(0), 0u);
  EXPECT_EQ(latencyBucket(999), 0u);
  for (uint64_t us : {1ull, 2ull, 3ull, 5ull, 999ull, 1000ull, 1499ull, 1500ull, 250'000ull, 7'000'000ull}) {
    size_t b = latencyBucket(us * 1000);
    EXPECT_LE(bucketLowerMs(b), double(us) / 1000) << us;
    EXPECT_GT(bucketUpperMs(b), double(us) / 1000) << us;
  }
  EXPECT_EQ(latencyBucket(uint64_t(3600) * kSecond), kLatencyBuckets - 1);
}

TEST(RouteWindow, CountsRequestsErrorsAndRefusalsPerRoute) {
  RouteWindows w;
  for (int i = 0; i < 10; ++i) w.record(7, kStart, {2 * kMs, i < 3, i == 0});
  w.record(8, kStart, {kMs, false, false});
  Totals t = sum(w, 7, kStart);
  EXPECT_EQ(t.requests, 10u);
  EXPECT_EQ(t.errors, 3u);
  EXPECT_EQ(t.rate_limited, 1u);
  EXPECT_EQ(sum(w, 8, kStart).requests, 1u);
  EXPECT_EQ(sum(w, 9, kStart).requests, 0u);  // never seen: no ring, no counts
}

TEST(RouteWindow, KeepsTheLastMinuteOnly) {
  RouteWindows w;
  w.record(1, kStart, {kMs, false, false});
  w.record(1, kStart + 30 * kSecond, {kMs, true, false});
  EXPECT_EQ(sum(w, 1, kStart + 59 * kSecond).requests, 2u);
  Totals later = sum(w, 1, kStart + 60 * kSecond);  // the first second has left the window
  EXPECT_EQ(later.requests, 1u);
  EXPECT_EQ(later.errors, 1u);
  EXPECT_EQ(sum(w, 1, kStart + 100 * kSecond).requests, 0u);
}

TEST(RouteWindow, ARecycledSlotForgetsItsOldSecond) {
  RouteWindows w;
  w.record(1, kStart, {kMs, true, true});
  // The same slot, one ring later.
  w.record(1, kStart + kRingSeconds * kSecond, {kMs, false, false});
  Totals t = sum(w, 1, kStart + kRingSeconds * kSecond);
  EXPECT_EQ(t.requests, 1u);
  EXPECT_EQ(t.errors, 0u);
  EXPECT_EQ(t.rate_limited, 0u);
}

TEST(RouteWindow, QuantilesComeFromTheLatencies) {
  RouteWindows w;
  for (int i = 0; i < 98; ++i) w.record(1, kStart, {10 * kMs, false, false});
  for (int i = 0; i < 2; ++i) w.record(1, kStart, {900 * kMs, false, false});
  Totals t = sum(w, 1, kStart);
  EXPECT_NEAR(t.quantileMs(0.5), 10, 2.5);
  EXPECT_NEAR(t.quantileMs(0.99), 900, 225);
  EXPECT_EQ(Totals{}.quantileMs(0.5), 0);
}

}  // namespace
}  // namespace gw::window
