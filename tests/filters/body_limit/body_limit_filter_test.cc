// body_limit (SPEC §2, filter 4) through the real loader: the route's limit replaces the
// global limits.max_body_bytes in ctx.max_body_bytes (the core enforces it: 413 from
// Content-Length before the body is read, or once a chunked body passes it; see
// tests/integration/test_filters.py).
#include "filters/body_limit/body_limit_filter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/filters/filter_chain_test_util.h"

namespace gw::filter_test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// ctx.max_body_bytes after the request phases of `route_name`, starting, like the core,
// from limits.max_body_bytes.
uint64_t limitOn(const Config& config, std::string_view route_name) {
  TestRequest r(&config, &route(config, route_name), "POST");
  EXPECT_EQ(r.ctx.max_body_bytes, config.limits.max_body_bytes);
  EXPECT_EQ(runRequestPhases(route(config, route_name).chain, r), FilterStatus::Continue);
  EXPECT_EQ(r.driver.answers(), 0);
  return r.ctx.max_body_bytes;
}

TEST(BodyLimitFilterTest, RouteLimitOverridesTheGlobalOneBothWays) {
  auto config = loadFilterConfig(
      "limits: {max_body_bytes: 10MiB}\n"
      "default_filters: {body_limit: {max_bytes: 1MiB}, request_id: {}}\n"
      "routes:\n"
      "  - {name: uploads, match: {path_prefix: /up}, upstream: api,"
      " filters: {body_limit: {max_bytes: 100MiB}}}\n"
      "  - {name: tiny, match: {path_prefix: /tiny}, upstream: api,"
      " filters: {body_limit: {max_bytes: 16}}}\n"
      "  - {name: global, match: {path_prefix: /g}, upstream: api, filters: {body_limit: off}}\n"
      "  - {name: r, match: {path_prefix: /}, upstream: api}\n");
  ASSERT_TRUE(config);
  EXPECT_EQ(config->limits.max_body_bytes, 10u << 20);
  EXPECT_EQ(limitOn(*config, "r"), 1u << 20);
  EXPECT_EQ(limitOn(*config, "uploads"), 100u << 20);
  EXPECT_EQ(limitOn(*config, "tiny"), 16u);
  // Switched off: the global limit stays in force.
  EXPECT_FALSE(findInChain(route(*config, "global").chain, "body_limit"));
  EXPECT_EQ(limitOn(*config, "global"), 10u << 20);
}

TEST(BodyLimitFilterTest, PlaceInTheChainAndNothingElseTouched) {
  auto config = loadRoute("", "{body_limit: {max_bytes: 2KiB}, cors: {allow_origins: ['*']}, ip_access: {}}");
  ASSERT_TRUE(config);
  EXPECT_THAT(chainNames(route(*config).chain), ElementsAre("ip_access", "cors", "body_limit"));
  const Filter* f = findInChain(route(*config).chain, "body_limit");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->order(), FilterOrder::BodyLimit);
  EXPECT_FALSE(f->runsOnEveryResponse());
  TestRequest r(config.get(), &route(*config), "PUT");
  r.header("Content-Length", "999999");
  EXPECT_EQ(f->onRequestHeaders(r.ctx, r.headers), FilterStatus::Continue);
  EXPECT_EQ(r.ctx.max_body_bytes, 2048u);
  EXPECT_EQ(r.driver.answers(), 0);  // the core answers 413, not the filter
  EXPECT_EQ(r.headers.size(), 1u);
  // The same immutable filter gives the same limit to every request.
  TestRequest other(config.get(), &route(*config), "POST");
  other.ctx.max_body_bytes = 7;
  f->onRequestHeaders(other.ctx, other.headers);
  EXPECT_EQ(other.ctx.max_body_bytes, 2048u);
}

TEST(BodyLimitFilterTest, SizesAndErrors) {
  auto sizes = loadFilterConfig(
      "routes:\n"
      "  - {name: a, match: {path: /a}, upstream: api, filters: {body_limit: {max_bytes: 16KiB}}}\n"
      "  - {name: b, match: {path: /b}, upstream: api, filters: {body_limit: {max_bytes: 1500}}}\n"
      "  - {name: c, match: {path: /c}, upstream: api, filters: {body_limit: {max_bytes: 0}}}\n");
  ASSERT_TRUE(sizes);
  EXPECT_EQ(limitOn(*sizes, "a"), 16384u);
  EXPECT_EQ(limitOn(*sizes, "b"), 1500u);
  EXPECT_EQ(limitOn(*sizes, "c"), 0u);  // no body at all
  EXPECT_THAT(loadErrors("default_filters: {body_limit: {}}\n"),
              ElementsAre(HasSubstr("missing required key 'max_bytes'")));
  EXPECT_THAT(loadErrors("default_filters: {body_limit: {max_bytes: lots}}\n"),
              ElementsAre(HasSubstr("filters.yaml:3:")));
  EXPECT_THAT(loadErrors("default_filters: {body_limit: {max_bytes: 1MiB, max: 2}}\n"),
              ElementsAre(HasSubstr("max")));
}

}  // namespace
}  // namespace gw::filter_test
