#include "filters/jwt/jwt_filter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/filters/auth/auth_metrics.h"
#include "tests/filters/auth/fake_request.h"
#include "tests/filters/jwt/jwt_test_util.h"
#include "tests/filters/jwt/test_http_server.h"

namespace gw::jwt {
namespace {

using auth::Reason;
using nlohmann::json;
using test_util::FakeRequest;
using test_util::FakeWorker;
using test_util::testKey;
using testing::HasSubstr;

constexpr uint64_t kNowMs = 1700000000000ull;
constexpr int64_t kNow = 1700000000;

JwtProviderConfig providerConfig(const std::string& name) {
  JwtProviderConfig p;
  p.name = name;
  p.issuer = "https://issuer.example";
  p.audiences = {"api"};
  p.algorithms = {"RS256", "ES256", "EdDSA", "HS256"};
  p.leeway = Millis(30000);
  p.forward_claims = {{"sub", "X-User-Id"}, {"roles", "X-Roles"}, {"note", "X-Note"}};
  p.jwks_file = name + ".json";
  p.jwks_file_content = test_util::jwksOf({&testKey(Algorithm::RS256), &testKey(Algorithm::ES256),
                                           &testKey(Algorithm::EdDSA), &testKey(Algorithm::HS256)});
  return p;
}

json claims() {
  return {{"iss", "https://issuer.example"},
          {"aud", "api"},
          {"sub", "user-1"},
          {"exp", kNow + 300},
          {"roles", {"admin", "ops"}},
          {"scope", "read write"}};
}

std::shared_ptr<JwtFilter> makeFilter(const JwtProviderConfig& p,
                                      std::vector<JwtConfig::ClaimRequirement> require = {},
                                      std::vector<std::string> scopes = {},
                                      std::string_view route = "r") {
  auto config = std::make_shared<const JwtConfig>(p.name, SourceLocation{}, std::move(require),
                                                  std::move(scopes));
  auto provider = std::make_shared<const Provider>(p, acquireKeyStore(p));
  return std::make_shared<JwtFilter>(config, provider, route);
}

class JwtFilterTest : public testing::Test {
 protected:
  FilterStatus run(FakeRequest& r, const std::string& authorization) {
    if (!authorization.empty()) r.headers.add("Authorization", authorization);
    return filter_->onRequestHeaders(r.ctx, r.headers);
  }
  FilterStatus runToken(FakeRequest& r, const std::string& token) {
    return run(r, "Bearer " + token);
  }

  FakeWorker worker_;
  JwtProviderConfig config_ = providerConfig("filter-main");
  std::shared_ptr<JwtFilter> filter_ = makeFilter(config_);
};

TEST_F(JwtFilterTest, AdmitsAValidTokenAndForwardsClaims) {
  FakeRequest r(worker_, kNowMs);
  r.headers.add("X-User-Id", "spoofed");
  r.headers.add("x-roles", "spoofed");
  r.headers.add("X-Note", "spoofed");  // removed even though the token has no `note`
  EXPECT_EQ(runToken(r, testKey(Algorithm::ES256).sign(claims())), FilterStatus::Continue);
  EXPECT_EQ(r.driver.answers, 0);
  EXPECT_EQ(r.ctx.user, "user-1");
  ASSERT_TRUE(r.ctx.identity);
  EXPECT_EQ(r.ctx.identity->claim("sub"), "user-1");
  EXPECT_EQ(r.headers.count("x-user-id"), 1u);
  EXPECT_EQ(r.headers.get("X-User-Id"), "user-1");
  EXPECT_EQ(r.headers.get("X-Roles"), "admin,ops");
  EXPECT_FALSE(r.headers.has("X-Note"));
  EXPECT_TRUE(r.headers.has("Authorization"));  // the upstream may want it too
}

TEST_F(JwtFilterTest, ClaimsThatWouldBreakTheHeaderBlockAreNotForwarded) {
  FakeRequest r(worker_, kNowMs);
  json c = claims();
  c["sub"] = "user-1\r\nX-Admin: yes";
  c["note"] = "caf\xc3\xa9";  // UTF-8 is fine
  EXPECT_EQ(runToken(r, testKey(Algorithm::EdDSA).sign(c)), FilterStatus::Continue);
  EXPECT_FALSE(r.headers.has("X-User-Id"));
  EXPECT_EQ(r.headers.get("X-Note"), "caf\xc3\xa9");
}

TEST_F(JwtFilterTest, MissingCredentialsGetAChallengeWithoutError) {
  for (std::string authorization : {"", "Basic dXNlcjpwYXNz", "Bearerfoo", "Digest x"}) {
    FakeRequest r(worker_, kNowMs);
    EXPECT_EQ(run(r, authorization), FilterStatus::StopReplied) << authorization;
    EXPECT_EQ(r.driver.status, 401);
    EXPECT_EQ(r.driver.error_code, "UNAUTHORIZED");
    EXPECT_EQ(r.responseHeader("WWW-Authenticate"), "Bearer realm=\"gateway\"");
    EXPECT_EQ(r.ctx.user, "");
  }
}

TEST_F(JwtFilterTest, SchemeIsCaseInsensitive) {
  FakeRequest r(worker_, kNowMs);
  EXPECT_EQ(run(r, "bEaReR   " + testKey(Algorithm::RS256).sign(claims())), FilterStatus::Continue);
}

TEST_F(JwtFilterTest, EachFailureIsA401WithItsDescription) {
  json expired = claims();
  expired["exp"] = kNow - 60;
  json future = claims();
  future["nbf"] = kNow + 60;
  json issuer = claims();
  issuer["iss"] = "https://evil.example";
  json audience = claims();
  audience["aud"] = "other";
  test_util::TestKey stranger(Algorithm::ES256, "stranger");
  std::string good = testKey(Algorithm::ES256).sign(claims());
  std::string other = testKey(Algorithm::ES256).sign(json{{"x", 1}});
  std::string tampered = good.substr(0, good.rfind('.')) + other.substr(other.rfind('.'));
  struct Case {
    std::string authorization;
    Reason reason;
    std::string description;
  };
  std::vector<Case> cases = {
      {"Bearer", Reason::Malformed, "The token is malformed"},
      {"Bearer not.a.token", Reason::Malformed, "The token is malformed"},
      {"Bearer " + tampered, Reason::BadSignature, "The token signature is invalid"},
      {"Bearer " + testKey(Algorithm::ES256).sign(expired), Reason::Expired,
       "The token has expired"},
      {"Bearer " + testKey(Algorithm::ES256).sign(future), Reason::NotYetValid,
       "The token is not valid yet"},
      {"Bearer " + testKey(Algorithm::ES256).sign(issuer), Reason::WrongIssuer,
       "The token issuer is not accepted"},
      {"Bearer " + testKey(Algorithm::ES256).sign(audience), Reason::WrongAudience,
       "The token audience is not accepted"},
      {"Bearer " + stranger.sign(claims()), Reason::UnknownKid, "The token signing key is unknown"},
      {"Bearer " + testKey(Algorithm::ES384).sign(claims()), Reason::AlgNotAllowed,
       "The token algorithm is not accepted"},
  };
  for (const auto& c : cases) {
    FakeRequest r(worker_, kNowMs);
    EXPECT_EQ(run(r, c.authorization), FilterStatus::StopReplied) << c.description;
    EXPECT_EQ(r.driver.status, 401);
    EXPECT_EQ(r.driver.message, c.description);
    EXPECT_EQ(r.responseHeader("WWW-Authenticate"),
              "Bearer realm=\"gateway\", error=\"invalid_token\", error_description=\"" +
                  c.description + "\"");
    EXPECT_EQ(r.ctx.user, "");
    EXPECT_FALSE(r.ctx.identity);
  }
}

TEST_F(JwtFilterTest, FailuresAreCountedPerRouteAndReason) {
  auto filter = makeFilter(config_, {}, {}, "counted-route");
  for (int i = 0; i < 3; ++i) {
    FakeRequest r(worker_, kNowMs);
    filter->onRequestHeaders(r.ctx, r.headers);
  }
  FakeRequest r(worker_, kNowMs);
  r.headers.add("Authorization", "Bearer x.y.z");
  filter->onRequestHeaders(r.ctx, r.headers);
  EXPECT_EQ(test_util::authFailures("counted-route", Reason::Missing), 3u);
  EXPECT_EQ(test_util::authFailures("counted-route", Reason::Malformed), 1u);
}

TEST_F(JwtFilterTest, TwoAuthorizationHeadersAreMalformed) {
  FakeRequest r(worker_, kNowMs);
  std::string token = testKey(Algorithm::RS256).sign(claims());
  r.headers.add("Authorization", "Bearer " + token);
  EXPECT_EQ(run(r, "Bearer " + token), FilterStatus::StopReplied);
  EXPECT_THAT(r.responseHeader("WWW-Authenticate"), HasSubstr("error=\"invalid_token\""));
}

TEST_F(JwtFilterTest, UnmetClaimsAndScopesAre403) {
  auto by_role = makeFilter(config_, {{"roles", {"root"}}});
  auto by_scope = makeFilter(config_, {}, {"read", "delete"});
  std::string token = testKey(Algorithm::ES256).sign(claims());
  for (auto* f : {by_role.get(), by_scope.get()}) {
    FakeRequest r(worker_, kNowMs);
    r.headers.add("Authorization", "Bearer " + token);
    EXPECT_EQ(f->onRequestHeaders(r.ctx, r.headers), FilterStatus::StopReplied);
    EXPECT_EQ(r.driver.status, 403);
    EXPECT_EQ(r.driver.error_code, "FORBIDDEN");
    EXPECT_THAT(r.responseHeader("WWW-Authenticate"),
                testing::StartsWith("Bearer realm=\"gateway\", error=\"insufficient_scope\""));
    EXPECT_EQ(r.ctx.user, "");
  }
  FakeRequest r(worker_, kNowMs);
  r.headers.add("Authorization", "Bearer " + token);
  by_scope->onRequestHeaders(r.ctx, r.headers);
  EXPECT_THAT(r.responseHeader("WWW-Authenticate"), HasSubstr(", scope=\"read delete\""));

  auto satisfied = makeFilter(config_, {{"roles", {"ops"}}, {"sub", {"user-1"}}}, {"write"});
  FakeRequest ok(worker_, kNowMs);
  ok.headers.add("Authorization", "Bearer " + token);
  EXPECT_EQ(satisfied->onRequestHeaders(ok.ctx, ok.headers), FilterStatus::Continue);
}

TEST_F(JwtFilterTest, ARepeatedTokenIsServedFromTheCache) {
  const TokenCache& cache = tokenCache(worker_, filter_->provider());
  std::string token = testKey(Algorithm::RS256).sign(claims());
  uint64_t hits = cache.hits();
  for (int i = 0; i < 3; ++i) {
    FakeRequest r(worker_, kNowMs + uint64_t(i));
    EXPECT_EQ(runToken(r, token), FilterStatus::Continue);
    EXPECT_EQ(r.headers.get("X-User-Id"), "user-1");
  }
  EXPECT_EQ(cache.hits(), hits + 2);
  // Per-route rules still apply to a cached token.
  auto strict = makeFilter(config_, {{"roles", {"root"}}});
  FakeRequest r(worker_, kNowMs);
  r.headers.add("Authorization", "Bearer " + token);
  EXPECT_EQ(strict->onRequestHeaders(r.ctx, r.headers), FilterStatus::StopReplied);
  EXPECT_EQ(cache.hits(), hits + 3);
  // ... and so does expiry: the entry lives until exp + leeway.
  FakeRequest late(worker_, uint64_t(kNow + 300) * 1000 + 30000);
  EXPECT_EQ(runToken(late, token), FilterStatus::StopReplied);
  EXPECT_EQ(late.driver.message, "The token has expired");
}

TEST_F(JwtFilterTest, AReloadWithAnotherPolicyDoesNotReuseCachedVerdicts) {
  std::string token = testKey(Algorithm::RS256).sign(claims());
  FakeRequest first(worker_, kNowMs);
  EXPECT_EQ(runToken(first, token), FilterStatus::Continue);
  JwtProviderConfig changed = config_;
  changed.audiences = {"another-api"};
  auto reloaded = makeFilter(changed);
  FakeRequest r(worker_, kNowMs);
  r.headers.add("Authorization", "Bearer " + token);
  EXPECT_EQ(reloaded->onRequestHeaders(r.ctx, r.headers), FilterStatus::StopReplied);
  EXPECT_EQ(r.driver.message, "The token audience is not accepted");
}

TEST(JwtFilterKeysTest, NoKeysYetIs503WithOrWithoutAToken) {
  int port;
  {
    test_util::TestHttpServer gone;
    port = gone.port();
  }
  JwtProviderConfig p = providerConfig("filter-unreachable");
  p.jwks_file.clear();
  p.jwks_file_content.clear();
  p.jwks_uri = "http://127.0.0.1:" + std::to_string(port) + "/jwks";
  auto filter = makeFilter(p);
  FakeWorker worker;
  FakeRequest r(worker, kNowMs);
  r.headers.add("Authorization", "Bearer " + testKey(Algorithm::ES256).sign(claims()));
  EXPECT_EQ(filter->onRequestHeaders(r.ctx, r.headers), FilterStatus::StopReplied);
  EXPECT_EQ(r.driver.status, 503);
  EXPECT_EQ(r.driver.error_code, "SERVICE_UNAVAILABLE");
  EXPECT_FALSE(r.ctx.response_headers_to_add.has("WWW-Authenticate"));
  // The route can authenticate nobody yet (SPEC §2: "its routes answer 503").
  FakeRequest none(worker, kNowMs);
  EXPECT_EQ(filter->onRequestHeaders(none.ctx, none.headers), FilterStatus::StopReplied);
  EXPECT_EQ(none.driver.status, 503);
  EXPECT_FALSE(none.ctx.response_headers_to_add.has("WWW-Authenticate"));
}

class JwtRotationTest : public testing::Test {
 protected:
  JwtRotationTest() {
    server_.respond(200, test_util::jwksOf({&testKey(Algorithm::ES256)}));
    config_ =
        providerConfig("filter-rotation-" +
                       std::string(testing::UnitTest::GetInstance()->current_test_info()->name()));
    config_.jwks_file.clear();
    config_.jwks_file_content.clear();
    config_.jwks_uri = server_.url();
    config_.jwks_refresh = Millis(3600000);
    filter_ = makeFilter(config_);
    auto& keys = filter_->provider().keys();
    EXPECT_TRUE(worker_.runUntil([&] { return keys.version() != 0; }));
  }

  test_util::TestHttpServer server_;
  FakeWorker worker_;
  JwtProviderConfig config_;
  std::shared_ptr<JwtFilter> filter_;
};

TEST_F(JwtRotationTest, AnUnknownKidWaitsForTheRefetch) {
  test_util::TestKey rotated(Algorithm::ES256, "rotated-key");
  server_.respond(200, test_util::jwksOf({&testKey(Algorithm::ES256), &rotated}));
  FakeRequest r(worker_, kNowMs);
  r.headers.add("Authorization", "Bearer " + rotated.sign(claims()));
  EXPECT_EQ(filter_->onRequestHeaders(r.ctx, r.headers), FilterStatus::StopWait);
  EXPECT_EQ(r.driver.answers + r.driver.continued, 0);
  ASSERT_TRUE(worker_.runUntil([&] { return r.driver.continued + r.driver.answers > 0; }));
  EXPECT_EQ(r.driver.continued, 1);
  EXPECT_EQ(r.driver.answers, 0);
  EXPECT_EQ(r.ctx.user, "user-1");
  EXPECT_EQ(r.headers.get("X-User-Id"), "user-1");
  EXPECT_EQ(server_.requests(), 2);
}

TEST_F(JwtRotationTest, AKidStillUnknownAfterTheRefetchIs401) {
  test_util::TestKey stranger(Algorithm::ES256, "never-published");
  FakeRequest r(worker_, kNowMs);
  r.headers.add("Authorization", "Bearer " + stranger.sign(claims()));
  EXPECT_EQ(filter_->onRequestHeaders(r.ctx, r.headers), FilterStatus::StopWait);
  ASSERT_TRUE(worker_.runUntil([&] { return r.driver.continued + r.driver.answers > 0; }));
  EXPECT_EQ(r.driver.status, 401);
  EXPECT_EQ(r.driver.message, "The token signing key is unknown");
  // Within 10 s of that refetch, unknown kids are refused at once.
  FakeRequest again(worker_, kNowMs + 5000);
  again.headers.add("Authorization", "Bearer " + stranger.sign(claims()));
  EXPECT_EQ(filter_->onRequestHeaders(again.ctx, again.headers), FilterStatus::StopReplied);
  EXPECT_EQ(server_.requests(), 2);
}

TEST_F(JwtRotationTest, AnAbandonedRequestIsNotResumed) {
  test_util::TestKey rotated(Algorithm::ES256, "rotated-late");
  server_.respond(200, test_util::jwksOf({&rotated}));
  FakeRequest r(worker_, kNowMs);
  r.headers.add("Authorization", "Bearer " + rotated.sign(claims()));
  EXPECT_EQ(filter_->onRequestHeaders(r.ctx, r.headers), FilterStatus::StopWait);
  filter_->onAbandon(r.ctx);
  auto& keys = filter_->provider().keys();
  ASSERT_TRUE(worker_.runUntil([&] { return keys.completedFetches() >= 2; }));
  worker_.runUntil([] { return false; }, std::chrono::milliseconds(50));
  EXPECT_EQ(r.driver.continued + r.driver.answers, 0);
}

}  // namespace
}  // namespace gw::jwt
