// The GCRA arithmetic and the bounded, sharded table of the memory store.
#include "filters/rate_limit/bucket_table.h"

#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "filters/rate_limit/key_hash.h"
#include "filters/rate_limit/token_bucket.h"

namespace gw::rate_limit {
namespace {

constexpr int64_t kSecond = 1'000'000'000;

TEST(TokenBucketTest, GcraCountsExactly) {
  Rate rate = makeRate(5, 3600 * uint64_t(kSecond), 5);
  EXPECT_EQ(rate.interval, 720 * kSecond);
  EXPECT_EQ(rate.window, 3600 * kSecond);
  int64_t now = 1000 * kSecond;
  int64_t state = 0;  // no bucket: full
  for (int i = 0; i < 5; ++i) {
    TakeResult r = gcraTake(state, rate, now, true);
    ASSERT_TRUE(r.conforms) << i;
    EXPECT_EQ(r.remaining, 4 - i);
    state = r.full_at;
  }
  TakeResult refused = gcraTake(state, rate, now, true);
  EXPECT_FALSE(refused.conforms);
  EXPECT_EQ(refused.full_at, state);  // a refusal changes nothing
  EXPECT_EQ(refused.retry, 720 * kSecond);
  EXPECT_EQ(refused.reset, 3600 * kSecond);
  EXPECT_TRUE(gcraTake(state, rate, now + 720 * kSecond, true).conforms);
  // Full again after the window: the same as no bucket.
  EXPECT_LE(state, now + rate.window);
}

TEST(TokenBucketTest, RatesAreClamped) {
  Rate fast = makeRate(4'000'000'000u, 1'000'000, 1);  // 4e9 per ms: capped at 1 per ns
  EXPECT_EQ(fast.interval, 1);
  Rate slow = makeRate(1, uint64_t(1) << 62, 4'000'000'000u);
  EXPECT_EQ(slow.interval, kMaxSpan);
  EXPECT_EQ(slow.window, kMaxSpan);
  TakeResult r = gcraTake(0, slow, 5 * kSecond, true);
  EXPECT_TRUE(r.conforms);
  EXPECT_FALSE(gcraTake(r.full_at, slow, 5 * kSecond, true).conforms);
}

TEST(BucketTableTest, TakeRefundAndExpiry) {
  BucketTable table(4096);
  Rate rate = makeRate(2, uint64_t(kSecond), 2);
  int64_t now = 50 * kSecond;
  uint64_t key = hashText("client", 1);
  EXPECT_TRUE(table.take(key, rate, now).conforms);
  EXPECT_TRUE(table.take(key, rate, now).conforms);
  EXPECT_FALSE(table.take(key, rate, now).conforms);
  table.refund(key, rate);
  EXPECT_TRUE(table.take(key, rate, now).conforms);
  EXPECT_EQ(table.size(), 1u);
  // A look (take = false) never creates a bucket.
  EXPECT_TRUE(table.take(hashText("other", 1), rate, now, false).conforms);
  EXPECT_EQ(table.size(), 1u);
}

TEST(BucketTableTest, RefilledBucketsAreReclaimed) {
  BucketTable table;
  Rate rate = makeRate(1, uint64_t(kSecond), 1);
  int64_t now = 10 * kSecond;
  for (uint64_t i = 0; i < 100'000; ++i) table.take(hashBytes(&i, sizeof i, 7), rate, now);
  EXPECT_EQ(table.size(), 100'000u);
  // Two seconds later every bucket is full again, the same as none: the sweep that runs
  // with each insertion drops them while new keys come in, without any eviction.
  now += 2 * kSecond;
  for (uint64_t i = 0; i < 100'000; ++i) {
    uint64_t k = i + 1'000'000;
    table.take(hashBytes(&k, sizeof k, 7), rate, now);
  }
  EXPECT_LT(table.size(), 160'000u);
  EXPECT_EQ(table.evictions(), 0u);
}

// An attack spraying a million addresses: the table stays within its bound, and a client
// that keeps coming back keeps its bucket (new buckets start unmarked).
TEST(BucketTableTest, MillionKeysStayBoundedAndRegularsSurvive) {
  BucketTable table;  // the default bound of the memory store
  const size_t bound = (16 << 20) + (64 << 10);  // 16 MiB of slots, shard headers
  Rate spray_rate = makeRate(100, 60 * uint64_t(kSecond), 100);
  Rate regular_rate = makeRate(10, 3600 * uint64_t(kSecond), 10);
  std::vector<uint64_t> regulars;
  for (uint64_t i = 0; i < 64; ++i) regulars.push_back(hashBytes(&i, sizeof i, 99));
  int64_t now = 100 * kSecond;
  for (uint64_t k : regulars) table.take(k, regular_rate, now);  // one token used each
  std::mt19937_64 rng(1);
  for (size_t i = 0; i < 1'000'000; ++i) {
    table.take(rng(), spray_rate, now);
    // Each regular comes back about every 3,000 attack requests (12 insertions into its
    // shard): its mark protects it from the sampled eviction.
    if (i % 3000 == 0) {
      for (uint64_t k : regulars) table.take(k, regular_rate, now, false);
    }
  }
  EXPECT_LE(table.size(), table.maxKeys());
  EXPECT_EQ(table.maxKeys(), BucketTable::kDefaultMaxKeys);
  EXPECT_LE(table.allocatedBytes(), bound);
  EXPECT_GT(table.evictions(), 0u);
  for (uint64_t k : regulars) {
    TakeResult r = table.take(k, regular_rate, now, false);
    EXPECT_EQ(r.remaining, 9) << "a regular lost its bucket";
  }
}

TEST(BucketTableTest, ExactUnderContention) {
  BucketTable table(1 << 16);
  Rate rate = makeRate(10000, 3600 * uint64_t(kSecond), 10000);
  int64_t now = 7 * kSecond;
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5000; ++i) admitted += table.take(42, rate, now).conforms;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(admitted.load(), 10000);
}

TEST(KeyHashTest, SeedsAndLengthsDiffer) {
  EXPECT_NE(hashText("a", 1), hashText("a", 2));
  EXPECT_NE(hashText("", 1), hashText("-", 1));
  std::string s(100, 'x');
  uint64_t h = hashText(s, 3);
  s[57] = 'y';
  EXPECT_NE(hashText(s, 3), h);
  for (size_t n = 0; n < 40; ++n) {
    std::string a(n, 'q');
    EXPECT_EQ(hashText(a, 5), hashText(std::string(n, 'q'), 5));
    EXPECT_NE(hashText(a, 5), hashText(a + "r", 5));
  }
}

}  // namespace
}  // namespace gw::rate_limit
