// The small filter configurations: request_id, ip_access, body_limit, jwt, api_key, and
// the api_keys file format.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "filters/api_key/api_key_config.h"
#include "filters/api_key/api_key_file.h"
#include "filters/body_limit/body_limit_config.h"
#include "filters/ip_access/ip_access_config.h"
#include "filters/jwt/jwt_config.h"
#include "filters/registry.h"
#include "filters/request_id/request_id_config.h"
#include "tests/filters/filter_config_test_util.h"

namespace gw {
namespace {

using test_util::parseFilter;
using ::testing::ElementsAre;
using ::testing::StartsWith;

TEST(FilterRegistryTest, AllEightInSpecOrder) {
  std::vector<std::string_view> names;
  for (const auto& f : filterRegistry()) names.push_back(f.name);
  EXPECT_THAT(names, ElementsAre("request_id", "ip_access", "cors", "body_limit", "rate_limit",
                                 "jwt", "api_key", "security_headers"));
  EXPECT_EQ(findFilter("jwt")->name, "jwt");
  EXPECT_EQ(findFilter("nope"), nullptr);
}

TEST(RequestIdConfigTest, HeaderDefaultAndOverride) {
  using request_id::RequestIdConfig;
  EXPECT_EQ(parseFilter<RequestIdConfig>(request_id::parseRequestIdConfig, "{}").config->header,
            "X-Request-ID");
  EXPECT_EQ(parseFilter<RequestIdConfig>(request_id::parseRequestIdConfig, "~").config->header,
            "X-Request-ID");
  EXPECT_EQ(parseFilter<RequestIdConfig>(request_id::parseRequestIdConfig, "{header: X-Trace}")
                .config->header,
            "X-Trace");
  EXPECT_THAT(
      parseFilter<RequestIdConfig>(request_id::parseRequestIdConfig, "{header: 'a b'}").errors,
      ElementsAre("f.yaml:1:10: 'a b' is not a valid header name"));
}

TEST(IpAccessConfigTest, DenyWinsAndAllowRestricts) {
  auto p = parseFilter<ip_access::IpAccessConfig>(ip_access::parseIpAccessConfig,
                                                  "{allow: [10.0.0.0/8], deny: [10.0.0.66]}");
  ASSERT_TRUE(p.config);
  uint8_t inside[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3};
  uint8_t denied[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 66};
  uint8_t outside[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 0, 1};
  EXPECT_TRUE(p.config->admits(inside));
  EXPECT_FALSE(p.config->admits(denied));
  EXPECT_FALSE(p.config->admits(outside));
  EXPECT_THAT(
      parseFilter<ip_access::IpAccessConfig>(ip_access::parseIpAccessConfig, "{allow: [300.0.0.1]}")
          .errors,
      ElementsAre(StartsWith("f.yaml:1:10: bad CIDR '300.0.0.1'")));
}

TEST(BodyLimitConfigTest, MaxBytes) {
  using body_limit::BodyLimitConfig;
  auto p = parseFilter<BodyLimitConfig>(body_limit::parseBodyLimitConfig, "{max_bytes: 1MiB}");
  EXPECT_EQ(p.config->max_bytes, 1u << 20);
  EXPECT_THAT(parseFilter<BodyLimitConfig>(body_limit::parseBodyLimitConfig, "{}").errors,
              ElementsAre("f.yaml:1:1: missing required key 'max_bytes' in body_limit"));
}

TEST(JwtConfigTest, ClaimsAndScopes) {
  auto p = parseFilter<jwt::JwtConfig>(
      jwt::parseJwtConfig,
      "{provider: main, require_claims: {role: [admin, ops], tier: gold}, "
      "scopes: [profile, email]}");
  ASSERT_TRUE(p.config);
  EXPECT_EQ(p.config->provider(), "main");
  EXPECT_EQ(p.config->providerLocation().column, 12);
  ASSERT_EQ(p.config->requireClaims().size(), 2u);
  EXPECT_THAT(p.config->requireClaims()[0].second, ElementsAre("admin", "ops"));
  EXPECT_THAT(p.config->requireClaims()[1].second, ElementsAre("gold"));
  EXPECT_THAT(p.config->scopes(), ElementsAre("profile", "email"));
  EXPECT_THAT(parseFilter<jwt::JwtConfig>(jwt::parseJwtConfig,
                                          "{provider: m, require_claims: {r: []}, scopes: ['a b']}")
                  .errors,
              ElementsAre("f.yaml:1:35: a required claim needs at least one accepted value",
                          "f.yaml:1:49: a scope cannot contain spaces"));
}

TEST(ApiKeyConfigTest, Set) {
  auto p = parseFilter<api_key::ApiKeyConfig>(api_key::parseApiKeyConfig, "{set: partners}");
  EXPECT_EQ(p.config->set(), "partners");
  EXPECT_THAT(parseFilter<api_key::ApiKeyConfig>(api_key::parseApiKeyConfig, "{sett: x}").errors,
              ElementsAre("f.yaml:1:2: unknown key 'sett' in api_key (did you mean 'set'?)",
                          "f.yaml:1:1: missing required key 'set' in api_key"));
}

TEST(ApiKeyFileTest, ParsesLinesAndReportsBadOnes) {
  std::string hash(64, 'a');
  auto file = api_key::parseApiKeyFile("# comment\r\n\nalice " + hash + "\r\n  bob\t" +
                                       std::string(64, 'B') + "  \nbad" + hash + "\ncarol " + hash +
                                       "\ndave " + std::string(63, 'a') + "g\n");
  ASSERT_EQ(file.entries.size(), 2u);
  EXPECT_EQ(file.entries[0].name, "alice");
  EXPECT_EQ(file.entries[0].sha256[0], 0xaa);
  EXPECT_EQ(file.entries[1].name, "bob");
  EXPECT_EQ(file.entries[1].sha256[31], 0xbb);
  EXPECT_THAT(file.problems,
              ElementsAre(std::pair<int, std::string>(5, "expected NAME SHA256HEX"),
                          std::pair<int, std::string>(6, "same key as line 3"),
                          std::pair<int, std::string>(7, "the SHA-256 is not hexadecimal")));
}

}  // namespace
}  // namespace gw
