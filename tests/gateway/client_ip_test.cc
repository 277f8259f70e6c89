#include "gateway/client_ip.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace gw {
namespace {

using Ip16 = std::array<uint8_t, 16>;

Ip16 v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d};
}

Ip16 v6(const char* text) {
  Ip16 out{};
  in6_addr a;
  EXPECT_EQ(inet_pton(AF_INET6, text, &a), 1) << text;
  std::memcpy(out.data(), &a, 16);
  return out;
}

struct ParseCase {
  std::string_view text;
  bool ok;
  Ip16 want;
};

constexpr std::string_view kTooLong =
    "1111111111111111111111111111111111111111111111111111111111111111111111";

TEST(ClientIpTest, ParseIp16) {
  const ParseCase cases[] = {
      {"192.0.2.1", true, v4(192, 0, 2, 1)},
      {"0.0.0.0", true, v4(0, 0, 0, 0)},
      {"255.255.255.255", true, v4(255, 255, 255, 255)},
      {"192.0.2.1:8080", true, v4(192, 0, 2, 1)},
      {"2001:db8::1", true, v6("2001:db8::1")},
      {"::1", true, v6("::1")},
      {"::", true, v6("::")},
      {"[2001:db8::1]", true, v6("2001:db8::1")},
      {"[2001:db8::1]:443", true, v6("2001:db8::1")},
      {"::ffff:192.0.2.1", true, v4(192, 0, 2, 1)},  // mapped: the same key as the v4 form
      {"fe80::1%eth0", false, {}},
      {"", false, {}},
      {"garbage", false, {}},
      {"unknown", false, {}},
      {"192.0.2", false, {}},
      {"192.0.2.256", false, {}},
      {"192.0.2.1.5", false, {}},
      {"01.02.03.04", false, {}},  // inet_pton refuses leading zeros (no octal surprises)
      {"[2001:db8::1", false, {}},
      {"[]", false, {}},
      {"[192.0.2.1", false, {}},
      {":8080", false, {}},
      {"2001:db8::g", false, {}},
      {" 192.0.2.1", false, {}},
      {kTooLong, false, {}},  // longer than any address
  };
  for (const ParseCase& c : cases) {
    uint8_t out[16];
    std::memset(out, 0xaa, 16);
    bool ok = parseIp16(c.text, out);
    EXPECT_EQ(ok, c.ok) << "'" << c.text << "'";
    if (ok && c.ok) {
      EXPECT_EQ(0, std::memcmp(out, c.want.data(), 16)) << "'" << c.text << "'";
    }
  }
}

struct ResolveCase {
  std::string_view label;
  std::vector<std::string> trusted;  // CIDRs
  std::string_view peer;
  std::string_view xff;
  std::string_view want;  // the client address text
};

std::vector<Cidr> cidrs(const std::vector<std::string>& texts) {
  std::vector<Cidr> out;
  for (const auto& t : texts) {
    auto c = parseCidr(t);
    EXPECT_TRUE(c.has_value()) << t;
    if (c) out.push_back(*c);
  }
  return out;
}

void PrintTo(const ResolveCase& c, std::ostream* os) { *os << c.label; }

class ResolveClientIpTest : public ::testing::TestWithParam<ResolveCase> {};

TEST_P(ResolveClientIpTest, PicksTheRightAddress) {
  const ResolveCase& c = GetParam();
  std::vector<Cidr> trusted = cidrs(c.trusted);
  uint8_t peer16[16];
  ASSERT_TRUE(parseIp16(c.peer, peer16));
  uint8_t got16[16];
  std::memset(got16, 0xaa, 16);
  std::string_view got = resolveClientIp(trusted, c.peer, peer16, c.xff, got16);
  EXPECT_EQ(got, c.want) << c.label;
  // ip16 always describes the returned text.
  uint8_t want16[16];
  ASSERT_TRUE(parseIp16(c.want, want16)) << c.label;
  EXPECT_EQ(0, std::memcmp(got16, want16, 16)) << c.label;
  // The result is a view into one of the inputs, never a copy.
  bool in_peer = got.data() >= c.peer.data() && got.data() + got.size() <= c.peer.data() + c.peer.size();
  bool in_xff = got.data() >= c.xff.data() && got.data() + got.size() <= c.xff.data() + c.xff.size();
  EXPECT_TRUE(in_peer || in_xff) << c.label;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ResolveClientIpTest,
    ::testing::Values(
        ResolveCase{"no_trusted_proxies_ignore_xff", {}, "203.0.113.7", "198.51.100.1", "203.0.113.7"},
        ResolveCase{"untrusted_peer_ignores_xff", {"10.0.0.0/8"}, "203.0.113.7", "198.51.100.1",
                    "203.0.113.7"},
        ResolveCase{"trusted_peer_without_xff", {"10.0.0.0/8"}, "10.0.0.1", "", "10.0.0.1"},
        ResolveCase{"trusted_peer_takes_the_hop_before_it", {"10.0.0.0/8"}, "10.0.0.1",
                    "198.51.100.1", "198.51.100.1"},
        ResolveCase{"rightmost_untrusted_hop_wins", {"10.0.0.0/8"}, "10.0.0.1",
                    "192.0.2.66, 198.51.100.1, 10.1.1.1, 10.2.2.2", "198.51.100.1"},
        ResolveCase{"spoofed_leftmost_entries_are_ignored", {"10.0.0.0/8"}, "10.0.0.1",
                    "1.1.1.1, 2.2.2.2, 198.51.100.1", "198.51.100.1"},
        ResolveCase{"all_hops_trusted_gives_the_leftmost", {"10.0.0.0/8"}, "10.0.0.1",
                    "10.9.9.9, 10.1.1.1", "10.9.9.9"},
        ResolveCase{"garbage_rightmost_hop_keeps_the_peer", {"10.0.0.0/8"}, "10.0.0.1",
                    "198.51.100.1, garbage", "10.0.0.1"},
        ResolveCase{"garbage_hop_stops_the_walk", {"10.0.0.0/8"}, "10.0.0.1",
                    "198.51.100.1, unknown, 10.3.3.3", "10.3.3.3"},
        ResolveCase{"empty_hop_stops_the_walk", {"10.0.0.0/8"}, "10.0.0.1",
                    "198.51.100.1,,10.3.3.3", "10.3.3.3"},
        ResolveCase{"tabs_and_spaces_are_trimmed", {"10.0.0.0/8"}, "10.0.0.1",
                    "\t198.51.100.1 \t", "198.51.100.1"},
        ResolveCase{"hop_with_port", {"10.0.0.0/8"}, "10.0.0.1", "198.51.100.1:5555",
                    "198.51.100.1:5555"},
        ResolveCase{"ipv6_peer_and_hops", {"fd00::/8"}, "fd00::1", "2001:db8::7, fd00::2",
                    "2001:db8::7"},
        ResolveCase{"bracketed_ipv6_hop", {"fd00::/8"}, "fd00::1", "[2001:db8::7]:443",
                    "[2001:db8::7]:443"},
        ResolveCase{"mixed_families", {"10.0.0.0/8", "fd00::/8"}, "fd00::1",
                    "2001:db8::9, 10.0.0.5", "2001:db8::9"},
        ResolveCase{"v4_trust_covers_mapped_v6_peer", {"10.0.0.0/8"}, "::ffff:10.0.0.1",
                    "198.51.100.1", "198.51.100.1"},
        ResolveCase{"single_host_trust", {"10.0.0.1"}, "10.0.0.1", "10.0.0.2, 198.51.100.1",
                    "198.51.100.1"},
        ResolveCase{"untrusted_hop_between_trusted_ones", {"10.0.0.0/8"}, "10.0.0.1",
                    "10.5.5.5, 198.51.100.1, 10.6.6.6", "198.51.100.1"}),
    [](const ::testing::TestParamInfo<ResolveCase>& info) { return std::string(info.param.label); });

TEST(ClientIpTest, IsTrustedMatchesAnyListedNetwork) {
  std::vector<Cidr> trusted = cidrs({"10.0.0.0/8", "192.168.1.0/24", "2001:db8::/32"});
  Ip16 yes[] = {v4(10, 1, 2, 3), v4(192, 168, 1, 200), v6("2001:db8:ffff::1")};
  Ip16 no[] = {v4(11, 0, 0, 1), v4(192, 168, 2, 1), v6("2001:db9::1"), v6("::1")};
  for (auto& ip : yes) {
    uint8_t(&raw)[16] = *reinterpret_cast<uint8_t(*)[16]>(ip.data());
    EXPECT_TRUE(isTrusted(trusted, raw));
  }
  for (auto& ip : no) {
    uint8_t(&raw)[16] = *reinterpret_cast<uint8_t(*)[16]>(ip.data());
    EXPECT_FALSE(isTrusted(trusted, raw));
  }
  uint8_t any[16] = {};
  EXPECT_FALSE(isTrusted({}, any));
}

}  // namespace
}  // namespace gw
