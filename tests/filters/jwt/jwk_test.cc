#include "filters/jwt/jwk.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "filters/jwt/jws.h"
#include "tests/filters/jwt/jwt_test_util.h"

namespace gw::jwt {
namespace {

using test_util::testKey;
using testing::ElementsAre;
using testing::HasSubstr;
using testing::IsEmpty;

std::string doc(std::initializer_list<nlohmann::json> keys) {
  nlohmann::json d;
  d["keys"] = nlohmann::json::array();
  for (const auto& k : keys) d["keys"].push_back(k);
  return d.dump();
}

TEST(JwkTest, AlgorithmNames) {
  for (Algorithm alg : test_util::kAllAlgorithms) {
    EXPECT_EQ(algorithmFromName(algorithmName(alg)), alg);
  }
  EXPECT_FALSE(algorithmFromName("none"));
  EXPECT_FALSE(algorithmFromName("NONE"));
  EXPECT_FALSE(algorithmFromName("rs256"));  // names are case-sensitive (RFC 7515 §4.1.1)
  EXPECT_FALSE(algorithmFromName("Ed25519"));
}

TEST(JwkTest, EveryFamilyParsesAndBindsItsAlgorithms) {
  for (Algorithm alg : test_util::kAllAlgorithms) {
    JwksParseResult r = parseJwks(doc({testKey(alg).jwk()}));
    ASSERT_TRUE(r.keys) << algorithmName(alg) << ": " << r.error;
    const Jwk& key = r.keys->keys().front();
    EXPECT_EQ(key.kid(), testKey(alg).kid());
    for (Algorithm other : test_util::kAllAlgorithms) {
      EXPECT_EQ(key.allows(other), familyOf(other) == familyOf(alg))
          << algorithmName(alg) << " key with " << algorithmName(other);
    }
  }
}

TEST(JwkTest, TheJwksAlgNarrowsTheFamily) {
  auto jwk = testKey(Algorithm::RS256).jwk();
  jwk["alg"] = "PS256";
  JwksParseResult r = parseJwks(doc({jwk}));
  ASSERT_TRUE(r.keys);
  EXPECT_TRUE(r.keys->keys()[0].allows(Algorithm::PS256));
  EXPECT_FALSE(r.keys->keys()[0].allows(Algorithm::RS256));
}

TEST(JwkTest, EcCoordinatesWithoutLeadingZerosArePadded) {
  // Some issuers strip leading zero bytes from x and y. Find a key whose x has one (about
  // one in 256) and publish it that way: it must still verify its signatures.
  for (int attempt = 0; attempt < 20000; ++attempt) {
    test_util::TestKey key(Algorithm::ES256, "short");
    auto jwk = key.jwk();
    std::string x;
    ASSERT_TRUE(decodeBase64Url(jwk["x"].get<std::string>(), x));
    if (x[0] != '\0') continue;
    jwk["x"] = test_util::b64(x.substr(1));
    JwksParseResult r = parseJwks(doc({jwk}));
    ASSERT_TRUE(r.keys) << r.error;
    std::string input = "header.payload";
    EXPECT_TRUE(verifySignature(Algorithm::ES256, r.keys->keys()[0], input,
                                key.signRaw(input, Algorithm::ES256)));
    return;
  }
  FAIL() << "no P-256 key with a leading zero byte in x";
}

TEST(JwkTest, HmacKeysMustBeAsLongAsTheHash) {
  auto jwk = testKey(Algorithm::HS256).jwk();  // 64 bytes: every HS* is fine
  std::string k32(32, 'k');
  auto short_jwk = nlohmann::json{{"kty", "oct"}, {"k", test_util::b64(k32)}};
  JwksParseResult r = parseJwks(doc({jwk, short_jwk}));
  ASSERT_TRUE(r.keys);
  EXPECT_TRUE(r.keys->keys()[0].allows(Algorithm::HS512));
  EXPECT_TRUE(r.keys->keys()[1].allows(Algorithm::HS256));
  EXPECT_FALSE(r.keys->keys()[1].allows(Algorithm::HS384));
  EXPECT_FALSE(r.keys->keys()[1].allows(Algorithm::HS512));
  JwksParseResult too_short = parseJwks(doc({{{"kty", "oct"}, {"k", test_util::b64("short")}}}));
  EXPECT_FALSE(too_short.keys);
  EXPECT_THAT(too_short.invalid, ElementsAre(HasSubstr("at least 256 bits")));
}

TEST(JwkTest, ForeignKeysAreSkippedNotFatal) {
  auto enc = testKey(Algorithm::RS256).jwk();
  enc["use"] = "enc";
  auto wrap = testKey(Algorithm::ES256).jwk();
  wrap["key_ops"] = {"wrapKey"};
  auto oaep = testKey(Algorithm::RS384).jwk();
  oaep["alg"] = "RSA-OAEP";
  nlohmann::json x25519 = {{"kty", "OKP"}, {"crv", "X25519"}, {"x", "AAAA"}};
  nlohmann::json k256 = {{"kty", "EC"}, {"crv", "secp256k1"}, {"x", "AAAA"}, {"y", "AAAA"}};
  nlohmann::json weird = {{"kty", "PQC"}};
  JwksParseResult r =
      parseJwks(doc({enc, wrap, oaep, x25519, k256, weird, testKey(Algorithm::EdDSA).jwk()}));
  ASSERT_TRUE(r.keys);
  EXPECT_EQ(r.keys->size(), 1u);
  EXPECT_THAT(r.invalid, IsEmpty());
  EXPECT_EQ(r.skipped.size(), 6u);
  EXPECT_THAT(r.skipped[0], HasSubstr("\"use\" is 'enc'"));
  EXPECT_THAT(r.skipped[5], HasSubstr("unsupported kty 'PQC'"));
}

TEST(JwkTest, BrokenKeysAreReported) {
  auto rsa = testKey(Algorithm::RS256).jwk();
  auto bad_b64 = rsa;
  bad_b64["n"] = "not base64!";
  auto off_curve = testKey(Algorithm::ES256).jwk();
  std::string y;
  ASSERT_TRUE(decodeBase64Url(off_curve["y"].get<std::string>(), y));
  y[31] ^= 1;
  off_curve["y"] = test_util::b64(y);
  auto short_x = testKey(Algorithm::ES256).jwk();
  short_x["x"] = test_util::b64(std::string(33, 'x'));
  auto mismatch = rsa;
  mismatch["alg"] = "ES256";
  auto no_kty = nlohmann::json{{"kid", "x"}};
  jwt::PkeyPtr small(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t(1024)));
  auto weak = nlohmann::json{
      {"kty", "RSA"}, {"n", test_util::b64(test_util::bnParam(small.get(), "n"))}, {"e", "AQAB"}};
  auto even_e = rsa;
  even_e["e"] = test_util::b64("\x01\x00");
  JwksParseResult r =
      parseJwks(doc({bad_b64, off_curve, short_x, mismatch, no_kty, weak, even_e, "str"}));
  EXPECT_FALSE(r.keys);
  ASSERT_EQ(r.invalid.size(), 8u);
  EXPECT_THAT(r.invalid[0], HasSubstr("\"n\" is not base64url"));
  EXPECT_THAT(r.invalid[1], HasSubstr("not on the curve"));
  EXPECT_THAT(r.invalid[2], HasSubstr("32 bytes each"));
  EXPECT_THAT(r.invalid[3], HasSubstr("does not fit the key type"));
  EXPECT_THAT(r.invalid[4], HasSubstr("\"kty\" is missing"));
  EXPECT_THAT(r.invalid[5], HasSubstr("1024 bits"));
  EXPECT_THAT(r.invalid[6], HasSubstr("exponent"));
  EXPECT_THAT(r.invalid[7], HasSubstr("key 7: not a JSON object"));
  EXPECT_THAT(r.error, HasSubstr("no usable signature key"));
}

TEST(JwkTest, DocumentErrors) {
  EXPECT_EQ(parseJwks("not json").error, "not valid JSON");
  EXPECT_EQ(parseJwks("[]").error, "expected a JSON object with a \"keys\" array");
  EXPECT_EQ(parseJwks(R"({"keys":{}})").error, "expected a JSON object with a \"keys\" array");
  EXPECT_EQ(parseJwks(R"({"keys":[]})").error, "no usable signature key");
}

TEST(JwkTest, NothingSecretInMessages) {
  std::string secret = "this-is-a-secret-hmac-key-of-32b";
  auto jwk = nlohmann::json{{"kty", "oct"}, {"k", test_util::b64(secret)}, {"alg", "RS256"}};
  JwksParseResult r = parseJwks(doc({jwk}));
  ASSERT_EQ(r.invalid.size(), 1u);
  EXPECT_EQ(r.invalid[0].find(test_util::b64(secret)), std::string::npos);
  EXPECT_EQ(r.error.find(test_util::b64(secret)), std::string::npos);
}

TEST(JwkTest, CheckJwksForTheConfigLoader) {
  std::string ec = test_util::jwksOf({&testKey(Algorithm::ES256)});
  EXPECT_THAT(checkJwks(ec, {"ES256", "RS256"}), IsEmpty());
  EXPECT_THAT(checkJwks(ec, {"RS256", "EdDSA"}),
              ElementsAre("no key can verify any of the provider's algorithms"));
  EXPECT_THAT(checkJwks(R"({"keys":[{"kty":"PQC"}]})", {"RS256"}),
              ElementsAre("no usable signature key"));
  auto bad = testKey(Algorithm::ES256).jwk();
  bad["x"] = test_util::b64(std::string(33, 'x'));
  EXPECT_THAT(checkJwks(doc({bad, testKey(Algorithm::ES256).jwk()}), {"ES256"}),
              ElementsAre(HasSubstr("32 bytes each")));
}

}  // namespace
}  // namespace gw::jwt
