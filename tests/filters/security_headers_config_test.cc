#include "filters/security_headers/security_headers_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/filters/filter_config_test_util.h"

namespace gw::security_headers {
namespace {

using test_util::parseFilter;
using ::testing::ElementsAre;

std::vector<std::string> rendered(const SecurityHeadersConfig& c) {
  std::vector<std::string> out;
  for (const auto& h : c.headers)
    out.push_back(h.name + ": " + h.value + (h.tls_only ? " (tls)" : ""));
  return out;
}

TEST(SecurityHeadersConfigTest, SpecDefaults) {
  auto p = parseFilter<SecurityHeadersConfig>(parseSecurityHeadersConfig, "{}");
  ASSERT_TRUE(p.config);
  EXPECT_EQ(p.config->mode, Mode::AddIfMissing);
  EXPECT_THAT(
      rendered(*p.config),
      ElementsAre("X-Content-Type-Options: nosniff", "X-Frame-Options: DENY", "X-XSS-Protection: 0",
                  "Strict-Transport-Security: max-age=31536000; includeSubDomains (tls)",
                  "Content-Security-Policy: default-src 'self'; frame-ancestors 'none'",
                  "Referrer-Policy: strict-origin-when-cross-origin",
                  "Permissions-Policy: camera=(), microphone=(), geolocation=()"));
  EXPECT_THAT(p.config->hide_headers, ElementsAre("Server", "X-Powered-By"));
}

TEST(SecurityHeadersConfigTest, OverridesRemovalsAndAdditions) {
  auto p = parseFilter<SecurityHeadersConfig>(parseSecurityHeadersConfig, R"(
mode: set
headers:
  x-frame-options: SAMEORIGIN
  Content-Security-Policy: off
  X-XSS-Protection: off
  Referrer-Policy: off
  Permissions-Policy: off
  X-Content-Type-Options: off
  strict-transport-security: max-age=60
  Cross-Origin-Opener-Policy: same-origin
hide_headers: []
)");
  ASSERT_TRUE(p.config);
  EXPECT_EQ(p.config->mode, Mode::Set);
  EXPECT_THAT(rendered(*p.config), ElementsAre("x-frame-options: SAMEORIGIN",
                                               "strict-transport-security: max-age=60 (tls)",
                                               "Cross-Origin-Opener-Policy: same-origin"));
  EXPECT_TRUE(p.config->hide_headers.empty());
}

TEST(SecurityHeadersConfigTest, Errors) {
  auto p = parseFilter<SecurityHeadersConfig>(parseSecurityHeadersConfig,
                                              "{mode: always, headers: {'Bad Name': x, X-Ok: ''}}");
  EXPECT_THAT(p.errors, ElementsAre("f.yaml:1:8: 'always' is not one of: add_if_missing, set",
                                    "f.yaml:1:26: 'Bad Name' is not a valid header name",
                                    "f.yaml:1:47: must not be empty"));
}

}  // namespace
}  // namespace gw::security_headers
