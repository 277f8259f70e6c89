#include "filters/jwt/base64url.h"

#include <gtest/gtest.h>

namespace gw::jwt {
namespace {

std::string decoded(std::string_view in, bool* ok = nullptr) {
  std::string out;
  bool r = decodeBase64Url(in, out);
  if (ok) *ok = r;
  return r ? out : "<invalid>";
}

TEST(Base64UrlTest, DecodesRfc4648Vectors) {
  // RFC 4648 §10, without padding.
  EXPECT_EQ(decoded(""), "");
  EXPECT_EQ(decoded("Zg"), "f");
  EXPECT_EQ(decoded("Zm8"), "fo");
  EXPECT_EQ(decoded("Zm9v"), "foo");
  EXPECT_EQ(decoded("Zm9vYg"), "foob");
  EXPECT_EQ(decoded("Zm9vYmE"), "fooba");
  EXPECT_EQ(decoded("Zm9vYmFy"), "foobar");
}

TEST(Base64UrlTest, UsesTheUrlAlphabet) {
  EXPECT_EQ(decoded("-_8"), std::string("\xfb\xff", 2));
  EXPECT_EQ(decoded("+/8"), "<invalid>");  // the standard alphabet's 62 and 63
}

TEST(Base64UrlTest, RefusesEverythingButTheOneSpelling) {
  EXPECT_EQ(decoded("Zg=="), "<invalid>");    // padding
  EXPECT_EQ(decoded("Zm9v\n"), "<invalid>");  // whitespace
  EXPECT_EQ(decoded("Zm 9v"), "<invalid>");
  EXPECT_EQ(decoded("Zm9vY"), "<invalid>");  // 4k+1 characters
  EXPECT_EQ(decoded("Zh"), "<invalid>");     // "Zg" with non-zero leftover bits
  EXPECT_EQ(decoded("Zm9"), "<invalid>");    // "Zm8" likewise
  EXPECT_EQ(decoded(std::string_view("Zg\0", 3)), "<invalid>");
}

TEST(Base64UrlTest, RoundTripsEveryLength) {
  std::string bytes;
  for (int i = 0; i < 70; ++i) {
    bytes += char(i * 37 + 11);
    std::string encoded = encodeBase64Url(bytes);
    EXPECT_EQ(encoded.find('='), std::string::npos);
    EXPECT_EQ(decoded(encoded), bytes) << i;
  }
}

}  // namespace
}  // namespace gw::jwt
