#include "filters/rate_limit/rate_limit_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/filters/filter_config_test_util.h"

namespace gw::rate_limit {
namespace {

using test_util::parseFilter;
using ::testing::ElementsAre;
using ::testing::StartsWith;

TEST(RateLimitConfigTest, KeysAndPhases) {
  auto p = parseFilter<RateLimitConfig>(parseRateLimitConfig, R"(
limits:
  - {key: client_ip, requests: 100, per: 1m}
  - {key: "header:X-Tenant", requests: 10, per: 1s, burst: 20, shared: tenants, dry_run: true}
  - {key: "claim:sub", requests: 5, per: 1h}
  - {key: api_key, requests: 1, per: 250ms}
  - {key: route, requests: 1, per: 1s}
)");
  ASSERT_TRUE(p.config);
  const auto& l = p.config->limits();
  ASSERT_EQ(l.size(), 5u);
  EXPECT_EQ(l[0].key_type, KeyType::ClientIp);
  EXPECT_EQ(l[0].burst, 100u);  // defaults to requests
  EXPECT_EQ(l[0].per, Millis(60000));
  EXPECT_EQ(l[1].key_type, KeyType::Header);
  EXPECT_EQ(l[1].key_name, "x-tenant");
  EXPECT_EQ(l[1].burst, 20u);
  EXPECT_EQ(l[1].shared, "tenants");
  EXPECT_TRUE(l[1].dry_run);
  EXPECT_EQ(l[2].key_type, KeyType::Claim);
  EXPECT_EQ(l[2].key_name, "sub");
  EXPECT_TRUE(l[2].after_auth);
  EXPECT_TRUE(l[3].after_auth);
  EXPECT_FALSE(l[4].after_auth);
  EXPECT_TRUE(p.config->hasBeforeAuth());
  EXPECT_TRUE(p.config->hasAfterAuth());
  EXPECT_EQ(l[3].where.line, 6);
}

TEST(RateLimitConfigTest, Errors) {
  auto p = parseFilter<RateLimitConfig>(
      parseRateLimitConfig,
      "limits: [{key: 'header:', requests: 0, per: 1s}, {key: ip, requests: 1, per: 0ms}, "
      "{key: route}]");
  EXPECT_THAT(p.errors, ElementsAre(StartsWith("f.yaml:1:16: bad rate limit key 'header:'"),
                                    "f.yaml:1:37: must be at least 1, got 0",
                                    StartsWith("f.yaml:1:56: bad rate limit key 'ip'"),
                                    "f.yaml:1:78: duration must be at least 1ms, got '0ms'",
                                    "f.yaml:1:84: missing required key 'requests' in rate limit",
                                    "f.yaml:1:84: missing required key 'per' in rate limit"));
  EXPECT_THAT(parseFilter<RateLimitConfig>(parseRateLimitConfig, "limits: []").errors,
              ElementsAre("f.yaml:1:9: limits must not be empty"));
}

}  // namespace
}  // namespace gw::rate_limit
