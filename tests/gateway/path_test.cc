#include "gateway/path.h"

#include <gtest/gtest.h>

#include <ostream>
#include <string>

namespace gw {
namespace {

// Compared by name so that a failure reads as one.
const char* name(PathResult r) {
  switch (r) {
    case PathResult::Ok:
      return "Ok";
    case PathResult::Invalid:
      return "Invalid";
    case PathResult::EscapesRoot:
      return "EscapesRoot";
  }
  return "?";
}

struct NormalizeCase {
  std::string raw;
  PathResult result;
  std::string normal;  // checked only when result is Ok
};

void PrintTo(const NormalizeCase& c, std::ostream* os) { *os << '"' << c.raw << '"'; }

class NormalizePathTest : public testing::TestWithParam<NormalizeCase> {};

TEST_P(NormalizePathTest, Normalizes) {
  const NormalizeCase& c = GetParam();
  std::string out = "stale contents of a reused buffer";
  PathResult r = normalizePath(c.raw, out);
  ASSERT_STREQ(name(r), name(c.result));
  if (r != PathResult::Ok) return;
  EXPECT_EQ(out, c.normal);
  // A normal path is a fixed point.
  std::string again;
  ASSERT_EQ(normalizePath(out, again), PathResult::Ok);
  EXPECT_EQ(again, out);
}

constexpr PathResult kOk = PathResult::Ok;
constexpr PathResult kInvalid = PathResult::Invalid;
constexpr PathResult kEscapes = PathResult::EscapesRoot;

INSTANTIATE_TEST_SUITE_P(AlreadyNormal, NormalizePathTest, testing::Values(
    NormalizeCase{"/", kOk, "/"},
    NormalizeCase{"/a", kOk, "/a"},
    NormalizeCase{"/a/b/", kOk, "/a/b/"},
    NormalizeCase{"/api/v1/users/42", kOk, "/api/v1/users/42"},
    NormalizeCase{"/.well-known/acme", kOk, "/.well-known/acme"},
    NormalizeCase{"/a/..b/c.", kOk, "/a/..b/c."},
    NormalizeCase{"/a/.../b", kOk, "/a/.../b"},
    NormalizeCase{"/file.tar.gz", kOk, "/file.tar.gz"},
    NormalizeCase{"/a:b@c!$&'()*+,;=", kOk, "/a:b@c!$&'()*+,;="},
    NormalizeCase{"/~user/_x-y", kOk, "/~user/_x-y"}));

INSTANTIATE_TEST_SUITE_P(DotSegments, NormalizePathTest, testing::Values(
    NormalizeCase{"/a/./b", kOk, "/a/b"},
    NormalizeCase{"/a/b/..", kOk, "/a/"},
    NormalizeCase{"/a/b/../", kOk, "/a/"},
    NormalizeCase{"/a/b/.", kOk, "/a/b/"},
    NormalizeCase{"/a/b/./", kOk, "/a/b/"},
    NormalizeCase{"/.", kOk, "/"},
    NormalizeCase{"/./", kOk, "/"},
    NormalizeCase{"/a/..", kOk, "/"},
    NormalizeCase{"/a/../b", kOk, "/b"},
    NormalizeCase{"/a/b/c/../../d", kOk, "/a/d"},
    NormalizeCase{"/a/./././b", kOk, "/a/b"},
    NormalizeCase{"/a/b/../c/./d/..", kOk, "/a/c/"},
    NormalizeCase{"/a/%2e/b", kOk, "/a/b"},
    NormalizeCase{"/a/b/%2e%2e", kOk, "/a/"},
    NormalizeCase{"/a/.%2E/b", kOk, "/b"},
    NormalizeCase{"/a/%2e./b", kOk, "/b"}));

INSTANTIATE_TEST_SUITE_P(Traversal, NormalizePathTest, testing::Values(
    NormalizeCase{"/..", kEscapes, ""},
    NormalizeCase{"/../", kEscapes, ""},
    NormalizeCase{"/../etc/passwd", kEscapes, ""},
    NormalizeCase{"/a/../../b", kEscapes, ""},
    NormalizeCase{"/a/b/../../..", kEscapes, ""},
    NormalizeCase{"/./..", kEscapes, ""},
    NormalizeCase{"//..", kEscapes, ""},
    NormalizeCase{"/%2e%2e/", kEscapes, ""},
    NormalizeCase{"/%2E%2E/etc/passwd", kEscapes, ""},
    NormalizeCase{"/a/%2e%2e/%2e%2e/b", kEscapes, ""},
    NormalizeCase{"/.%2e", kEscapes, ""},
    // %2F is reserved, so it stays data: one segment "..%2Fetc", no traversal.
    NormalizeCase{"/%2E%2e%2fetc", kOk, "/..%2Fetc"},
    NormalizeCase{"/a/..%2F..%2Fetc", kOk, "/a/..%2F..%2Fetc"},
    NormalizeCase{"/a/%2e%2e%5cb", kOk, "/a/..%5Cb"}));

INSTANTIATE_TEST_SUITE_P(Slashes, NormalizePathTest, testing::Values(
    NormalizeCase{"//", kOk, "/"},
    NormalizeCase{"///", kOk, "/"},
    NormalizeCase{"//etc//passwd", kOk, "/etc/passwd"},
    NormalizeCase{"/a//b///c", kOk, "/a/b/c"},
    NormalizeCase{"/a//", kOk, "/a/"},
    NormalizeCase{"/a//../b", kOk, "/b"},
    NormalizeCase{"/a/.//./b", kOk, "/a/b"}));

INSTANTIATE_TEST_SUITE_P(PercentEncoding, NormalizePathTest, testing::Values(
    // Unreserved characters are decoded, whatever the case of the hex digits.
    NormalizeCase{"/%61%62%63", kOk, "/abc"},
    NormalizeCase{"/%41%5a%30%39", kOk, "/AZ09"},
    NormalizeCase{"/%2D%2e%5F%7e", kOk, "/-._~"},
    NormalizeCase{"/%7E%7euser", kOk, "/~~user"},
    // Anything else stays encoded, hex digits upper-cased.
    NormalizeCase{"/a%2fb", kOk, "/a%2Fb"},
    NormalizeCase{"/a%2Fb", kOk, "/a%2Fb"},
    NormalizeCase{"/a%20b", kOk, "/a%20b"},
    NormalizeCase{"/a%3fb%23c", kOk, "/a%3Fb%23c"},
    NormalizeCase{"/%c3%a9t%C3%A9", kOk, "/%C3%A9t%C3%A9"},
    NormalizeCase{"/%25", kOk, "/%25"},
    NormalizeCase{"/%2561", kOk, "/%2561"},  // decoded once only: no "%61" -> "a"
    NormalizeCase{"/a%00b", kOk, "/a%00b"},  // kept encoded: the gateway never decodes NUL
    NormalizeCase{"/%ff%FF", kOk, "/%FF%FF"},
    NormalizeCase{"/%5c..%5c", kOk, "/%5C..%5C"},
    // Invalid sequences.
    NormalizeCase{"/%", kInvalid, ""},
    NormalizeCase{"/%4", kInvalid, ""},
    NormalizeCase{"/a%4/b", kInvalid, ""},
    NormalizeCase{"/%zz", kInvalid, ""},
    NormalizeCase{"/%g0", kInvalid, ""},
    NormalizeCase{"/%0g", kInvalid, ""},
    NormalizeCase{"/%%41", kInvalid, ""},
    NormalizeCase{"/% 41", kInvalid, ""}));

// Built from arrays since the literals hold NUL or bytes >= 0x80.
INSTANTIATE_TEST_SUITE_P(BadBytes, NormalizePathTest, testing::Values(
    NormalizeCase{"", kInvalid, ""},
    NormalizeCase{"a/b", kInvalid, ""},
    NormalizeCase{"*", kInvalid, ""},
    NormalizeCase{"http://h/a", kInvalid, ""},
    NormalizeCase{std::string("/a\0b", 4), kInvalid, ""},
    NormalizeCase{"/a b", kInvalid, ""},
    NormalizeCase{"/a\tb", kInvalid, ""},
    NormalizeCase{"/a\r\nb", kInvalid, ""},
    NormalizeCase{"/a\x7f", kInvalid, ""},
    NormalizeCase{"/caf\xc3\xa9", kInvalid, ""},
    NormalizeCase{"/\xff", kInvalid, ""},
    NormalizeCase{"/a\\..\\b", kInvalid, ""},
    NormalizeCase{"/a?b", kInvalid, ""},
    NormalizeCase{"/a#b", kInvalid, ""},
    // A bad byte after a part that needs work is still caught.
    NormalizeCase{"/a/../b c", kInvalid, ""},
    NormalizeCase{"/%41\x80", kInvalid, ""}));

TEST(NormalizePath, NeverGrowsAndReusesTheBuffer) {
  std::string out;
  out.reserve(256);
  const char* data = out.data();
  for (const char* raw : {"/a/b", "/a/./b/../c//d/", "/%61%2f", "/x"}) {
    ASSERT_EQ(normalizePath(raw, out), PathResult::Ok) << raw;
    EXPECT_LE(out.size(), std::string_view(raw).size()) << raw;
    EXPECT_EQ(out.data(), data) << "reallocated for " << raw;
  }
}

struct TargetCase {
  std::string target;
  std::string method;
  bool ok;
  std::string path = {};
  std::string query = {};
  std::string authority = {};
  bool has_query = false;
  bool asterisk = false;
};

void PrintTo(const TargetCase& c, std::ostream* os) {
  *os << c.method << " \"" << c.target << '"';
}

class ParseTargetTest : public testing::TestWithParam<TargetCase> {};

TEST_P(ParseTargetTest, Parses) {
  const TargetCase& c = GetParam();
  RequestTarget t;
  ASSERT_EQ(parseRequestTarget(c.target, c.method, t), c.ok);
  if (!c.ok) return;
  EXPECT_EQ(t.path, c.path);
  EXPECT_EQ(t.query, c.query);
  EXPECT_EQ(t.authority, c.authority);
  EXPECT_EQ(t.has_query, c.has_query);
  EXPECT_EQ(t.asterisk, c.asterisk);
}

INSTANTIATE_TEST_SUITE_P(OriginForm, ParseTargetTest, testing::Values(
    TargetCase{"/", "GET", true, "/", "", ""},
    TargetCase{"/a/b", "GET", true, "/a/b", "", ""},
    TargetCase{"/a/b?x=1&y=2", "GET", true, "/a/b", "x=1&y=2", "", true},
    TargetCase{"/a?", "GET", true, "/a", "", "", true},
    TargetCase{"/a?b?c/d", "GET", true, "/a", "b?c/d", "", true},
    TargetCase{"/?q", "POST", true, "/", "q", "", true},
    TargetCase{"//a/../b", "GET", true, "//a/../b", "", ""},  // normalising is not its job
    TargetCase{"/a#frag", "GET", false},
    TargetCase{"/a?x#frag", "GET", false},
    TargetCase{"#", "GET", false},
    TargetCase{"", "GET", false},
    TargetCase{"a/b", "GET", false},
    TargetCase{"?x", "GET", false},
    TargetCase{"/a b", "GET", false},
    TargetCase{"/a?x=\x01", "GET", false},
    TargetCase{"/a?x=caf\xc3\xa9", "GET", false},
    TargetCase{"/a\x7f", "GET", false}));

INSTANTIATE_TEST_SUITE_P(AbsoluteForm, ParseTargetTest, testing::Values(
    TargetCase{"http://example.com/a?x", "GET", true, "/a", "x", "example.com", true},
    TargetCase{"https://example.com:8443/a/b", "GET", true, "/a/b", "", "example.com:8443"},
    TargetCase{"HTTP://Example.COM/", "GET", true, "/", "", "Example.COM"},
    TargetCase{"http://example.com", "GET", true, "/", "", "example.com"},
    TargetCase{"http://example.com?x=1", "GET", true, "/", "x=1", "example.com", true},
    TargetCase{"http://[::1]:8080/a", "GET", true, "/a", "", "[::1]:8080"},
    TargetCase{"http://10.0.0.1/a", "GET", true, "/a", "", "10.0.0.1"},
    TargetCase{"http://user@example.com/a", "GET", false},
    TargetCase{"http://trusted.com@evil.com/", "GET", false},
    TargetCase{"http:///a", "GET", false},
    TargetCase{"http://", "GET", false},
    TargetCase{"http://%65xample.com/", "GET", false},
    TargetCase{"ftp://example.com/a", "GET", false},
    TargetCase{"javascript://x/a", "GET", false},
    TargetCase{"://example.com/a", "GET", false},
    TargetCase{"http:/example.com/a", "GET", false},
    TargetCase{"http://example.com/a#f", "GET", false},
    TargetCase{"http://example.com#f", "GET", false}));

INSTANTIATE_TEST_SUITE_P(OtherForms, ParseTargetTest, testing::Values(
    TargetCase{"*", "OPTIONS", true, "*", "", "", false, true},
    TargetCase{"*", "GET", false},
    TargetCase{"*", "options", false},  // methods are case-sensitive
    TargetCase{"*?x", "OPTIONS", false},
    TargetCase{"**", "OPTIONS", false},
    TargetCase{"example.com:443", "CONNECT", false}));

TEST(IsValidAuthority, Forms) {
  for (const char* ok :
       {"example.com", "Example.COM:8080", "a-b_c~d.e", "10.0.0.1:80", "[::1]:443", "h:", "x"}) {
    EXPECT_TRUE(isValidAuthority(ok)) << ok;
  }
  for (const char* bad : {"", "user@example.com", "a b", "a/b", "a?b", "a#b", "%65x",
                          "[fe80::1%25eth0]", "a\\b", "caf\xc3\xa9", "a\tb", "a\x7f"}) {
    EXPECT_FALSE(isValidAuthority(bad)) << bad;
  }
}

struct StripCase {
  std::string path;
  std::string prefix;
  bool stripped;
  std::string out;
};

void PrintTo(const StripCase& c, std::ostream* os) {
  *os << '"' << c.path << "\" - \"" << c.prefix << '"';
}

class StripPrefixTest : public testing::TestWithParam<StripCase> {};

TEST_P(StripPrefixTest, Strips) {
  const StripCase& c = GetParam();
  std::string out = "stale";
  EXPECT_EQ(applyStripPrefix(c.path, c.prefix, out), c.stripped);
  EXPECT_EQ(out, c.out);
}

INSTANTIATE_TEST_SUITE_P(All, StripPrefixTest, testing::Values(
    StripCase{"/partners/x", "/partners", true, "/x"},
    StripCase{"/partners/x/y/", "/partners", true, "/x/y/"},
    StripCase{"/partners", "/partners", true, "/"},
    StripCase{"/partners/", "/partners", true, "/"},
    StripCase{"/partners/x", "/partners/", true, "/x"},
    StripCase{"/partners/", "/partners/", true, "/"},
    StripCase{"/partnersx", "/partners", false, "/partnersx"},
    StripCase{"/other/x", "/partners", false, "/other/x"},
    StripCase{"/part", "/partners", false, "/part"},
    StripCase{"/a/b", "", false, "/a/b"},
    StripCase{"/a/b", "/", true, "/a/b"},
    StripCase{"/", "/", true, "/"}));

}  // namespace
}  // namespace gw
