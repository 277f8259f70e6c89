#include "filters/cors/cors_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/filters/filter_config_test_util.h"

namespace gw::cors {
namespace {

using test_util::parseFilter;
using ::testing::ElementsAre;
using ::testing::StartsWith;

TEST(CorsConfigTest, OriginsMethodsAndPrecomputedValues) {
  auto p = parseFilter<CorsConfig>(parseCorsConfig, R"(
allow_origins: ["https://App.example.com", "~^https://[a-z0-9-]+\\.example\\.com$"]
allow_methods: [get, POST]
allow_headers: [Authorization, Content-Type]
expose_headers: [X-Request-ID]
allow_credentials: true
max_age: 10m
)");
  ASSERT_TRUE(p.config);
  const CorsConfig& c = *p.config;
  EXPECT_TRUE(c.originAllowed("https://app.example.com"));
  EXPECT_TRUE(c.originAllowed("https://tenant-1.example.com"));
  EXPECT_FALSE(c.originAllowed("https://tenant.example.com.evil.io"));  // full match
  EXPECT_FALSE(c.originAllowed("http://app.example.com"));
  EXPECT_TRUE(c.methodAllowed("GET"));
  EXPECT_FALSE(c.methodAllowed("DELETE"));
  EXPECT_TRUE(c.headerAllowed("content-type"));
  EXPECT_FALSE(c.headerAllowed("X-Other"));
  EXPECT_EQ(c.allow_methods_value, "GET, POST");
  EXPECT_EQ(c.allow_headers_value, "authorization, content-type");
  EXPECT_EQ(c.expose_headers_value, "X-Request-ID");
  EXPECT_EQ(c.max_age_value, "600");
  EXPECT_TRUE(c.allow_credentials);
}

TEST(CorsConfigTest, WildcardsAndDefaults) {
  auto p = parseFilter<CorsConfig>(parseCorsConfig, "{allow_origins: ['*'], allow_headers: ['*']}");
  ASSERT_TRUE(p.config);
  EXPECT_TRUE(p.config->allow_any_origin);
  EXPECT_TRUE(p.config->originAllowed("https://anything"));
  EXPECT_TRUE(p.config->headerAllowed("X-Whatever"));
  EXPECT_EQ(p.config->allow_headers_value, "*");
  EXPECT_THAT(p.config->allow_methods, ElementsAre("GET", "HEAD", "POST"));
  EXPECT_TRUE(p.config->max_age_value.empty());
}

TEST(CorsConfigTest, Errors) {
  auto p = parseFilter<CorsConfig>(parseCorsConfig,
                                   "{allow_origins: ['https://a.com/', '~(x'], max_age: 5}");
  EXPECT_THAT(p.errors, ElementsAre("f.yaml:1:18: 'https://a.com/' is not an origin (expected "
                                    "scheme://host[:port] with no path, `*`, or ~pattern)",
                                    "f.yaml:1:36: bad origin pattern '(x': missing ): (x",
                                    StartsWith("f.yaml:1:53: bad duration '5'")));
  EXPECT_THAT(parseFilter<CorsConfig>(parseCorsConfig, "{allow_origins: []}").errors,
              ElementsAre("f.yaml:1:17: allow_origins must be a non-empty list"));
  EXPECT_THAT(parseFilter<CorsConfig>(parseCorsConfig, "{}").errors,
              ElementsAre("f.yaml:1:1: missing required key 'allow_origins' in cors"));
}

}  // namespace
}  // namespace gw::cors
