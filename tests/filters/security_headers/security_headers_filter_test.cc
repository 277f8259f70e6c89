// security_headers (SPEC §2 Security headers) through the real loader: the defaults exactly
// as SPEC lists them, add_if_missing / set, `off`, added headers, HSTS only over TLS or a
// trusted X-Forwarded-Proto: https, Server / X-Powered-By hidden, custom hide_headers, and
// every response decorated, the gateway's own included.
#include "filters/security_headers/security_headers_filter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/filters/filter_chain_test_util.h"

namespace gw::filter_test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

const HeaderPairs kSpecDefaults = {
    {"X-Content-Type-Options", "nosniff"},
    {"X-Frame-Options", "DENY"},
    {"X-XSS-Protection", "0"},
    {"Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'"},
    {"Referrer-Policy", "strict-origin-when-cross-origin"},
    {"Permissions-Policy", "camera=(), microphone=(), geolocation=()"},
};
constexpr const char* kHsts = "max-age=31536000; includeSubDomains";

// One upstream response through the route's chain.
std::unique_ptr<TestRequest> through(const Config& config, const HeaderPairs& upstream,
                                     bool tls = false, bool forwarded_https = false) {
  auto r = std::make_unique<TestRequest>(&config, &route(config));
  r->ctx.tls = tls;
  r->ctx.forwarded_https = forwarded_https;
  EXPECT_EQ(runChain(route(config).chain, *r, 200, upstream), FilterStatus::Continue);
  return r;
}

void expectDefaults(const TestRequest& r, const std::string& what) {
  for (const auto& [name, value] : kSpecDefaults) {
    EXPECT_EQ(r.responseHeaderAll(name), std::vector<std::string>{value}) << what << ": " << name;
  }
}

TEST(SecurityHeadersFilterTest, SpecDefaultsOnPlainHttpWithoutHsts) {
  auto config = loadRoute("", "{security_headers: {}}");
  ASSERT_TRUE(config);
  auto r = through(*config, {{"Content-Type", "text/html"}, {"Content-Length", "5"}});
  expectDefaults(*r, "plain");
  EXPECT_FALSE(r->hasResponseHeader("Strict-Transport-Security"));
  EXPECT_EQ(r->responseHeader("Content-Type"), "text/html");
  EXPECT_EQ(r->responseHeader("Content-Length"), "5");
  EXPECT_EQ(r->response.headers.size(), 2u + kSpecDefaults.size());
}

TEST(SecurityHeadersFilterTest, HstsOnlyOverTlsOrATrustedForwardedHttps) {
  auto config = loadRoute("", "{security_headers: {}}");
  ASSERT_TRUE(config);
  auto tls = through(*config, {}, /*tls=*/true);
  expectDefaults(*tls, "tls");
  EXPECT_EQ(tls->responseHeaderAll("Strict-Transport-Security"), std::vector<std::string>{kHsts});
  auto fwd = through(*config, {}, false, /*forwarded_https=*/true);
  EXPECT_EQ(fwd->responseHeaderAll("Strict-Transport-Security"), std::vector<std::string>{kHsts});
  // A client's own X-Forwarded-Proto is not what decides: the core sets forwarded_https
  // only for a trusted proxy.
  TestRequest spoof(config.get(), &route(*config));
  spoof.header("X-Forwarded-Proto", "https");
  runChain(route(*config).chain, spoof);
  EXPECT_FALSE(spoof.hasResponseHeader("Strict-Transport-Security"));
  // A changed HSTS value keeps the TLS-only rule; `off` removes it even over TLS.
  auto custom = loadRoute("", "{security_headers: {headers: {strict-transport-security: max-age=60}}}");
  ASSERT_TRUE(custom);
  EXPECT_FALSE(through(*custom, {})->hasResponseHeader("Strict-Transport-Security"));
  EXPECT_EQ(through(*custom, {}, true)->responseHeader("Strict-Transport-Security"), "max-age=60");
  auto off = loadRoute("", "{security_headers: {headers: {Strict-Transport-Security: off}}}");
  ASSERT_TRUE(off);
  EXPECT_FALSE(through(*off, {}, true)->hasResponseHeader("Strict-Transport-Security"));
}

TEST(SecurityHeadersFilterTest, AddIfMissingKeepsTheUpstreamsValue) {
  auto config = loadRoute("", "{security_headers: {mode: add_if_missing}}");
  ASSERT_TRUE(config);
  auto r = through(*config, {{"x-frame-options", "SAMEORIGIN"},
                             {"Content-Security-Policy", "default-src https:"}});
  EXPECT_EQ(r->responseHeaderAll("X-Frame-Options"), std::vector<std::string>{"SAMEORIGIN"});
  EXPECT_EQ(r->responseHeaderAll("Content-Security-Policy"),
            std::vector<std::string>{"default-src https:"});
  EXPECT_EQ(r->responseHeader("Referrer-Policy"), "strict-origin-when-cross-origin");
  // add_if_missing is the default mode.
  auto implicit = loadRoute("", "{security_headers: {}}");
  ASSERT_TRUE(implicit);
  EXPECT_EQ(through(*implicit, {{"X-Frame-Options", "SAMEORIGIN"}})->responseHeader("X-Frame-Options"),
            "SAMEORIGIN");
}

TEST(SecurityHeadersFilterTest, SetOverridesTheUpstreamsValue) {
  auto config = loadRoute("", "{security_headers: {mode: set}}");
  ASSERT_TRUE(config);
  auto r = through(*config, {{"X-Frame-Options", "SAMEORIGIN"},
                             {"x-frame-options", "ALLOW-FROM https://x"},
                             {"X-Content-Type-Options", "sniff-away"}});
  expectDefaults(*r, "set");  // exactly one of each, ours
}

TEST(SecurityHeadersFilterTest, ChangedRemovedAndAddedHeaders) {
  auto config = loadRoute("", R"({security_headers: {headers: {
      X-Frame-Options: off,
      X-XSS-Protection: '1; mode=block',
      Content-Security-Policy: "default-src 'none'",
      Cross-Origin-Opener-Policy: same-origin}}})");
  ASSERT_TRUE(config);
  auto r = through(*config, {});
  EXPECT_FALSE(r->hasResponseHeader("X-Frame-Options"));
  EXPECT_EQ(r->responseHeader("X-XSS-Protection"), "1; mode=block");
  EXPECT_EQ(r->responseHeader("Content-Security-Policy"), "default-src 'none'");
  EXPECT_EQ(r->responseHeader("Cross-Origin-Opener-Policy"), "same-origin");
  EXPECT_EQ(r->responseHeader("X-Content-Type-Options"), "nosniff");
  EXPECT_EQ(r->responseHeader("Referrer-Policy"), "strict-origin-when-cross-origin");
  EXPECT_EQ(r->responseHeader("Permissions-Policy"), "camera=(), microphone=(), geolocation=()");
  // `off` only drops our default: an upstream's own header of that name passes.
  auto up = through(*config, {{"X-Frame-Options", "SAMEORIGIN"}});
  EXPECT_EQ(up->responseHeaderAll("X-Frame-Options"), std::vector<std::string>{"SAMEORIGIN"});
}

TEST(SecurityHeadersFilterTest, ServerAndXPoweredByAreHiddenByDefault) {
  auto config = loadRoute("", "{security_headers: {}}");
  ASSERT_TRUE(config);
  auto r = through(*config, {{"Server", "Apache/2.4.1 (Unix)"},
                             {"x-powered-by", "PHP/5.3"},
                             {"X-Powered-By", "Express"},
                             {"server", "second"},
                             {"X-Backend", "kept"}});
  EXPECT_FALSE(r->hasResponseHeader("Server"));
  EXPECT_FALSE(r->hasResponseHeader("X-Powered-By"));
  EXPECT_EQ(r->responseHeader("X-Backend"), "kept");
}

TEST(SecurityHeadersFilterTest, CustomHideHeaders) {
  auto config = loadRoute("", "{security_headers: {hide_headers: [X-AspNet-Version, Server]}}");
  ASSERT_TRUE(config);
  auto r = through(*config, {{"Server", "IIS"}, {"X-Powered-By", "ASP.NET"},
                             {"x-aspnet-version", "4.0.30319"}});
  EXPECT_FALSE(r->hasResponseHeader("Server"));
  EXPECT_FALSE(r->hasResponseHeader("X-AspNet-Version"));
  EXPECT_EQ(r->responseHeader("X-Powered-By"), "ASP.NET");  // the list replaces the default
  auto none = loadRoute("", "{security_headers: {hide_headers: []}}");
  ASSERT_TRUE(none);
  auto n = through(*none, {{"Server", "IIS"}, {"X-Powered-By", "ASP.NET"}});
  EXPECT_EQ(n->responseHeader("Server"), "IIS");
  EXPECT_EQ(n->responseHeader("X-Powered-By"), "ASP.NET");
}

TEST(SecurityHeadersFilterTest, TheGatewaysOwnAnswersAreDecoratedWhateverRan) {
  auto config = loadRoute("{ip_access: {allow: [10.0.0.0/8]}}",
                          "{security_headers: {}, request_id: {}, body_limit: {max_bytes: 1KiB}}");
  ASSERT_TRUE(config);
  const auto& chain = route(*config).chain;
  EXPECT_THAT(chainNames(chain), ElementsAre("request_id", "ip_access", "body_limit", "security_headers"));
  const Filter* f = findInChain(chain, "security_headers");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->order(), FilterOrder::SecurityHeaders);
  EXPECT_TRUE(f->runsOnEveryResponse());
  // A 403 from ip_access: security_headers never ran its (empty) request phase.
  TestRequest denied(config.get(), &route(*config), "GET", "192.0.2.1");
  EXPECT_EQ(runChain(chain, denied), FilterStatus::StopReplied);
  EXPECT_EQ(denied.response.status, 403);
  expectDefaults(denied, "403");
  EXPECT_FALSE(denied.responseHeader("X-Request-ID").empty());
  // A 413 after body_limit, a 404 and a 400 before any route: the same headers.
  TestRequest big(config.get(), &route(*config), "POST", "10.0.0.1");
  runRequestPhases(chain, big);
  answerLocally(chain, big, 413);
  expectDefaults(big, "413");
  TestRequest unrouted(config.get(), nullptr);
  answerLocally(config->default_chain, unrouted, 404);
  expectDefaults(unrouted, "404");
  EXPECT_TRUE(isUuidV7(unrouted.responseHeader("X-Request-ID")));
  // Over TLS, HSTS on the gateway's own answers too.
  TestRequest tls(config.get(), nullptr);
  tls.ctx.tls = true;
  answerLocally(config->default_chain, tls, 400);
  EXPECT_EQ(tls.responseHeader("Strict-Transport-Security"), kHsts);
}

TEST(SecurityHeadersFilterTest, RouteEntryReplacesTheDefaultWholeAndOffRemovesIt) {
  auto config = loadFilterConfig(
      "default_filters: {security_headers: {headers: {X-Frame-Options: SAMEORIGIN}}}\n"
      "routes:\n"
      "  - {name: bare, match: {path_prefix: /bare}, upstream: api, filters: {security_headers: off}}\n"
      "  - {name: r, match: {path_prefix: /}, upstream: api, filters: {security_headers: {mode: set}}}\n");
  ASSERT_TRUE(config);
  EXPECT_FALSE(findInChain(route(*config, "bare").chain, "security_headers"));
  // No deep merge: the route's {mode: set} starts again from SPEC's defaults.
  auto r = through(*config, {{"X-Frame-Options", "ALLOWALL"}});
  EXPECT_EQ(r->responseHeaderAll("X-Frame-Options"), std::vector<std::string>{"DENY"});
  // default_chain keeps the default's own change.
  TestRequest unrouted(config.get(), nullptr);
  answerLocally(config->default_chain, unrouted, 404);
  EXPECT_EQ(unrouted.responseHeader("X-Frame-Options"), "SAMEORIGIN");
}

TEST(SecurityHeadersFilterTest, ConfigErrorsThroughTheLoader) {
  EXPECT_THAT(loadErrors("default_filters: {security_headers: {mode: always}}\n"),
              ElementsAre(HasSubstr("'always' is not one of: add_if_missing, set")));
  EXPECT_THAT(loadErrors("default_filters: {security_headers: {headers: {X-A: \"a\\r\\nb\"}}}\n"),
              ElementsAre(HasSubstr("CR, LF or NUL")));
  EXPECT_THAT(loadErrors("default_filters: {security_headers: {hide_headers: ['Not A Token']}}\n"),
              testing::SizeIs(1));
  EXPECT_THAT(loadErrors("default_filters: {security_headers: {headers: {X-Off: off}}}\n"), IsEmpty());
}

}  // namespace
}  // namespace gw::filter_test
