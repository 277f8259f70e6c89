#include "gateway/upstream/retry_budget.h"

#include <gtest/gtest.h>

namespace gw {
namespace {

// Every request fails and asks for a retry; returns how many were granted.
uint32_t failEvery(RetryBudget& b, uint64_t from_ms, uint64_t to_ms, uint64_t step_ms) {
  uint32_t granted = 0;
  for (uint64_t t = from_ms; t < to_ms; t += step_ms) {
    b.countRequest(t);
    granted += b.takeRetry(t) ? 1 : 0;
  }
  return granted;
}

TEST(RetryBudgetTest, AQuietUpstreamAlwaysRetries) {
  RetryBudget b;
  // Five requests a second for a minute: every one retried.
  EXPECT_EQ(failEvery(b, 1'000'000, 1'060'000, 200), 300u);
}

TEST(RetryBudgetTest, UnderLoadRetriesStayNearAFifth) {
  RetryBudget b;
  // 1,000 requests a second for 30 s: once the window is full, a fifth of 10,000 plus the
  // floor of 100 per 10 s.
  uint32_t first = failEvery(b, 5'000'000, 5'010'000, 1);
  EXPECT_LE(first, 10'000u * 20 / 100 + 100);
  uint32_t later = failEvery(b, 5'010'000, 5'030'000, 1);
  EXPECT_GE(later, 20'000u * 20 / 100 - 100);
  EXPECT_LE(later, 20'000u * 20 / 100 + 200);
}

TEST(RetryBudgetTest, AnExhaustedBudgetRefillsAsTheWindowSlides) {
  RetryBudget b;
  uint64_t t = 9'000'000;
  uint32_t granted = 0;
  while (b.takeRetry(t)) ++granted;  // no requests at all: the floor alone
  EXPECT_EQ(granted, 100u);
  EXPECT_FALSE(b.takeRetry(t + 9'000));   // still in the window
  EXPECT_TRUE(b.takeRetry(t + 10'000));   // that second has left it
}

TEST(RetryBudgetTest, TheFloorIsSharedByTheWorkers) {
  RetryBudget b(4);
  uint32_t granted = 0;
  while (b.takeRetry(1'000)) ++granted;
  EXPECT_EQ(granted, 25u);
}

}  // namespace
}  // namespace gw
