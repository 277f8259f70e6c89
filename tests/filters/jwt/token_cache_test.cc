#include "filters/jwt/token_cache.h"

#include <gtest/gtest.h>

namespace gw::jwt {
namespace {

std::shared_ptr<const TokenIdentity> identity(std::string sub, uint64_t expires_ms) {
  Claim c;
  c.name = "sub";
  c.text = std::move(sub);
  return std::make_shared<const TokenIdentity>(std::vector<Claim>{c}, std::vector<std::string>{},
                                               expires_ms);
}

std::string subOf(const std::shared_ptr<const TokenIdentity>* found) {
  return found ? std::string((*found)->subject()) : "<miss>";
}

TEST(TokenCacheTest, HitsUntilExpiry) {
  TokenCache cache(8);
  cache.insert("token-a", 1, 1000, identity("a", 5000));
  EXPECT_EQ(subOf(cache.find("token-a", 1, 1000)), "a");
  EXPECT_EQ(subOf(cache.find("token-a", 1, 4999)), "a");
  EXPECT_EQ(subOf(cache.find("token-a", 1, 5000)), "<miss>");  // expired: dropped
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.hits(), 2u);
  EXPECT_EQ(cache.misses(), 1u);
}

TEST(TokenCacheTest, OnlyTheExactTokenMatches) {
  TokenCache cache(8);
  cache.insert("token-a", 1, 0, identity("a", UINT64_MAX));
  EXPECT_EQ(subOf(cache.find("token-b", 1, 0)), "<miss>");
  EXPECT_EQ(subOf(cache.find("token-a ", 1, 0)), "<miss>");
  EXPECT_EQ(subOf(cache.find("token-", 1, 0)), "<miss>");
  EXPECT_EQ(subOf(cache.find("token-a", 1, 0)), "a");
}

TEST(TokenCacheTest, AnotherStampIsAMiss) {
  TokenCache cache(8);
  cache.insert("t", 1, 0, identity("a", UINT64_MAX));
  EXPECT_EQ(subOf(cache.find("t", 2, 0)), "<miss>");  // keys rotated or policy changed
  EXPECT_EQ(subOf(cache.find("t", 1, 0)), "<miss>");  // and the stale entry is gone
}

TEST(TokenCacheTest, TokensWithoutExpiryAreCapped) {
  TokenCache cache(8);
  cache.insert("t", 1, 1000, identity("a", UINT64_MAX));
  EXPECT_EQ(subOf(cache.find("t", 1, 1000 + TokenCache::kMaxUnboundedMs - 1)), "a");
  EXPECT_EQ(subOf(cache.find("t", 1, 1000 + TokenCache::kMaxUnboundedMs)), "<miss>");
}

TEST(TokenCacheTest, EvictsTheLeastRecentlyUsed) {
  TokenCache cache(3);
  cache.insert("a", 1, 0, identity("a", UINT64_MAX));
  cache.insert("b", 1, 0, identity("b", UINT64_MAX));
  cache.insert("c", 1, 0, identity("c", UINT64_MAX));
  EXPECT_EQ(subOf(cache.find("a", 1, 0)), "a");        // a is now the most recent
  cache.insert("d", 1, 0, identity("d", UINT64_MAX));  // evicts b
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_EQ(subOf(cache.find("b", 1, 0)), "<miss>");
  EXPECT_EQ(subOf(cache.find("a", 1, 0)), "a");
  EXPECT_EQ(subOf(cache.find("c", 1, 0)), "c");
  EXPECT_EQ(subOf(cache.find("d", 1, 0)), "d");
}

TEST(TokenCacheTest, ReinsertReplaces) {
  TokenCache cache(2);
  cache.insert("a", 1, 0, identity("old", UINT64_MAX));
  cache.insert("a", 2, 0, identity("new", UINT64_MAX));
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(subOf(cache.find("a", 2, 0)), "new");
}

TEST(TokenCacheTest, StaysBoundedUnderChurn) {
  TokenCache cache(64);
  for (int i = 0; i < 10000; ++i) {
    std::string token = "token-" + std::to_string(i);
    cache.insert(token, 1, uint64_t(i), identity(token, uint64_t(i) + (i % 3 ? 50 : 5000)));
    cache.find("token-" + std::to_string(i / 2), 1, uint64_t(i));
    ASSERT_LE(cache.size(), 64u);
  }
  // Short tokens live inside their node (small-string storage): the index must survive
  // the nodes' reuse too.
  for (int i = 0; i < 100; ++i) cache.insert(std::to_string(i), 1, 0, identity("s", 100));
  EXPECT_EQ(subOf(cache.find("99", 1, 0)), "s");
  cache.clear();
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(subOf(cache.find("99", 1, 0)), "<miss>");
}

}  // namespace
}  // namespace gw::jwt
