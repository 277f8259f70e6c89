// The rate_limit filter with the memory store: counts, keys, limits together, dry_run,
// identity keys after authentication, and the response headers. Simulated clock; each test
// uses its own route name, since the process-wide bucket table outlives a test.
#include "filters/rate_limit/rate_limit_filter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <initializer_list>
#include <string>
#include <thread>

#include "tests/filters/rate_limit/rate_limit_test_util.h"

namespace gw::rate_limit::test {
namespace {

using ::testing::HasSubstr;

TEST(RateLimitFilterTest, SixthOfFivePerHourIsRefused) {
  SimulatedClock clock;
  Route route("five-an-hour", "limits: [{key: client_ip, requests: 5, per: 1h}]");
  ASSERT_EQ(route.chain().size(), 1u);
  EXPECT_EQ(route.chain()[0]->order(), FilterOrder::RateLimitBeforeAuth);
  for (int i = 0; i < 5; ++i) {
    Request r;
    EXPECT_EQ(route.run(r), 200) << i;
    EXPECT_EQ(r.header("RateLimit-Limit"), "5");
    EXPECT_EQ(r.header("RateLimit-Remaining"), std::to_string(4 - i));
    EXPECT_FALSE(r.response.headers.has("Retry-After"));
  }
  Request sixth;
  EXPECT_EQ(route.run(sixth), 429);
  EXPECT_EQ(sixth.driver.error_code, "RATE_LIMITED");
  EXPECT_EQ(sixth.header("Retry-After"), "720");  // one token every 12 minutes
  EXPECT_EQ(sixth.header("RateLimit-Remaining"), "0");
  EXPECT_EQ(sixth.header("RateLimit-Reset"), "3600");
  // The refused request took nothing: the next token still comes 720 s after the 5th.
  advance(719);
  Request early;
  EXPECT_EQ(route.run(early), 429);
  EXPECT_EQ(early.header("Retry-After"), "1");
  advance(1);
  Request later;
  EXPECT_EQ(route.run(later), 200);
  Request again;
  EXPECT_EQ(route.run(again), 429);
}

TEST(RateLimitFilterTest, ARefusalsResetNamesTheMomentOfRetryAfter) {
  // draft-ietf-httpapi-ratelimit-headers: with Retry-After, a refusing limit's t names the
  // same moment (its next token), not the moment its bucket is full again (3600 s here).
  SimulatedClock clock;
  Route route("t-is-retry-after", "limits: [{key: client_ip, requests: 5, per: 1h}]");
  for (int i = 0; i < 5; ++i) {
    Request r;
    EXPECT_EQ(route.run(r), 200) << i;
  }
  Request sixth;
  EXPECT_EQ(route.run(sixth), 429);
  EXPECT_EQ(sixth.header("Retry-After"), "720");
  EXPECT_EQ(sixth.header("RateLimit"), R"("client_ip-1h";r=0;t=720)");
  advance(719);
  Request early;
  EXPECT_EQ(route.run(early), 429);
  EXPECT_EQ(early.header("Retry-After"), "1");
  EXPECT_EQ(early.header("RateLimit"), R"("client_ip-1h";r=0;t=1)");
  // Admitted: t stays the time until the bucket is full (one token spent: 720 s).
  advance(1);
  Request admitted;
  EXPECT_EQ(route.run(admitted), 200);
  EXPECT_EQ(admitted.header("RateLimit"), R"("client_ip-1h";r=0;t=3600)");
}

TEST(RateLimitFilterTest, ItsFieldsReplaceTheUpstreamsAndLeaveTheRest) {
  SimulatedClock clock;
  Route route("replaces-upstream-fields", "limits: [{key: client_ip, requests: 5, per: 1h}]");
  Request r;
  for (auto [n, v] : {std::pair{"RateLimit-Remaining", "999"}, {"ratelimit", "\"x\";r=9"},
                      {"Content-Type", "text/plain"}, {"RATELIMIT-POLICY", "\"x\";q=9"},
                      {"Retry-After", "30"}}) {
    r.response.headers.addRef(n, v);
  }
  EXPECT_EQ(route.run(r), 200);
  const HeaderList& h = r.response.headers;
  EXPECT_EQ(h.count("RateLimit-Remaining"), 1u);
  EXPECT_EQ(h.get("RateLimit-Remaining"), "4");
  EXPECT_EQ(h.count("RateLimit"), 1u);
  EXPECT_EQ(h.count("RateLimit-Policy"), 1u);
  EXPECT_EQ(h.count("RateLimit-Limit"), 1u);
  EXPECT_EQ(h.count("RateLimit-Reset"), 1u);
  EXPECT_EQ(h.get("Content-Type"), "text/plain");
  EXPECT_EQ(h.get("Retry-After"), "30");  // not refused: the upstream's own stays
}

TEST(RateLimitFilterTest, BurstThenSteadyRate) {
  SimulatedClock clock;
  Route route("burst", "limits: [{key: client_ip, requests: 10, per: 1s, burst: 20}]");
  int admitted = 0;
  for (int i = 0; i < 30; ++i) {
    Request r;
    admitted += route.run(r) == 200;
  }
  EXPECT_EQ(admitted, 20);
  // 10 per second: one token every 100 ms.
  admitted = 0;
  for (int i = 0; i < 50; ++i) {
    advance(0.02);
    Request r;
    admitted += route.run(r) == 200;
  }
  EXPECT_EQ(admitted, 10);
}

TEST(RateLimitFilterTest, KeysAreSeparateAndMissingValuesShareDash) {
  SimulatedClock clock;
  Route by_ip("by-ip", "limits: [{key: client_ip, requests: 1, per: 1m}]");
  Request a("192.0.2.1"), b("192.0.2.2"), a2("192.0.2.1");
  EXPECT_EQ(by_ip.run(a), 200);
  EXPECT_EQ(by_ip.run(b), 200);
  EXPECT_EQ(by_ip.run(a2), 429);
  // Two spellings of one IPv6 address are one client.
  Request v6("2001:db8::1"), v6b("2001:0db8:0:0:0:0:0:0001");
  EXPECT_EQ(by_ip.run(v6), 200);
  EXPECT_EQ(by_ip.run(v6b), 429);

  Route by_header("by-header", "limits: [{key: 'header:X-Tenant', requests: 1, per: 1m}]");
  Request t1, t2, none1, none2, empty;
  t1.headers.add("x-tenant", "acme");
  t2.headers.add("X-TENANT", "globex");
  empty.headers.add("x-tenant", "");
  EXPECT_EQ(by_header.run(t1), 200);
  EXPECT_EQ(by_header.run(t2), 200);
  EXPECT_EQ(by_header.run(none1), 200);  // counted under "-"
  EXPECT_EQ(by_header.run(none2), 429);
  EXPECT_EQ(by_header.run(empty), 429);  // an empty value is no value

  Route whole("one-bucket", "limits: [{key: route, requests: 2, per: 1m}]");
  Request x("198.51.100.1"), y("198.51.100.2"), z("198.51.100.3");
  EXPECT_EQ(whole.run(x), 200);
  EXPECT_EQ(whole.run(y), 200);
  EXPECT_EQ(whole.run(z), 429);
}

TEST(RateLimitFilterTest, SharedPoolsAcrossRoutesOthersArePerRoute) {
  SimulatedClock clock;
  const char* shared = "limits: [{key: client_ip, requests: 2, per: 1m, shared: pool}]";
  Route one("shared-one", shared), two("shared-two", shared);
  Request a, b, c;
  EXPECT_EQ(one.run(a), 200);
  EXPECT_EQ(two.run(b), 200);
  EXPECT_EQ(one.run(c), 429);

  const char* own = "limits: [{key: client_ip, requests: 1, per: 1m}]";
  Route three("own-three", own), four("own-four", own);
  Request d, e;
  EXPECT_EQ(three.run(d), 200);
  EXPECT_EQ(four.run(e), 200);
}

constexpr const char* kTwoPerSecond = "{key: client_ip, requests: 2, per: 1s}";
constexpr const char* kThreePerMinute = "{key: client_ip, requests: 3, per: 1m}";

// A filter configuration with these limits, in this order.
std::string limitsOf(std::initializer_list<const char*> limits) {
  std::string yaml = "limits:\n";
  for (const char* l : limits) yaml += std::string("  - ") + l + "\n";
  return yaml;
}

// Two requests admitted, then `third` refused.
void admitTwoThenRefuse(Route& route, Request& third) {
  Request first, second;
  EXPECT_EQ(route.run(first), 200);
  EXPECT_EQ(route.run(second), 200);
  EXPECT_EQ(route.run(third), 429);
}

TEST(RateLimitFilterTest, EveryLimitAppliesAndARefusalTakesNothing) {
  SimulatedClock clock;
  Route route("two-limits", limitsOf({kTwoPerSecond, kThreePerMinute}));
  Request c;
  admitTwoThenRefuse(route, c);  // per second; the minute's third token is not spent
  EXPECT_EQ(c.header("Retry-After"), "1");
  advance(1);
  Request d, e;
  EXPECT_EQ(route.run(d), 200);  // the minute's last token
  EXPECT_EQ(d.header("RateLimit-Limit"), "3");
  EXPECT_EQ(d.header("RateLimit-Remaining"), "0");
  EXPECT_EQ(d.header("RateLimit"), R"("client_ip-1s";r=1;t=1, "client_ip-1m";r=0;t=59)");
  EXPECT_EQ(route.run(e), 429);  // per minute now
  EXPECT_EQ(e.header("Retry-After"), "19");
}

TEST(RateLimitFilterTest, OnlyTheRefusingLimitsResetFollowsRetryAfter) {
  // The minute's limit refuses at 2 s (its next token at 20 s); the second's had a token
  // (given back): its item still says when it is full again.
  SimulatedClock clock;
  Route route("t-of-the-refuser", limitsOf({kTwoPerSecond, kThreePerMinute}));
  for (int i = 0; i < 3; ++i) {
    if (i) advance(1);
    Request r;
    EXPECT_EQ(route.run(r), 200) << i;
  }
  Request refused;
  EXPECT_EQ(route.run(refused), 429);
  EXPECT_EQ(refused.header("Retry-After"), "18");
  EXPECT_EQ(refused.header("RateLimit"), R"("client_ip-1s";r=1;t=1, "client_ip-1m";r=0;t=18)");
}

TEST(RateLimitFilterTest, ATokenGivenBackShowsInTheAnswer) {
  // The minute's limit comes first: it takes a token, then the second's refuses and the
  // minute's token is given back. The 429 must describe the minute's bucket as the refund
  // left it: one token left, full again in 40 s (two tokens of 20 s spent), not 60.
  SimulatedClock clock;
  Route route("refund", limitsOf({kThreePerMinute, kTwoPerSecond}));
  Request c;
  admitTwoThenRefuse(route, c);
  EXPECT_EQ(c.header("RateLimit"), R"("client_ip-1m";r=1;t=40, "client_ip-1s";r=0;t=1)");
}

TEST(RateLimitFilterTest, DryRunCountsButNeverRefuses) {
  SimulatedClock clock;
  Route route("dry", R"(
limits:
  - {key: client_ip, requests: 1, per: 1m, dry_run: true}
  - {key: client_ip, requests: 100, per: 1m}
)");
  uint64_t before = routeCounters("dry").dry_run.load();
  for (int i = 0; i < 5; ++i) {
    Request r;
    EXPECT_EQ(route.run(r), 200);
    // Headers describe only the limits that are enforced.
    EXPECT_EQ(r.header("RateLimit-Limit"), "100");
    EXPECT_EQ(r.header("RateLimit-Policy"), R"("client_ip-1m";q=100;w=60)");
  }
  EXPECT_EQ(routeCounters("dry").dry_run.load() - before, 4u);
  EXPECT_EQ(routeCounters("dry").rate_limited.load(), 0u);
}

TEST(RateLimitFilterTest, IdentityLimitsRunAfterAuthentication) {
  SimulatedClock clock;
  Route route("identity", R"(
limits:
  - {key: client_ip, requests: 10, per: 1m}
  - {key: 'claim:sub', requests: 2, per: 1m}
)");
  ASSERT_EQ(route.chain().size(), 2u);
  EXPECT_EQ(route.chain()[0]->order(), FilterOrder::RateLimitBeforeAuth);
  EXPECT_EQ(route.chain()[1]->order(), FilterOrder::RateLimitAfterAuth);
  auto alice = std::make_shared<FakeIdentity>(std::map<std::string, std::string>{{"sub", "alice"}});
  auto bob = std::make_shared<FakeIdentity>(std::map<std::string, std::string>{{"sub", "bob"}});
  auto run_as = [&](std::shared_ptr<const Identity> who) {
    Request r;
    r.ctx.identity = std::move(who);
    int status = route.run(r);
    return std::make_pair(status, r.header("RateLimit-Remaining"));
  };
  EXPECT_EQ(run_as(alice), std::make_pair(200, std::string("1")));  // the tighter: claim
  EXPECT_EQ(run_as(alice), std::make_pair(200, std::string("0")));
  EXPECT_EQ(run_as(alice).first, 429);
  EXPECT_EQ(run_as(bob).first, 200);
  EXPECT_EQ(run_as(nullptr).first, 200);  // no claim: "-"

  Route keyed("api-key", "limits: [{key: api_key, requests: 1, per: 1m}]");
  ASSERT_EQ(keyed.chain().size(), 1u);
  EXPECT_EQ(keyed.chain()[0]->order(), FilterOrder::RateLimitAfterAuth);
  Request k1, k2, k3;
  k1.ctx.user = "partner-a";
  k2.ctx.user = "partner-a";
  k3.ctx.user = "partner-b";
  EXPECT_EQ(keyed.run(k1), 200);
  EXPECT_EQ(keyed.run(k2), 429);
  EXPECT_EQ(k2.header("Retry-After"), "60");
  EXPECT_EQ(keyed.run(k3), 200);
}

TEST(RateLimitFilterTest, HeadersFollowTheDraft) {
  SimulatedClock clock;
  Route route("headers", R"(
limits:
  - {key: client_ip, requests: 100, per: 1m, burst: 150}
  - {key: client_ip, requests: 1000, per: 1h}
  - {key: route, requests: 5, per: 500ms, shared: pool-b}
)");
  Request r;
  EXPECT_EQ(route.run(r), 200);
  EXPECT_EQ(r.header("RateLimit-Policy"),
            R"("client_ip-1m";q=100;w=60, "client_ip-1h";q=1000;w=3600, "pool-b";q=5;w=1)");
  EXPECT_EQ(r.header("RateLimit"),
            R"("client_ip-1m";r=149;t=1, "client_ip-1h";r=999;t=4, "pool-b";r=4;t=1)");
  EXPECT_EQ(r.header("RateLimit-Limit"), "5");
  EXPECT_EQ(r.header("RateLimit-Remaining"), "4");
  // An upstream's own fields are replaced, not doubled.
  Request up;
  up.response.headers.add("RateLimit-Limit", "7");
  EXPECT_EQ(route.run(up), 200);
  EXPECT_EQ(up.response.headers.count("RateLimit-Limit"), 1u);
}

TEST(RateLimitFilterTest, RefusalsAreCounted) {
  SimulatedClock clock;
  Route route("counted", "limits: [{key: client_ip, requests: 1, per: 1m}]");
  uint64_t before = routeCounters("counted").rate_limited.load();
  for (int i = 0; i < 4; ++i) {
    Request r;
    route.run(r);
  }
  EXPECT_EQ(routeCounters("counted").rate_limited.load() - before, 3u);
  bool seen = false;
  forEachRouteCounters([&](const RouteCounters& c) { seen |= c.route == "counted"; });
  EXPECT_TRUE(seen);
}

// Exact across threads (the workers of one process): with the clock stopped, exactly
// `burst` requests get through, however they interleave.
TEST(RateLimitFilterTest, ExactAcrossThreads) {
  SimulatedClock clock;
  Route route("threads", "limits: [{key: route, requests: 1000, per: 1h}]");
  std::atomic<int> admitted{0};
  auto worker = [&] {
    for (int i = 0; i < 1500; ++i) {
      Request r;
      admitted += route.run(r) == 200;
    }
  };
  std::thread t1(worker), t2(worker);
  t1.join();
  t2.join();
  EXPECT_EQ(admitted.load(), 1000);
}

TEST(RateLimitFilterTest, DefaultChainGetsNoFilter) {
  auto parsed = test_util::parseFilter<RateLimitConfig>(
      parseRateLimitConfig, "limits: [{key: client_ip, requests: 1, per: 1s}]");
  std::vector<std::shared_ptr<const Filter>> chain;
  Config whole;
  buildRateLimit(parsed.config, nullptr, whole, chain);
  EXPECT_TRUE(chain.empty());
}

TEST(RateLimitFilterTest, TooManyLimitsIsAConfigError) {
  std::string yaml = "limits:\n";
  for (int i = 0; i < 33; ++i) yaml += "  - {key: client_ip, requests: 1, per: 1s}\n";
  auto parsed = test_util::parseFilter<RateLimitConfig>(parseRateLimitConfig, yaml);
  ASSERT_EQ(parsed.errors.size(), 1u);
  EXPECT_THAT(parsed.errors[0], HasSubstr("at most 32 limits"));
}

}  // namespace
}  // namespace gw::rate_limit::test
