// request_id (SPEC §2, filter 1) through the real loader: a well-formed incoming id is
// kept, anything else replaced by a generated UUIDv7; the id is forwarded upstream, echoed
// on every response (the gateway's own included) and unique.
#include "filters/request_id/request_id_filter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <unordered_set>

#include "tests/filters/filter_chain_test_util.h"

namespace gw::filter_test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::shared_ptr<const Config> defaultRequestId() { return loadRoute("", "{request_id: {}}"); }

TEST(RequestIdFilterTest, ConfiguredThroughDefaultFiltersFirstInChain) {
  // Listed last in the file, it still runs first.
  auto config = loadRoute("", "{security_headers: {}, body_limit: {max_bytes: 1KiB}, request_id: {}}");
  ASSERT_TRUE(config);
  EXPECT_THAT(chainNames(route(*config).chain),
              ElementsAre("request_id", "body_limit", "security_headers"));
  EXPECT_EQ(route(*config).chain[0]->order(), FilterOrder::RequestId);
  EXPECT_TRUE(route(*config).chain[0]->runsOnEveryResponse());
  // The chain of answers given before a route is known has it too (404s carry the id).
  EXPECT_THAT(chainNames(config->default_chain), ElementsAre("request_id", "body_limit", "security_headers"));
}

TEST(RequestIdFilterTest, ValidIncomingIdIsKeptForwardedAndEchoed) {
  auto config = defaultRequestId();
  ASSERT_TRUE(config);
  const auto& chain = route(*config).chain;
  for (std::string id : {std::string("abc.DEF_123-xyz"), std::string("a"), std::string(128, 'Z'),
                         std::string("0.-_")}) {
    TestRequest r(config.get(), &route(*config));
    r.header("Host", "gw.example.test").header("X-Request-ID", id);
    EXPECT_EQ(runChain(chain, r), FilterStatus::Continue);
    EXPECT_EQ(r.ctx.request_id, id);
    EXPECT_EQ(r.driver.generated, 0) << id;
    EXPECT_EQ(r.forwardedCount("x-request-id"), 1u);
    EXPECT_EQ(r.forwardedHeader("X-Request-ID"), id);
    // Echoed, and still intact after the input block was reused (copied to the arena).
    EXPECT_EQ(r.responseHeaderAll("X-Request-ID"), std::vector<std::string>{id});
  }
}

TEST(RequestIdFilterTest, InvalidOrMissingIdIsReplacedByAGeneratedUuidV7) {
  auto config = defaultRequestId();
  ASSERT_TRUE(config);
  const auto& chain = route(*config).chain;
  const std::string kInvalid[] = {std::string(129, 'a'), "has space", "a/b", "semi;colon",
                                  "quote\"", "uni\xc3\xa9", "tab\tx", "a,b", "{braces}", ""};
  for (const std::string& bad : kInvalid) {
    TestRequest r(config.get(), &route(*config));
    r.header("X-Request-ID", bad);
    runChain(chain, r);
    std::string id(r.ctx.request_id);
    EXPECT_NE(id, bad);
    EXPECT_TRUE(isUuidV7(id)) << "'" << bad << "' -> '" << id << "'";
    EXPECT_EQ(r.driver.generated, 1);
    // The client's bad value never reaches the upstream: one field, ours.
    EXPECT_EQ(r.forwardedCount("X-Request-ID"), 1u) << bad;
    EXPECT_EQ(r.forwardedHeader("X-Request-ID"), id);
    EXPECT_EQ(r.responseHeaderAll("X-Request-ID"), std::vector<std::string>{id});
  }
  TestRequest none(config.get(), &route(*config));
  runChain(chain, none);
  EXPECT_TRUE(isUuidV7(none.ctx.request_id)) << none.ctx.request_id;
  EXPECT_EQ(none.forwardedHeader("x-request-id"), none.ctx.request_id);
  EXPECT_EQ(none.responseHeader("x-request-id"), none.ctx.request_id);
}

TEST(RequestIdFilterTest, ValidityBoundaries) {
  EXPECT_TRUE(request_id::isValidRequestId(std::string(128, '9')));
  EXPECT_FALSE(request_id::isValidRequestId(std::string(129, '9')));
  EXPECT_FALSE(request_id::isValidRequestId(""));
  EXPECT_TRUE(request_id::isValidRequestId("AZaz09._-"));
  for (char c : std::string("!\"#$%&'()*+,/:;<=>?@[\\]^`{|}~ \x7f")) {
    EXPECT_FALSE(request_id::isValidRequestId(std::string("id") + c)) << int(c);
  }
  EXPECT_FALSE(request_id::isValidRequestId(std::string_view("a\0b", 3)));
}

TEST(RequestIdFilterTest, SeveralIncomingFieldsForwardOnlyOne) {
  auto config = defaultRequestId();
  ASSERT_TRUE(config);
  TestRequest r(config.get(), &route(*config));
  r.header("X-Request-ID", "first-id").header("x-request-id", "second-id");
  runChain(route(*config).chain, r);
  EXPECT_EQ(r.ctx.request_id, "first-id");
  EXPECT_EQ(r.forwardedCount("X-Request-ID"), 1u);
  EXPECT_EQ(r.forwardedHeader("X-Request-ID"), "first-id");
}

TEST(RequestIdFilterTest, UpstreamsOwnIdIsReplacedByOurs) {
  auto config = defaultRequestId();
  ASSERT_TRUE(config);
  TestRequest r(config.get(), &route(*config));
  r.header("X-Request-ID", "client-id");
  runChain(route(*config).chain, r, 200, {{"X-Request-Id", "upstream-made-this"}});
  EXPECT_EQ(r.responseHeaderAll("X-Request-ID"), std::vector<std::string>{"client-id"});
}

TEST(RequestIdFilterTest, CustomHeaderName) {
  auto config = loadRoute("", "{request_id: {header: X-Correlation-ID}}");
  ASSERT_TRUE(config);
  const auto& chain = route(*config).chain;
  {
    TestRequest r(config.get(), &route(*config));
    r.header("x-correlation-id", "corr-42").header("X-Request-ID", "not-the-id");
    runChain(chain, r);
    EXPECT_EQ(r.ctx.request_id, "corr-42");
    EXPECT_EQ(r.forwardedHeader("X-Correlation-ID"), "corr-42");
    EXPECT_EQ(r.forwardedCount("X-Correlation-ID"), 1u);
    EXPECT_EQ(r.responseHeader("X-Correlation-ID"), "corr-42");
    EXPECT_FALSE(r.hasResponseHeader("X-Request-ID"));
  }
  {
    TestRequest r(config.get(), &route(*config));
    r.header("X-Request-ID", "ignored-here");
    runChain(chain, r);
    EXPECT_TRUE(isUuidV7(r.ctx.request_id)) << r.ctx.request_id;
    EXPECT_EQ(r.forwardedHeader("X-Correlation-ID"), r.ctx.request_id);
    EXPECT_EQ(r.responseHeader("X-Correlation-ID"), r.ctx.request_id);
  }
  EXPECT_THAT(loadErrors("default_filters: {request_id: {header: 'Bad Header'}}\n"),
              ElementsAre(HasSubstr("filters.yaml:3:")));
  EXPECT_THAT(loadErrors("default_filters: {request_id: {hedaer: X-Id}}\n"),
              ElementsAre(HasSubstr("hedaer")));
}

TEST(RequestIdFilterTest, EchoedOnLocalRepliesToo) {
  auto config = defaultRequestId();
  ASSERT_TRUE(config);
  const auto& chain = route(*config).chain;
  // A later stage answered (a 429, a 502): the id the request phase chose is echoed.
  TestRequest r(config.get(), &route(*config));
  r.header("X-Request-ID", "client-id-7");
  runRequestPhases(chain, r);
  answerLocally(chain, r, 429);
  EXPECT_EQ(r.responseHeader("X-Request-ID"), "client-id-7");

  // An answer before the chain ran (a 400 before routing): the response phase still runs
  // (runsOnEveryResponse) and makes an id, which the request keeps for the log.
  TestRequest early(config.get(), nullptr);
  answerLocally(config->default_chain, early, 400);
  EXPECT_TRUE(isUuidV7(early.ctx.request_id)) << early.ctx.request_id;
  EXPECT_EQ(early.responseHeader("X-Request-ID"), early.ctx.request_id);
}

TEST(RequestIdFilterTest, IdsAreUniqueAndTimeOrdered) {
  auto config = defaultRequestId();
  ASSERT_TRUE(config);
  const auto& chain = route(*config).chain;
  auto now_ms = [] {
    return uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count());
  };
  uint64_t before = now_ms();
  std::unordered_set<std::string> ids;
  for (int i = 0; i < 10000; ++i) {
    TestRequest r(config.get(), &route(*config));
    runChain(chain, r);
    ASSERT_TRUE(isUuidV7(r.ctx.request_id)) << r.ctx.request_id;
    ids.insert(std::string(r.ctx.request_id));
  }
  uint64_t after = now_ms();
  EXPECT_EQ(ids.size(), 10000u);
  // The first 48 bits are the Unix time in milliseconds (coarse clock: allow some slack).
  for (const std::string& id : ids) {
    std::string hex = id.substr(0, 8) + id.substr(9, 4);
    uint64_t ms = std::stoull(hex, nullptr, 16);
    ASSERT_GE(ms + 50, before) << id;
    ASSERT_LE(ms, after + 50) << id;
  }
  // Two workers (each seeded from the kernel) do not collide either.
  Server server("unused.yaml");
  Worker a(server, 0), b(server, 1);
  StringArena arena;
  std::unordered_set<std::string> both;
  for (int i = 0; i < 10000; ++i) {
    both.insert(std::string(a.newRequestId(arena)));
    both.insert(std::string(b.newRequestId(arena)));
    if (i % 1000 == 0) arena.reset();
  }
  EXPECT_EQ(both.size(), 20000u);
}

}  // namespace
}  // namespace gw::filter_test
