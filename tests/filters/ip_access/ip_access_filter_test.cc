// ip_access (SPEC §2, filter 2) through the real loader: allow/deny CIDR lists on the real
// client address (IPv4, IPv6, IPv4-mapped), deny wins, an empty allow admits everyone,
// 403 through sendLocalReply.
#include "filters/ip_access/ip_access_filter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "tests/filters/filter_chain_test_util.h"

namespace gw::filter_test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

class IpAccessFilterTest : public ::testing::Test {
 protected:
  // The status the filter gives `ip`: 0 when it lets the request go on.
  int verdict(const Config& config, std::string_view ip) {
    const Filter* f = findInChain(route(config).chain, "ip_access");
    EXPECT_TRUE(f);
    if (!f) return -1;
    TestRequest r(&config, &route(config), "GET", ip);
    FilterStatus s = f->onRequestHeaders(r.ctx, r.headers);
    if (s == FilterStatus::Continue) {
      EXPECT_EQ(r.driver.answers(), 0);
      return 0;
    }
    EXPECT_EQ(s, FilterStatus::StopReplied);
    EXPECT_EQ(r.driver.local_replies, 1);
    EXPECT_EQ(r.driver.error_code, "FORBIDDEN");
    EXPECT_FALSE(r.driver.message.empty());
    return r.driver.status;
  }

  struct Expected {
    const char* ip;
    int status;  // as verdict() gives it
  };

  void expectVerdicts(const std::string& route_filters, std::initializer_list<Expected> cases) {
    SCOPED_TRACE(route_filters);
    auto config = loadRoute(route_filters);
    ASSERT_TRUE(config);
    for (const Expected& c : cases) {
      SCOPED_TRACE(c.ip);
      EXPECT_EQ(verdict(*config, c.ip), c.status);
    }
  }
};

TEST_F(IpAccessFilterTest, AllowAndDenyIpv4AndIpv6) {
  expectVerdicts(
      "{ip_access: {allow: [10.0.0.0/8, '2001:db8::/32', 192.0.2.7], "
      "deny: [10.0.0.66/32, 10.9.0.0/16, '2001:db8:bad::/48']}}",
      {
          {"10.1.2.3", 0},
          {"10.255.255.255", 0},
          {"192.0.2.7", 0},  // a host address is a /32
          {"192.0.2.8", 403},
          {"11.0.0.1", 403},  // not in allow
          {"10.0.0.66", 403},  // deny wins over allow
          {"10.0.0.67", 0},
          {"10.9.200.1", 403},
          {"2001:db8::1", 0},
          {"2001:0DB8:ffff::1", 0},
          {"2001:db8:bad::1", 403},
          {"2001:db8:bad:ffff::1", 403},
          {"2001:db9::1", 403},
          {"::1", 403},
      });
}

TEST_F(IpAccessFilterTest, Ipv4MappedAddressesAreTheIpv4Client) {
  expectVerdicts("{ip_access: {allow: [10.0.0.0/8], deny: [10.0.0.66]}}",
                 {
                     // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d.
                     {"::ffff:10.1.2.3", 0},
                     {"::ffff:10.0.0.66", 403},
                     {"::ffff:11.0.0.1", 403},
                     // ...but the IPv4-compatible or NAT64 forms are other addresses.
                     {"64:ff9b::10.1.2.3", 403},
                 });
  // And a list written in the mapped IPv6 form applies to IPv4 clients.
  expectVerdicts("{ip_access: {deny: ['::ffff:192.0.2.0/120']}}",
                 {{"192.0.2.99", 403}, {"192.0.3.1", 0}});
}

TEST_F(IpAccessFilterTest, DenyWinsEvenOverAnExactAllow) {
  expectVerdicts("{ip_access: {allow: [203.0.113.5/32, '::/0', 0.0.0.0/0], deny: [203.0.113.0/24]}}",
                 {{"203.0.113.5", 403}, {"203.0.114.5", 0}, {"2001:db8::5", 0}});
}

TEST_F(IpAccessFilterTest, EmptyAllowAdmitsAllButTheDenied) {
  expectVerdicts("{ip_access: {deny: [192.0.2.0/24, '::1']}}",
                 {{"198.51.100.1", 0}, {"2001:db8::1", 0}, {"192.0.2.9", 403}, {"::1", 403}});
  for (const char* open : {"{ip_access: {}}", "{ip_access: {allow: [], deny: []}}"}) {
    expectVerdicts(open, {{"198.51.100.1", 0}, {"::1", 0}});
  }
}

TEST_F(IpAccessFilterTest, DecidesOnTheRealClientBehindTrustedProxies) {
  auto config = loadFilterConfig(
      "trusted_proxies: [127.0.0.1/32, 172.16.0.0/12]\n"
      "routes:\n"
      "  - name: r\n"
      "    match: {path_prefix: /}\n"
      "    upstream: api\n"
      "    filters: {ip_access: {deny: [198.51.100.0/24]}}\n");
  ASSERT_TRUE(config);
  const Filter* f = findInChain(route(*config).chain, "ip_access");
  ASSERT_TRUE(f);
  struct Case {
    const char* peer;
    const char* xff;
    int status;
  } cases[] = {
      // The right-most address that is not a trusted proxy is the client.
      {"127.0.0.1", "198.51.100.9", 403},
      {"127.0.0.1", "198.51.100.9, 172.16.0.5", 403},
      {"127.0.0.1", "198.51.100.9, 203.0.113.1", 0},  // 203.0.113.1 is the client
      {"127.0.0.1", "203.0.113.1, 198.51.100.9", 403},  // a spoofed left part is ignored
      // An untrusted peer's X-Forwarded-For is not believed.
      {"203.0.113.50", "127.0.0.1", 0},
      {"198.51.100.1", "203.0.113.1", 403},
  };
  for (const Case& c : cases) {
    uint8_t peer16[16];
    ASSERT_TRUE(parseIp16(c.peer, peer16));
    TestRequest r(config.get(), &route(*config));
    r.ctx.peer_ip = c.peer;
    r.ctx.client_ip = resolveClientIp(config->trusted_proxies, c.peer, peer16, c.xff, r.ctx.client_ip16);
    FilterStatus s = f->onRequestHeaders(r.ctx, r.headers);
    EXPECT_EQ(s == FilterStatus::Continue ? 0 : r.driver.status, c.status)
        << c.peer << " XFF " << c.xff << " -> " << r.ctx.client_ip;
  }
  // The filter reads client_ip16 only: the peer alone is not what it checks.
  TestRequest r(config.get(), &route(*config), "GET", "203.0.113.1");
  r.ctx.peer_ip = "198.51.100.1";
  EXPECT_EQ(f->onRequestHeaders(r.ctx, r.headers), FilterStatus::Continue);
}

TEST_F(IpAccessFilterTest, AForbiddenAnswerStillCarriesTheIdAndSecurityHeadersButNoCors) {
  // Written out of order on purpose: the chain order is SPEC §2's.
  auto config = loadRoute(
      "{ip_access: {allow: [10.0.0.0/8]}}",
      "{security_headers: {}, cors: {allow_origins: ['https://app.example.com']}, request_id: {}}");
  ASSERT_TRUE(config);
  const auto& chain = route(*config).chain;
  EXPECT_THAT(chainNames(chain), ElementsAre("request_id", "ip_access", "cors", "security_headers"));
  TestRequest r(config.get(), &route(*config), "GET", "192.0.2.1");
  r.header("X-Request-ID", "blocked-1").header("Origin", "https://app.example.com");
  EXPECT_EQ(runChain(chain, r), FilterStatus::StopReplied);
  EXPECT_FALSE(r.reached_upstream);
  EXPECT_EQ(r.response.status, 403);
  EXPECT_EQ(r.filters_run, 2u);  // request_id, ip_access
  EXPECT_EQ(r.responseHeader("X-Request-ID"), "blocked-1");
  EXPECT_EQ(r.responseHeader("X-Content-Type-Options"), "nosniff");
  EXPECT_EQ(r.responseHeader("X-Frame-Options"), "DENY");
  EXPECT_FALSE(r.hasResponseHeader("Access-Control-Allow-Origin"));

  TestRequest ok(config.get(), &route(*config), "GET", "10.0.0.1");
  EXPECT_EQ(runChain(chain, ok), FilterStatus::Continue);
  EXPECT_TRUE(ok.reached_upstream);
}

TEST_F(IpAccessFilterTest, RouteOverridesAndOff) {
  std::string yaml =
      "default_filters: {ip_access: {deny: [192.0.2.0/24]}}\n"
      "routes:\n"
      "  - {name: open, match: {path_prefix: /open}, upstream: api, filters: {ip_access: off}}\n"
      "  - {name: strict, match: {path_prefix: /strict}, upstream: api,"
      " filters: {ip_access: {allow: [10.0.0.0/8]}}}\n"
      "  - {name: r, match: {path_prefix: /}, upstream: api}\n";
  auto config = loadFilterConfig(yaml);
  ASSERT_TRUE(config);
  EXPECT_FALSE(findInChain(route(*config, "open").chain, "ip_access"));
  EXPECT_EQ(verdict(*config, "192.0.2.1"), 403);  // route r: the default
  // A route's entry replaces the default whole: `strict` no longer denies 192.0.2.0/24
  // by the default's list, but its allow list refuses it anyway.
  const Filter* strict = findInChain(route(*config, "strict").chain, "ip_access");
  ASSERT_TRUE(strict);
  TestRequest r(config.get(), &route(*config, "strict"), "GET", "10.1.1.1");
  EXPECT_EQ(strict->onRequestHeaders(r.ctx, r.headers), FilterStatus::Continue);
}

TEST_F(IpAccessFilterTest, ConfigErrors) {
  EXPECT_THAT(loadErrors("default_filters: {ip_access: {allow: [10.0.0.0/33]}}\n"),
              ElementsAre(HasSubstr("filters.yaml:3:")));
  EXPECT_THAT(loadErrors("default_filters: {ip_access: {deny: [not-an-ip]}}\n"),
              ElementsAre(HasSubstr("not-an-ip")));
  EXPECT_THAT(loadErrors("default_filters: {ip_access: {allow: 10.0.0.0/8, denied: []}}\n"),
              testing::SizeIs(2));
  EXPECT_THAT(loadErrors("default_filters: {ip_access: {allow: ['::/0']}}\n"), IsEmpty());
}

}  // namespace
}  // namespace gw::filter_test
