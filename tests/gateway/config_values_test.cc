// The value parsers of config.h and the ConfigContext helpers every parser builds on.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include "gateway/config/config.h"
#include "gateway/config/config_context.h"
#include "tests/gateway/config_test_util.h"

namespace gw {
namespace {

using ::testing::ElementsAre;

TEST(ParseDurationTest, AcceptsUnitsOnly) {
  EXPECT_EQ(parseDuration("250ms"), Millis(250));
  EXPECT_EQ(parseDuration("10s"), Millis(10000));
  EXPECT_EQ(parseDuration("5m"), Millis(300000));
  EXPECT_EQ(parseDuration("1h"), Millis(3600000));
  EXPECT_EQ(parseDuration("0s"), Millis(0));
  for (const char* bad : {"", "10", "-1s", "1.5s", "s", "10 s", "10sec", "1d", "+1s",
                          "99999999999999999999ms", "9999999999999999h"}) {
    EXPECT_FALSE(parseDuration(bad).has_value()) << bad;
  }
}

TEST(ParseSizeTest, BytesAndUnits) {
  EXPECT_EQ(parseSize("1024"), 1024u);
  EXPECT_EQ(parseSize("16KiB"), 16u * 1024);
  EXPECT_EQ(parseSize("10MiB"), 10u * 1024 * 1024);
  EXPECT_EQ(parseSize("1GiB"), 1ull << 30);
  EXPECT_EQ(parseSize("2KB"), 2000u);
  EXPECT_EQ(parseSize("0"), 0u);
  for (const char* bad : {"", "KiB", "-1", "1.5MiB", "10kib", "10 MiB", "20000000000TiB"}) {
    EXPECT_FALSE(parseSize(bad).has_value()) << bad;
  }
}

std::array<uint8_t, 16> ip16(const char* text) {
  sockaddr_storage storage{};
  if (inet_pton(AF_INET, text, &reinterpret_cast<sockaddr_in*>(&storage)->sin_addr) == 1) {
    storage.ss_family = AF_INET;
  } else {
    inet_pton(AF_INET6, text, &reinterpret_cast<sockaddr_in6*>(&storage)->sin6_addr);
    storage.ss_family = AF_INET6;
  }
  uint8_t out[16];
  toIp16(reinterpret_cast<const sockaddr*>(&storage), out);
  std::array<uint8_t, 16> a;
  std::copy(out, out + 16, a.begin());
  return a;
}

bool contains(const char* cidr, const char* ip) {
  auto c = parseCidr(cidr);
  EXPECT_TRUE(c.has_value()) << cidr;
  auto a = ip16(ip);
  uint8_t raw[16];
  std::copy(a.begin(), a.end(), raw);
  return c && c->contains(raw);
}

TEST(CidrTest, ContainsBothFamilies) {
  EXPECT_TRUE(contains("10.0.0.0/8", "10.255.1.2"));
  EXPECT_FALSE(contains("10.0.0.0/8", "11.0.0.1"));
  EXPECT_TRUE(contains("192.168.1.7", "192.168.1.7"));
  EXPECT_FALSE(contains("192.168.1.7", "192.168.1.8"));
  EXPECT_TRUE(contains("10.1.2.3/8", "10.9.9.9"));  // host bits are cleared
  EXPECT_TRUE(contains("0.0.0.0/0", "1.2.3.4"));
  EXPECT_FALSE(contains("0.0.0.0/0", "::1"));  // IPv4 /0 is the IPv4-mapped space only
  EXPECT_TRUE(contains("::/0", "1.2.3.4"));
  EXPECT_TRUE(contains("2001:db8::/32", "2001:db8:1::5"));
  EXPECT_FALSE(contains("2001:db8::/33", "2001:db8:8000::1"));
  EXPECT_TRUE(contains("172.16.0.0/12", "172.31.255.255"));
  EXPECT_FALSE(contains("172.16.0.0/12", "172.32.0.0"));
  EXPECT_EQ(parseCidr("10.0.0.0/8")->prefix_length, 104);
  for (const char* bad : {"", "10.0.0.0/33", "::/129", "10.0.0/8", "10.0.0.0/", "10.0.0.0/a",
                          "fe80::1%eth0", "host"}) {
    EXPECT_FALSE(parseCidr(bad).has_value()) << bad;
  }
}

std::string text(const char* ip) {
  auto a = ip16(ip);
  uint8_t raw[16];
  std::copy(a.begin(), a.end(), raw);
  char out[kIpTextMax];
  return std::string(out, formatIp16(raw, out));
}

TEST(FormatIp16Test, DottedQuadForIpv4AndRfc5952ForIpv6) {
  for (const char* v4 : {"0.0.0.0", "1.2.3.4", "9.10.99.100", "127.0.0.1", "255.255.255.255",
                         "10.200.3.45"}) {
    EXPECT_EQ(text(v4), v4);
  }
  EXPECT_EQ(text("::ffff:192.0.2.7"), "192.0.2.7");  // a v4 client of a dual-stack listener
  EXPECT_EQ(text("::1"), "::1");
  EXPECT_EQ(text("2001:db8:0:0:1:0:0:1"), "2001:db8::1:0:0:1");
  EXPECT_EQ(text("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
}

std::vector<std::string> formatted(const ConfigContext& ctx) {
  std::vector<std::string> out;
  for (const auto& e : ctx.errors()) out.push_back(e.format());
  return out;
}

TEST(ConfigContextTest, ScalarsAreStrictStrings) {
  ConfigContext ctx("f.yaml");
  YAML::Node n =
      YAML::Load("{a: off, b: yes, c: true, d: 007, e: -3, f: [1], g: '${GW_CTX_X:-d}'}");
  EXPECT_TRUE(ctx.isOff(n["a"]));
  EXPECT_EQ(ctx.string(n["b"]), "yes");
  EXPECT_EQ(ctx.boolean(n["c"]), true);
  EXPECT_FALSE(ctx.boolean(n["b"]).has_value());
  EXPECT_EQ(ctx.unsignedInt(n["d"]), 7u);
  EXPECT_FALSE(ctx.unsignedInt(n["e"]).has_value());
  EXPECT_FALSE(ctx.string(n["f"]).has_value());
  unsetenv("GW_CTX_X");
  EXPECT_EQ(ctx.string(n["g"]), "d");
  EXPECT_THAT(formatted(ctx), ElementsAre("f.yaml:1:13: expected true or false, got 'yes'",
                                          "f.yaml:1:38: expected a non-negative integer, got '-3'",
                                          "f.yaml:1:45: expected a string, got a list"));
}

TEST(ConfigContextTest, EnvironmentReferences) {
  setenv("GW_CTX_A", "alpha", 1);
  unsetenv("GW_CTX_B");
  ConfigContext ctx("f.yaml");
  EXPECT_EQ(ctx.string(YAML::Load("'x${GW_CTX_A}y${GW_CTX_B:-}z'")), "xalphayz");
  EXPECT_EQ(ctx.string(YAML::Load("'${GW_CTX_B:-a:-b}'")), "a:-b");
  EXPECT_EQ(ctx.string(YAML::Load("'cost: $5'")), "cost: $5");
  EXPECT_FALSE(ctx.string(YAML::Load("'${1X}'")).has_value());
  EXPECT_FALSE(ctx.string(YAML::Load("'${GW_CTX_A-x}'")).has_value());
  EXPECT_EQ(ctx.errorCount(), 2u);
}

TEST(ConfigContextTest, ListsReportEveryBadElement) {
  ConfigContext ctx("f.yaml");
  auto list = ctx.cidrList(YAML::Load("[10.0.0.0/8, bad, ::1, worse]"));
  EXPECT_FALSE(list.has_value());
  EXPECT_EQ(ctx.errorCount(), 2u);
  EXPECT_EQ(ctx.stringList(YAML::Load("~"))->size(), 0u);
}

TEST(ConfigContextTest, ClosestMatchSuggestsOnlyNearMisses) {
  std::vector<std::string_view> keys = {"address", "name", "tls"};
  EXPECT_EQ(closestMatch("adress", keys), "address");
  EXPECT_EQ(closestMatch("nmae", keys), "name");
  EXPECT_EQ(closestMatch("certificate", keys), "");
}

std::string readError(const std::string& path) {
  std::string text = "untouched";
  std::string error;
  EXPECT_FALSE(readBoundedFile(path, text, error)) << path;
  EXPECT_TRUE(text.empty()) << path;
  return error;
}

TEST(BoundedFileTest, ReadsARegularFileWithinTheLimit) {
  test_util::ScratchDir dir;
  dir.write("a.yaml", "workers: 2\n");
  std::string text;
  std::string error;
  ASSERT_TRUE(readBoundedFile("a.yaml", text, error)) << error;
  EXPECT_EQ(text, "workers: 2\n");
  ASSERT_EQ(truncate("a.yaml", off_t(kMaxConfigFileBytes)), 0);
  ASSERT_TRUE(readBoundedFile("a.yaml", text, error)) << error;
  EXPECT_EQ(text.size(), kMaxConfigFileBytes);
}

TEST(BoundedFileTest, RefusesWhatIsNotARegularFileWithoutBlocking) {
  test_util::ScratchDir dir;
  ASSERT_EQ(mkfifo("fifo", 0600), 0);  // no writer: a blocking open() would never return
  EXPECT_EQ(readError("fifo"), "not a regular file (a FIFO)");
  EXPECT_EQ(readError("/dev/zero"), "not a regular file (a character device)");
  EXPECT_EQ(readError("."), "not a regular file (a directory)");
  EXPECT_EQ(readError("absent"), "No such file or directory");
}

TEST(BoundedFileTest, RefusesAFileOverTheLimitWithoutReadingIt) {
  test_util::ScratchDir dir;
  dir.write("big.yaml", "");
  ASSERT_EQ(truncate("big.yaml", off_t(kMaxConfigFileBytes) + 1), 0);
  EXPECT_EQ(readError("big.yaml"), "larger than the 16 MiB limit");
  ASSERT_EQ(truncate("big.yaml", off_t(2) << 30), 0);  // sparse: costs no disk
  EXPECT_EQ(readError("big.yaml"), "larger than the 16 MiB limit");
  // /proc files say they are empty: the limit holds while reading too.
  std::string text;
  std::string error;
  EXPECT_TRUE(readBoundedFile("/proc/self/status", text, error)) << error;
  EXPECT_FALSE(text.empty());
}

TEST(QuoteValueTest, EveryValueStaysOneReadableLine) {
  EXPECT_EQ(quoteValue("plain value"), "'plain value'");
  EXPECT_EQ(quoteValue(""), "''");
  EXPECT_EQ(quoteValue("a\nconfiguration OK"), "'a\\nconfiguration OK'");
  EXPECT_EQ(quoteValue("tab\tcr\r"), "'tab\\tcr\\r'");
  EXPECT_EQ(quoteValue(std::string("nul\0cut", 7)), "'nul\\x00cut'");
  EXPECT_EQ(quoteValue("\x1b[31mred\x7f"), "'\\x1b[31mred\\x7f'");
  EXPECT_EQ(quoteValue("it's a \\ path"), "'it\\'s a \\\\ path'");
  EXPECT_EQ(quoteValue("caf\xc3\xa9 \xe2\x82\xac"), "'caf\xc3\xa9 \xe2\x82\xac'");  // kept
  // Invalid UTF-8: stray continuation, cut sequence, overlong '/', surrogate.
  EXPECT_EQ(quoteValue("\x80|\xe2\x82|\xc0\xaf|\xed\xa0\x80"),
            "'\\x80|\\xe2\\x82|\\xc0\\xaf|\\xed\\xa0\\x80'");
  // NEL, LINE SEPARATOR, RIGHT-TO-LEFT OVERRIDE: terminals act on them.
  EXPECT_EQ(quoteValue("\xc2\x85|\xe2\x80\xa8|\xe2\x80\xae"), "'\\u0085|\\u2028|\\u202e'");
}

TEST(ConfigErrorTest, FormatIsOneLineWhateverTheMessageHolds) {
  ConfigError e{"dir\n/x.yaml", 3, 4, "from a library: bad\nline\x1b"};
  EXPECT_EQ(e.format(), "dir\\n/x.yaml:3:4: from a library: bad\\nline\\x1b");
  // A quoted value is not escaped twice.
  ConfigError q{"x.yaml", 1, 1, "bad " + quoteValue("a\nb\\")};
  EXPECT_EQ(q.format(), "x.yaml:1:1: bad 'a\\nb\\\\'");
}

TEST(ConfigErrorTest, TheSameErrorAtTheSamePlaceIsReportedOnceWithItsCount) {
  ConfigContext ctx("f.yaml");
  for (int i = 0; i < 3; ++i) ctx.errorAt(2, 5, "unknown key 'x' in route");
  ctx.errorAt(2, 5, "another problem at the same place");
  ctx.errorAt(3, 5, "unknown key 'x' in route");
  EXPECT_EQ(ctx.errorCount(), 5u);  // every report counts: parsers compare it
  std::vector<std::string> out;
  for (const auto& e : ctx.takeErrors()) out.push_back(e.format());
  EXPECT_THAT(out,
              ElementsAre("f.yaml:2:5: unknown key 'x' in route (and 2 more times through YAML "
                          "aliases)",
                          "f.yaml:2:5: another problem at the same place",
                          "f.yaml:3:5: unknown key 'x' in route"));
}

}  // namespace
}  // namespace gw
