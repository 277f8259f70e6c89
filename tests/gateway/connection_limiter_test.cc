#include "gateway/connection_limiter.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

namespace gw {
namespace {

using Verdict = ConnectionLimiter::Verdict;

struct Addr {
  uint8_t ip[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 0};
  explicit Addr(uint16_t n) {
    ip[14] = uint8_t(n >> 8);
    ip[15] = uint8_t(n);
  }
};

// One admitted connection, released when the test says so.
struct Held {
  Addr addr;
  bool per_address;
};

TEST(ConnectionLimiterTest, UnlimitedByDefault) {
  ConnectionLimiter limiter;
  Addr a(1);
  std::vector<bool> per(1000);
  for (size_t i = 0; i < per.size(); ++i) {
    bool p = true;
    ASSERT_EQ(limiter.admit(a.ip, &p), Verdict::Admitted);
    EXPECT_FALSE(p);  // no per-address limit: nothing tracked
    per[i] = p;
  }
  EXPECT_EQ(limiter.total(), 1000u);
  EXPECT_EQ(limiter.trackedAddresses(), 0u);
  for (bool p : per) limiter.release(a.ip, p);
  EXPECT_EQ(limiter.total(), 0u);
}

TEST(ConnectionLimiterTest, TotalLimitRefusesBeyondItAndAdmitsAgainAfterARelease) {
  ConnectionLimiter limiter;
  limiter.setLimits(3, 0);
  std::vector<Held> held;
  for (uint16_t i = 0; i < 3; ++i) {
    Held h{Addr(i), false};
    ASSERT_EQ(limiter.admit(h.addr.ip, &h.per_address), Verdict::Admitted) << i;
    held.push_back(h);
  }
  Addr other(99);
  bool per = true;
  EXPECT_EQ(limiter.admit(other.ip, &per), Verdict::TooMany);
  EXPECT_FALSE(per);
  EXPECT_EQ(limiter.total(), 3u);  // a refusal leaves no count behind
  limiter.release(held.back().addr.ip, held.back().per_address);
  held.pop_back();
  EXPECT_EQ(limiter.admit(other.ip, &per), Verdict::Admitted);
  EXPECT_EQ(limiter.total(), 3u);
}

TEST(ConnectionLimiterTest, PerAddressLimitCountsEachAddressApart) {
  ConnectionLimiter limiter;
  limiter.setLimits(0, 2);  // 0: no total limit
  Addr a(1);
  Addr b(2);
  bool pa1 = false, pa2 = false, pa3 = true, pb = false;
  EXPECT_EQ(limiter.admit(a.ip, &pa1), Verdict::Admitted);
  EXPECT_EQ(limiter.admit(a.ip, &pa2), Verdict::Admitted);
  EXPECT_TRUE(pa1 && pa2);
  EXPECT_EQ(limiter.admit(a.ip, &pa3), Verdict::TooManyFromAddress);
  EXPECT_FALSE(pa3);
  EXPECT_EQ(limiter.admit(b.ip, &pb), Verdict::Admitted);
  EXPECT_EQ(limiter.total(), 3u);
  EXPECT_EQ(limiter.trackedAddresses(), 2u);
  limiter.release(a.ip, pa1);
  EXPECT_EQ(limiter.admit(a.ip, &pa3), Verdict::Admitted);  // room again for a
  EXPECT_EQ(limiter.total(), 3u);
}

TEST(ConnectionLimiterTest, TotalLimitIsCheckedBeforeThePerAddressOne) {
  ConnectionLimiter limiter;
  limiter.setLimits(1, 5);
  Addr a(1);
  bool p1 = false, p2 = true;
  EXPECT_EQ(limiter.admit(a.ip, &p1), Verdict::Admitted);
  EXPECT_EQ(limiter.admit(a.ip, &p2), Verdict::TooMany);
  EXPECT_EQ(limiter.trackedAddresses(), 1u);
  limiter.release(a.ip, p1);
  EXPECT_EQ(limiter.trackedAddresses(), 0u);
}

TEST(ConnectionLimiterTest, ReleaseForgetsAddressesWithNoConnectionLeft) {
  ConnectionLimiter limiter;
  limiter.setLimits(0, 10);
  std::vector<Held> held;
  for (uint16_t i = 0; i < 300; ++i) {
    for (int k = 0; k < 2; ++k) {
      Held h{Addr(i), false};
      ASSERT_EQ(limiter.admit(h.addr.ip, &h.per_address), Verdict::Admitted);
      held.push_back(h);
    }
  }
  EXPECT_EQ(limiter.trackedAddresses(), 300u);
  // Lowered to what each address holds: a refusal changes no count.
  limiter.setLimits(0, 2);
  Addr a(7);
  bool p = false;
  EXPECT_EQ(limiter.admit(a.ip, &p), Verdict::TooManyFromAddress);
  EXPECT_EQ(limiter.trackedAddresses(), 300u);
  for (size_t i = 0; i < held.size(); i += 2) limiter.release(held[i].addr.ip, held[i].per_address);
  EXPECT_EQ(limiter.trackedAddresses(), 300u);  // one connection left each
  for (size_t i = 1; i < held.size(); i += 2) limiter.release(held[i].addr.ip, held[i].per_address);
  EXPECT_EQ(limiter.trackedAddresses(), 0u);
  EXPECT_EQ(limiter.total(), 0u);
}

TEST(ConnectionLimiterTest, LimitsChangeAtRuntime) {
  ConnectionLimiter limiter;
  limiter.setLimits(2, 0);
  Addr a(1);
  Held h1{a, false}, h2{a, false};
  ASSERT_EQ(limiter.admit(a.ip, &h1.per_address), Verdict::Admitted);
  ASSERT_EQ(limiter.admit(a.ip, &h2.per_address), Verdict::Admitted);
  bool p = false;
  EXPECT_EQ(limiter.admit(a.ip, &p), Verdict::TooMany);

  // Raised: admitted again.
  limiter.setLimits(4, 0);
  Held h3{a, false};
  EXPECT_EQ(limiter.admit(a.ip, &h3.per_address), Verdict::Admitted);

  // A per-address limit turned on: connections admitted before it are not tracked (and
  // their release must not count anything down), new ones are.
  limiter.setLimits(10, 1);
  Held h4{Addr(2), false};
  EXPECT_EQ(limiter.admit(h4.addr.ip, &h4.per_address), Verdict::Admitted);
  EXPECT_TRUE(h4.per_address);
  EXPECT_EQ(limiter.admit(h4.addr.ip, &p), Verdict::TooManyFromAddress);
  EXPECT_EQ(limiter.trackedAddresses(), 1u);
  limiter.release(a.ip, h1.per_address);
  limiter.release(a.ip, h2.per_address);
  limiter.release(a.ip, h3.per_address);
  EXPECT_EQ(limiter.trackedAddresses(), 1u);
  EXPECT_EQ(limiter.total(), 1u);

  // Turned off again: the tracked connection is still counted down on release.
  limiter.setLimits(10, 0);
  limiter.release(h4.addr.ip, h4.per_address);
  EXPECT_EQ(limiter.trackedAddresses(), 0u);
  EXPECT_EQ(limiter.total(), 0u);

  // Lowered below the current count: existing connections stay, new ones are refused.
  limiter.setLimits(3, 0);
  std::vector<Held> held(3, Held{a, false});
  for (auto& h : held) ASSERT_EQ(limiter.admit(a.ip, &h.per_address), Verdict::Admitted);
  limiter.setLimits(1, 0);
  EXPECT_EQ(limiter.admit(a.ip, &p), Verdict::TooMany);
  EXPECT_EQ(limiter.total(), 3u);
  for (auto& h : held) limiter.release(a.ip, h.per_address);
  EXPECT_EQ(limiter.admit(a.ip, &p), Verdict::Admitted);
}

TEST(ConnectionLimiterTest, ConcurrentAdmitAndReleaseKeepCountsExact) {
  ConnectionLimiter limiter;
  constexpr uint64_t kTotal = 64;
  constexpr uint64_t kPerAddress = 3;
  constexpr int kAddresses = 32;  // 32 x 3 > 64: both limits bind at times
  limiter.setLimits(kTotal, kPerAddress);
  constexpr int kThreads = 4;
  constexpr int kRounds = 20000;
  // What the threads hold, counted after admit() and before release(): never more than
  // the limiter itself counts, so never more than the limits.
  std::atomic<int64_t> holding{0};
  std::atomic<int64_t> holding_per[kAddresses] = {};
  std::atomic<uint64_t> admitted{0}, refused_total{0}, refused_address{0};
  std::atomic<bool> over_limit{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::pair<int, Held>> mine;
      uint32_t x = 12345u + uint32_t(t) * 7919u;
      for (int i = 0; i < kRounds; ++i) {
        x = x * 1103515245u + 12345u;
        int n = int((x >> 16) % kAddresses);
        if (mine.size() < 32 && (x >> 8) % 3 != 0) {
          Held h{Addr(uint16_t(n)), false};
          Verdict v = limiter.admit(h.addr.ip, &h.per_address);
          if (v == Verdict::Admitted) {
            admitted.fetch_add(1, std::memory_order_relaxed);
            if (holding.fetch_add(1) + 1 > int64_t(kTotal)) over_limit = true;
            if (holding_per[n].fetch_add(1) + 1 > int64_t(kPerAddress)) over_limit = true;
            if (!h.per_address) over_limit = true;
            mine.emplace_back(n, h);
          } else if (v == Verdict::TooMany) {
            refused_total.fetch_add(1, std::memory_order_relaxed);
          } else {
            refused_address.fetch_add(1, std::memory_order_relaxed);
          }
        } else if (!mine.empty()) {
          size_t pick = x % mine.size();  // not LIFO: releases interleave across addresses
          auto [m, h] = mine[pick];
          mine[pick] = mine.back();
          mine.pop_back();
          holding.fetch_sub(1);
          holding_per[m].fetch_sub(1);
          limiter.release(h.addr.ip, h.per_address);
        }
      }
      for (const auto& [m, h] : mine) {
        holding.fetch_sub(1);
        holding_per[m].fetch_sub(1);
        limiter.release(h.addr.ip, h.per_address);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_FALSE(over_limit.load());
  EXPECT_GT(admitted.load(), 0u);
  EXPECT_GT(refused_total.load() + refused_address.load(), 0u);  // the limits were reached
  EXPECT_EQ(limiter.total(), 0u);
  EXPECT_EQ(limiter.trackedAddresses(), 0u);
  // And the limiter still works at its limits afterwards.
  std::vector<Held> held;
  Addr a(1);
  for (uint64_t i = 0; i < kPerAddress; ++i) {
    Held h{a, false};
    ASSERT_EQ(limiter.admit(a.ip, &h.per_address), Verdict::Admitted);
    held.push_back(h);
  }
  bool p = false;
  EXPECT_EQ(limiter.admit(a.ip, &p), Verdict::TooManyFromAddress);
  for (const Held& h : held) limiter.release(h.addr.ip, h.per_address);
}

}  // namespace
}  // namespace gw
