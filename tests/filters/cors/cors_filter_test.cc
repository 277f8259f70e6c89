// cors (SPEC §2 CORS) through the real loader: exact, `*` and `~regex` origins; preflights
// answered 204/403 by the gateway and never forwarded; credentials never with `*`;
// `Vary: Origin` added or merged; the upstream's Access-Control-* replaced; expose headers
// on actual responses only; nothing granted to a disallowed origin; the response phase on
// the gateway's own answers.
#include "filters/cors/cors_filter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "gateway/http_util.h"
#include "tests/filters/filter_chain_test_util.h"

namespace gw::filter_test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

constexpr const char* kOrigins =
    "allow_origins: ['https://app.example.com', '~^https://[a-z0-9-]+\\.example\\.com$']";

std::shared_ptr<const Config> corsRoute(const std::string& more = "") {
  return loadRoute(std::string("{cors: {") + kOrigins +
                   ", allow_methods: [GET, POST, PUT], allow_headers: [Authorization, "
                   "Content-Type, X-Custom], expose_headers: [X-Request-ID, X-Total], max_age: 10m" +
                   more + "}}");
}

// Every response header whose name starts with Access-Control-.
std::vector<std::string> accessControl(const TestRequest& r) {
  std::vector<std::string> out;
  for (const Header& h : r.response.headers) {
    if (h.name.size() > 15 && equalsIgnoreCase(h.name.substr(0, 15), "access-control-"))
      out.push_back(std::string(h.name) + ": " + std::string(h.value));
  }
  return out;
}

struct CorsFilterTest : ::testing::Test {
  // An actual (non-preflight) request from `origin` ("" = no Origin header).
  static std::unique_ptr<TestRequest> actual(const Config& config, std::string_view origin,
                                             const HeaderPairs& upstream = {},
                                             std::string_view method = "GET") {
    auto r = std::make_unique<TestRequest>(&config, &route(config), method);
    if (!origin.empty()) r->header("Origin", origin);
    EXPECT_EQ(runChain(route(config).chain, *r, 200, upstream), FilterStatus::Continue);
    EXPECT_TRUE(r->reached_upstream);
    return r;
  }
  static std::unique_ptr<TestRequest> preflight(const Config& config, std::string_view origin,
                                                std::string_view method,
                                                std::string_view headers = {}) {
    auto r = std::make_unique<TestRequest>(&config, &route(config), "OPTIONS");
    r->header("Origin", origin).header("Access-Control-Request-Method", method);
    if (!headers.empty()) r->header("Access-Control-Request-Headers", headers);
    EXPECT_EQ(runChain(route(config).chain, *r), FilterStatus::StopReplied);
    EXPECT_FALSE(r->reached_upstream) << "a preflight is never forwarded";
    return r;
  }
};

TEST_F(CorsFilterTest, ExactOriginOnAnActualRequest) {
  auto config = corsRoute();
  ASSERT_TRUE(config);
  auto r = actual(*config, "https://app.example.com");
  EXPECT_EQ(r->forwardedHeader("Origin"), "https://app.example.com");  // forwarded as is
  EXPECT_THAT(accessControl(*r),
              ElementsAre("Access-Control-Allow-Origin: https://app.example.com",
                          "Access-Control-Expose-Headers: X-Request-ID, X-Total"));
  EXPECT_EQ(r->responseHeaderAll("Vary"), std::vector<std::string>{"Origin"});
  EXPECT_FALSE(r->hasResponseHeader("Access-Control-Allow-Credentials"));
  // Scheme and host are case-insensitive; the answer echoes what the browser sent.
  auto upper = actual(*config, "HTTPS://APP.EXAMPLE.COM");
  EXPECT_EQ(upper->responseHeader("Access-Control-Allow-Origin"), "HTTPS://APP.EXAMPLE.COM");
}

TEST_F(CorsFilterTest, RegexOriginsMatchWholeAndNearMissesGetNothing) {
  auto config = corsRoute();
  ASSERT_TRUE(config);
  for (const char* ok : {"https://tenant-1.example.com", "https://a.example.com", "https://x9.example.com"}) {
    auto r = actual(*config, ok);
    EXPECT_EQ(r->responseHeader("Access-Control-Allow-Origin"), ok);
  }
  for (const char* miss :
       {"https://evil-example.com", "https://example.com", "http://app.example.com",
        "https://app.example.com.evil.io", "https://app.example.com:8443", "https://a.b.example.com",
        "https://APP_X.example.com", "https://app.example.co", "null", "https://app.example.com/"}) {
    auto r = actual(*config, miss);
    EXPECT_THAT(accessControl(*r), IsEmpty()) << miss;
    // Forwarded without CORS headers, Vary still set (the answer depends on Origin).
    EXPECT_EQ(r->responseHeader("Vary"), "Origin") << miss;
    EXPECT_EQ(r->response.status, 200);
  }
  // A pattern written without anchors still has to match the whole origin.
  auto loose = loadRoute("{cors: {allow_origins: ['~https://[a-z]+\\.example\\.com']}}");
  ASSERT_TRUE(loose);
  EXPECT_TRUE(actual(*loose, "https://a.example.com")->hasResponseHeader("Access-Control-Allow-Origin"));
  EXPECT_FALSE(actual(*loose, "https://a.example.com.evil.io")->hasResponseHeader("Access-Control-Allow-Origin"));
  EXPECT_FALSE(actual(*loose, "xhttps://a.example.com")->hasResponseHeader("Access-Control-Allow-Origin"));
  // An exact origin is not a suffix match either.
  auto exact = loadRoute("{cors: {allow_origins: ['https://example.com']}}");
  ASSERT_TRUE(exact);
  EXPECT_FALSE(actual(*exact, "https://evil-example.com")->hasResponseHeader("Access-Control-Allow-Origin"));
  EXPECT_FALSE(actual(*exact, "https://sub.example.com")->hasResponseHeader("Access-Control-Allow-Origin"));
}

TEST_F(CorsFilterTest, NoOriginNoCorsHeaders) {
  auto config = corsRoute();
  ASSERT_TRUE(config);
  auto r = actual(*config, "");
  EXPECT_THAT(accessControl(*r), IsEmpty());
  EXPECT_EQ(r->responseHeader("Vary"), "Origin");
}

TEST_F(CorsFilterTest, WildcardOrigin) {
  auto any = loadRoute("{cors: {allow_origins: ['*'], expose_headers: [X-Total]}}");
  ASSERT_TRUE(any);
  auto r = actual(*any, "https://whoever.test");
  EXPECT_THAT(accessControl(*r), ElementsAre("Access-Control-Allow-Origin: *",
                                             "Access-Control-Expose-Headers: X-Total"));
  // With credentials a browser refuses `*`: the origin itself is echoed.
  auto creds = loadRoute("{cors: {allow_origins: ['*'], allow_credentials: true}}");
  ASSERT_TRUE(creds);
  auto c = actual(*creds, "https://whoever.test");
  EXPECT_THAT(accessControl(*c), ElementsAre("Access-Control-Allow-Origin: https://whoever.test",
                                             "Access-Control-Allow-Credentials: true"));
  auto p = preflight(*creds, "https://whoever.test", "POST");
  EXPECT_EQ(p->response.status, 204);
  EXPECT_EQ(p->responseHeader("Access-Control-Allow-Origin"), "https://whoever.test");
  EXPECT_EQ(p->responseHeader("Access-Control-Allow-Credentials"), "true");
}

TEST_F(CorsFilterTest, CredentialsWithAnExactOrigin) {
  auto config = corsRoute(", allow_credentials: true");
  ASSERT_TRUE(config);
  auto r = actual(*config, "https://app.example.com");
  EXPECT_THAT(accessControl(*r),
              ElementsAre("Access-Control-Allow-Origin: https://app.example.com",
                          "Access-Control-Allow-Credentials: true",
                          "Access-Control-Expose-Headers: X-Request-ID, X-Total"));
  // Never credentials for a disallowed origin.
  EXPECT_THAT(accessControl(*actual(*config, "https://evil-example.com")), IsEmpty());
}

TEST_F(CorsFilterTest, PreflightAllowedIsAnswered204WithTheAllowHeaders) {
  auto config = corsRoute(", allow_credentials: true");
  ASSERT_TRUE(config);
  auto r = preflight(*config, "https://tenant-1.example.com", "PUT", "X-Custom, content-type");
  EXPECT_EQ(r->driver.responses, 1);
  EXPECT_EQ(r->driver.local_replies, 0);
  EXPECT_EQ(r->response.status, 204);
  EXPECT_EQ(r->driver.body, "");
  EXPECT_THAT(accessControl(*r),
              UnorderedElementsAre("Access-Control-Allow-Origin: https://tenant-1.example.com",
                                   "Access-Control-Allow-Credentials: true",
                                   "Access-Control-Allow-Methods: GET, POST, PUT",
                                   "Access-Control-Allow-Headers: authorization, content-type, x-custom",
                                   "Access-Control-Max-Age: 600"));
  EXPECT_EQ(r->responseHeaderAll("Vary"), std::vector<std::string>{"Origin"});
  EXPECT_FALSE(r->hasResponseHeader("Access-Control-Expose-Headers"));  // actual responses only
  // Without max_age and without credentials, neither header.
  auto plain = loadRoute(std::string("{cors: {") + kOrigins + "}}");
  ASSERT_TRUE(plain);
  auto q = preflight(*plain, "https://app.example.com", "POST");
  EXPECT_EQ(q->response.status, 204);
  EXPECT_THAT(accessControl(*q),
              UnorderedElementsAre("Access-Control-Allow-Origin: https://app.example.com",
                                   "Access-Control-Allow-Methods: GET, HEAD, POST"));
}

TEST_F(CorsFilterTest, PreflightRefused403ForOriginMethodOrHeader) {
  auto config = corsRoute(", allow_credentials: true");
  ASSERT_TRUE(config);
  struct Case {
    const char* origin;
    const char* method;
    const char* headers;
  } cases[] = {
      {"https://evil-example.com", "GET", ""},          // origin
      {"https://app.example.com", "DELETE", ""},        // method
      {"https://app.example.com", "put", ""},           // methods are case-sensitive
      {"https://app.example.com", "PUT", "X-Other"},    // header
      {"https://app.example.com", "PUT", "x-custom, x-other"},  // one header of several
  };
  for (const Case& c : cases) {
    auto r = preflight(*config, c.origin, c.method, c.headers);
    EXPECT_EQ(r->driver.local_replies, 1) << c.origin << " " << c.method << " " << c.headers;
    EXPECT_EQ(r->response.status, 403);
    EXPECT_EQ(r->driver.error_code, "FORBIDDEN");
    // A refused preflight grants nothing.
    EXPECT_THAT(accessControl(*r), IsEmpty()) << c.origin << " " << c.method << " " << c.headers;
    EXPECT_EQ(r->responseHeader("Vary"), "Origin");
  }
}

TEST_F(CorsFilterTest, PreflightWithWildcardListsEchoesWhatWasAskedOnlyWithCredentials) {
  auto creds = loadRoute(std::string("{cors: {") + kOrigins +
                         ", allow_methods: ['*'], allow_headers: ['*'], allow_credentials: true}}");
  ASSERT_TRUE(creds);
  auto r = preflight(*creds, "https://app.example.com", "PROPFIND", "X-Anything, X-Else");
  EXPECT_EQ(r->response.status, 204);
  EXPECT_EQ(r->responseHeader("Access-Control-Allow-Methods"), "PROPFIND");
  EXPECT_EQ(r->responseHeader("Access-Control-Allow-Headers"), "X-Anything, X-Else");
  auto anon = loadRoute(std::string("{cors: {") + kOrigins + ", allow_methods: ['*'], allow_headers: ['*']}}");
  ASSERT_TRUE(anon);
  auto a = preflight(*anon, "https://app.example.com", "PROPFIND", "X-Anything");
  EXPECT_EQ(a->responseHeader("Access-Control-Allow-Methods"), "*");
  EXPECT_EQ(a->responseHeader("Access-Control-Allow-Headers"), "*");
}

TEST_F(CorsFilterTest, OptionsWithoutRequestMethodIsNotAPreflight) {
  auto config = corsRoute();
  ASSERT_TRUE(config);
  auto r = actual(*config, "https://app.example.com", {}, "OPTIONS");
  EXPECT_EQ(r->responseHeader("Access-Control-Allow-Origin"), "https://app.example.com");
  EXPECT_EQ(r->responseHeader("Access-Control-Expose-Headers"), "X-Request-ID, X-Total");
  // Access-Control-Request-Method on another method is not a preflight either.
  TestRequest g(config.get(), &route(*config), "GET");
  g.header("Origin", "https://app.example.com").header("Access-Control-Request-Method", "PUT");
  EXPECT_EQ(runChain(route(*config).chain, g), FilterStatus::Continue);
}

TEST_F(CorsFilterTest, UpstreamAccessControlHeadersAreReplaced) {
  auto config = corsRoute();
  ASSERT_TRUE(config);
  HeaderPairs upstream = {{"Content-Type", "text/plain"},
                          {"Access-Control-Allow-Origin", "*"},
                          {"access-control-allow-credentials", "true"},
                          {"Access-Control-Allow-Methods", "DELETE"},
                          {"Access-Control-Expose-Headers", "X-Secret"},
                          {"Access-Control-Max-Age", "99999"}};
  auto allowed = actual(*config, "https://app.example.com", upstream);
  EXPECT_THAT(accessControl(*allowed),
              ElementsAre("Access-Control-Allow-Origin: https://app.example.com",
                          "Access-Control-Expose-Headers: X-Request-ID, X-Total"));
  EXPECT_EQ(allowed->responseHeader("Content-Type"), "text/plain");
  EXPECT_THAT(accessControl(*actual(*config, "https://evil-example.com", upstream)), IsEmpty());
  EXPECT_THAT(accessControl(*actual(*config, "", upstream)), IsEmpty());
}

TEST_F(CorsFilterTest, VaryOriginIsAddedOrMerged) {
  auto config = corsRoute();
  ASSERT_TRUE(config);
  auto merged = actual(*config, "https://app.example.com", {{"Vary", "Accept-Encoding"}});
  EXPECT_EQ(merged->responseHeaderAll("Vary"), std::vector<std::string>{"Accept-Encoding, Origin"});
  auto already = actual(*config, "https://app.example.com", {{"vary", "accept-encoding, ORIGIN"}});
  EXPECT_EQ(already->responseHeaderAll("Vary"), std::vector<std::string>{"accept-encoding, ORIGIN"});
  auto star = actual(*config, "https://app.example.com", {{"Vary", "*"}});
  EXPECT_EQ(star->responseHeaderAll("Vary"), std::vector<std::string>{"*"});
}

// The upstream may send Vary as several field lines (RFC 9110 §5.3: one list). Every
// token it sent must survive, plus Origin.
TEST_F(CorsFilterTest, VaryMergeKeepsEveryUpstreamVaryField) {
  auto config = corsRoute();
  ASSERT_TRUE(config);
  auto r = actual(*config, "https://app.example.com",
                  {{"Vary", "Accept-Encoding"}, {"Vary", "Accept-Language"}});
  std::vector<std::string> tokens;
  for (const std::string& v : r->responseHeaderAll("Vary")) {
    forEachToken(v, [&](std::string_view t) { tokens.emplace_back(t); });
  }
  EXPECT_THAT(tokens, UnorderedElementsAre("Accept-Encoding", "Accept-Language", "Origin"))
      << "Vary fields after the cors filter";
}

TEST_F(CorsFilterTest, ResponsePhaseOnTheGatewaysOwnAnswers) {
  auto config = corsRoute(", allow_credentials: true");
  ASSERT_TRUE(config);
  const auto& chain = route(*config).chain;
  // A later stage (rate limit, upstream error) answers after cors ran.
  for (int status : {401, 413, 429, 502}) {
    TestRequest r(config.get(), &route(*config), "POST");
    r.header("Origin", "https://app.example.com");
    EXPECT_EQ(runRequestPhases(chain, r), FilterStatus::Continue);
    answerLocally(chain, r, status);
    EXPECT_THAT(accessControl(r),
                ElementsAre("Access-Control-Allow-Origin: https://app.example.com",
                            "Access-Control-Allow-Credentials: true",
                            "Access-Control-Expose-Headers: X-Request-ID, X-Total"))
        << status;
    EXPECT_EQ(r.responseHeader("Vary"), "Origin");
  }
}

TEST_F(CorsFilterTest, RealRateLimit429CarriesCorsSecurityHeadersAndTheId) {
  auto config = loadRoute(
      "{rate_limit: {limits: [{key: client_ip, requests: 1, per: 1h}]}}",
      std::string("{request_id: {}, security_headers: {}, cors: {") + kOrigins + "}}");
  ASSERT_TRUE(config);
  const auto& chain = route(*config).chain;
  EXPECT_THAT(chainNames(chain), ElementsAre("request_id", "cors", "rate_limit", "security_headers"));
  // This run's own bucket (the bucket table is process-wide; --gtest_repeat runs again).
  static int run = 0;
  std::string ip = "198.18.7." + std::to_string(1 + run++ % 250);
  TestRequest first(config.get(), &route(*config), "GET", ip);
  first.header("Origin", "https://app.example.com");
  EXPECT_EQ(runChain(chain, first), FilterStatus::Continue);
  TestRequest second(config.get(), &route(*config), "GET", ip);
  second.header("Origin", "https://app.example.com").header("X-Request-ID", "limited-1");
  EXPECT_EQ(runChain(chain, second), FilterStatus::StopReplied);
  EXPECT_EQ(second.response.status, 429);
  EXPECT_EQ(second.responseHeader("Access-Control-Allow-Origin"), "https://app.example.com");
  EXPECT_EQ(second.responseHeader("Vary"), "Origin");
  EXPECT_EQ(second.responseHeader("X-Request-ID"), "limited-1");
  EXPECT_EQ(second.responseHeader("X-Frame-Options"), "DENY");
  EXPECT_TRUE(second.hasResponseHeader("Retry-After"));
}

TEST_F(CorsFilterTest, NoStateLeaksBetweenRequestsOnOneFilter) {
  auto config = corsRoute(", allow_credentials: true");
  ASSERT_TRUE(config);
  EXPECT_TRUE(actual(*config, "https://app.example.com")->hasResponseHeader("Access-Control-Allow-Origin"));
  EXPECT_FALSE(actual(*config, "https://evil-example.com")->hasResponseHeader("Access-Control-Allow-Origin"));
  EXPECT_FALSE(actual(*config, "")->hasResponseHeader("Access-Control-Allow-Origin"));
  EXPECT_EQ(actual(*config, "https://b.example.com")->responseHeader("Access-Control-Allow-Origin"),
            "https://b.example.com");
}

TEST_F(CorsFilterTest, RouteOffAndOverride) {
  std::string yaml = std::string("default_filters: {cors: {") + kOrigins + "}}\n" +
                     "routes:\n"
                     "  - {name: nocors, match: {path_prefix: /p}, upstream: api, filters: {cors: off}}\n"
                     "  - {name: r, match: {path_prefix: /}, upstream: api,"
                     " filters: {cors: {allow_origins: ['https://other.test']}}}\n";
  auto config = loadFilterConfig(yaml);
  ASSERT_TRUE(config);
  EXPECT_FALSE(findInChain(route(*config, "nocors").chain, "cors"));
  // The route's entry replaces the default whole.
  EXPECT_FALSE(actual(*config, "https://app.example.com")->hasResponseHeader("Access-Control-Allow-Origin"));
  EXPECT_TRUE(actual(*config, "https://other.test")->hasResponseHeader("Access-Control-Allow-Origin"));
}

TEST_F(CorsFilterTest, ConfigErrorsThroughTheLoader) {
  EXPECT_THAT(loadErrors("default_filters: {cors: {allow_origins: ['https://a.test/path']}}\n"),
              ElementsAre(HasSubstr("is not an origin")));
  EXPECT_THAT(loadErrors("default_filters: {cors: {allow_origins: ['~(unclosed']}}\n"),
              ElementsAre(HasSubstr("bad origin pattern")));
  EXPECT_THAT(loadErrors("default_filters: {cors: {allow_origin: ['*']}}\n"), testing::SizeIs(2));
}

}  // namespace
}  // namespace gw::filter_test
