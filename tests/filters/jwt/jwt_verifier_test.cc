#include "filters/jwt/jwt_verifier.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/filters/jwt/jwt_test_util.h"

namespace gw::jwt {
namespace {

using auth::Reason;
using nlohmann::json;
using test_util::b64;
using test_util::testKey;
using test_util::TestKey;

constexpr uint64_t kNowMs = 1700000000000ull;
constexpr int64_t kNow = 1700000000;

uint32_t allAlgorithms() {
  uint32_t bits = 0;
  for (Algorithm a : test_util::kAllAlgorithms) bits |= algorithmBit(a);
  return bits;
}

class JwtVerifierTest : public testing::Test {
 protected:
  JwtVerifierTest() {
    policy_.issuer = "https://issuer.example";
    policy_.audiences = {"api", "other"};
    policy_.algorithms = allAlgorithms();
    policy_.leeway_ms = 30000;
    std::vector<const TestKey*> all;
    std::string text = R"({"keys":[)";
    for (Algorithm a : test_util::kAllAlgorithms) {
      text += (a == Algorithm::RS256 ? "" : ",") + testKey(a).jwk().dump();
    }
    text += "]}";
    JwksParseResult r = parseJwks(text);
    keys_ = r.keys;
  }

  json claims() const {
    return {{"iss", "https://issuer.example"},
            {"aud", "api"},
            {"sub", "user-1"},
            {"exp", kNow + 300},
            {"iat", kNow - 10},
            {"nbf", kNow - 10}};
  }

  VerifyResult verify(const std::string& token, uint64_t now = kNowMs) const {
    return verifyToken(token, *keys_, policy_, now);
  }
  Reason failure(const std::string& token, uint64_t now = kNowMs) const {
    VerifyResult r = verify(token, now);
    EXPECT_FALSE(r.identity) << token;
    return r.identity ? Reason::kCount : r.failure;
  }

  VerifyPolicy policy_;
  std::shared_ptr<const KeySet> keys_;
};

TEST_F(JwtVerifierTest, EveryAlgorithmVerifies) {
  ASSERT_TRUE(keys_);
  ASSERT_EQ(keys_->size(), std::size(test_util::kAllAlgorithms));
  for (Algorithm a : test_util::kAllAlgorithms) {
    VerifyResult r = verify(testKey(a).sign(claims()));
    ASSERT_TRUE(r.identity) << algorithmName(a) << ": " << auth::reasonName(r.failure);
    EXPECT_EQ(r.identity->subject(), "user-1");
  }
}

TEST_F(JwtVerifierTest, WithoutKidEveryCompatibleKeyIsTried) {
  const TestKey& es = testKey(Algorithm::ES256);
  EXPECT_TRUE(verify(es.sign(claims(), {{"kid", nullptr}})).identity == nullptr);  // kid: null
  json header = json::object();
  std::string input = b64(R"({"alg":"ES256"})") + "." + b64(claims().dump());
  std::string token = input + "." + b64(es.signRaw(input, Algorithm::ES256));
  EXPECT_TRUE(verify(token).identity);
  // No key of the family at all: unknown, and nothing to refetch without a kid.
  policy_.algorithms |= algorithmBit(Algorithm::ES384);
  JwksParseResult only_rsa = parseJwks(test_util::jwksOf({&testKey(Algorithm::RS256)}));
  VerifyResult r = verifyToken(token, *only_rsa.keys, policy_, kNowMs);
  EXPECT_EQ(r.failure, Reason::UnknownKid);
  EXPECT_FALSE(r.kid_not_found);
}

TEST_F(JwtVerifierTest, ClaimsAreExposedAsText) {
  json c = claims();
  c["roles"] = {"admin", "ops"};
  c["level"] = 3;
  c["ratio"] = 0.5;
  c["active"] = false;
  c["nothing"] = nullptr;
  c["profile"] = {{"name", "A"}};
  c["scope"] = "read  write";
  c["scp"] = {"admin"};
  VerifyResult r = verify(testKey(Algorithm::ES256).sign(c));
  ASSERT_TRUE(r.identity);
  const TokenIdentity& id = *r.identity;
  EXPECT_EQ(id.claim("roles"), "admin,ops");
  EXPECT_EQ(id.claim("level"), "3");
  EXPECT_EQ(id.claim("ratio"), "0.5");
  EXPECT_EQ(id.claim("active"), "false");
  EXPECT_EQ(id.claim("nothing"), "");
  EXPECT_EQ(id.claim("profile"), R"({"name":"A"})");
  EXPECT_EQ(id.claim("absent"), "");
  EXPECT_EQ(id.claim("aud"), "api");
  EXPECT_TRUE(id.claimMatches("roles", {"viewer", "ops"}));
  EXPECT_FALSE(id.claimMatches("roles", {"viewer"}));
  EXPECT_TRUE(id.claimMatches("level", {"3"}));
  EXPECT_FALSE(id.claimMatches("absent", {""}));
  EXPECT_TRUE(id.hasScope("read"));
  EXPECT_TRUE(id.hasScope("write"));
  EXPECT_TRUE(id.hasScope("admin"));
  EXPECT_FALSE(id.hasScope(""));
  EXPECT_FALSE(id.hasScope("read write"));
  EXPECT_EQ(id.expiresAtMs(), uint64_t(kNow + 300) * 1000 + 30000);  // exp + leeway
}

TEST_F(JwtVerifierTest, Malformed) {
  const TestKey& k = testKey(Algorithm::ES256);
  std::string good = k.sign(claims());
  size_t dot1 = good.find('.'), dot2 = good.rfind('.');
  std::string header = good.substr(0, dot1), payload = good.substr(dot1 + 1, dot2 - dot1 - 1);
  std::string sig = good.substr(dot2 + 1);
  std::vector<std::string> bad = {
      "",
      "abc",
      header + "." + payload,                       // two parts
      header + "." + payload + "." + sig + ".x",    // four
      header + "." + payload + "." + sig + ".x.y",  // JWE-like five
      "." + payload + "." + sig,                    // empty header
      header + "." + payload + ".",                 // empty signature
      header + "=." + payload + "." + sig,          // padding
      header + "." + payload + "." + sig + "=",
      b64("not json") + "." + payload + "." + sig,
      b64("[1,2]") + "." + payload + "." + sig,             // not an object
      b64(R"({"typ":"JWT"})") + "." + payload + "." + sig,  // no alg
      b64(R"({"alg":5})") + "." + payload + "." + sig,
      std::string(kMaxTokenBytes + 1, 'a'),
  };
  for (const auto& token : bad) EXPECT_EQ(failure(token), Reason::Malformed) << token;

  // Well signed but malformed inside.
  EXPECT_EQ(failure(k.sign(claims(), {{"crit", {"exp"}}})), Reason::Malformed);
  EXPECT_EQ(failure(k.sign(claims(), {{"kid", 7}})), Reason::Malformed);
  json c = claims();
  c["exp"] = "tomorrow";
  EXPECT_EQ(failure(k.sign(c)), Reason::Malformed);
  c = claims();
  c["aud"] = {"api", 5};
  EXPECT_EQ(failure(k.sign(c)), Reason::Malformed);
  c = claims();
  c["iss"] = json::array();
  EXPECT_EQ(failure(k.sign(c)), Reason::Malformed);
  c = claims();
  c["sub"] = 42;
  EXPECT_EQ(failure(k.sign(c)), Reason::Malformed);
  // A payload that is not a JSON object, signed correctly.
  std::string input = header + "." + b64("[]");
  EXPECT_EQ(failure(input + "." + b64(k.signRaw(input, Algorithm::ES256))), Reason::Malformed);
}

TEST_F(JwtVerifierTest, DuplicateMembersAreMalformed) {
  const TestKey& k = testKey(Algorithm::HS256);
  std::string header = b64(R"({"alg":"HS256","kid":"kid-HS256"})");
  std::string dup_claims =
      R"({"sub":"user-1","iss":"https://issuer.example","aud":"api","sub":"admin"})";
  std::string input = header + "." + b64(dup_claims);
  EXPECT_EQ(failure(input + "." + b64(k.signRaw(input, Algorithm::HS256))), Reason::Malformed);
  std::string dup_header = b64(R"({"alg":"HS256","kid":"kid-HS256","alg":"none"})");
  input = dup_header + "." + b64(claims().dump());
  EXPECT_EQ(failure(input + "." + b64(k.signRaw(input, Algorithm::HS256))), Reason::Malformed);
  // Nested objects may repeat a name of the outer one.
  json c = claims();
  c["profile"] = {{"sub", "x"}};
  EXPECT_TRUE(verify(k.sign(c)).identity);
}

TEST_F(JwtVerifierTest, BadSignature) {
  const TestKey& k = testKey(Algorithm::RS256);
  std::string token = k.sign(claims());
  std::string other_payload = k.sign(json{{"sub", "admin"}});
  // Another token's header and claims under this token's signature.
  std::string swapped =
      other_payload.substr(0, other_payload.rfind('.')) + token.substr(token.rfind('.'));
  EXPECT_EQ(failure(swapped), Reason::BadSignature);
  // Signed by another key that claims this kid.
  TestKey impostor(Algorithm::ES256, "kid-ES256");
  EXPECT_EQ(failure(impostor.sign(claims())), Reason::BadSignature);
  // ECDSA signatures of the wrong length.
  std::string es = testKey(Algorithm::ES256).sign(claims());
  EXPECT_EQ(failure(es.substr(0, es.rfind('.') + 1) + b64(std::string(63, 'x'))),
            Reason::BadSignature);
  // Every algorithm refuses a changed payload.
  for (Algorithm a : test_util::kAllAlgorithms) {
    std::string t = testKey(a).sign(claims());
    json changed = claims();
    changed["sub"] = "admin";
    std::string forged = testKey(a).sign(changed);
    std::string mixed = t.substr(0, t.find('.')) +
                        forged.substr(forged.find('.'), forged.rfind('.') - forged.find('.')) +
                        t.substr(t.rfind('.'));
    EXPECT_EQ(failure(mixed), Reason::BadSignature) << algorithmName(a);
  }
}

TEST_F(JwtVerifierTest, ExpiryWithLeeway) {
  const TestKey& k = testKey(Algorithm::EdDSA);
  json c = claims();
  c["exp"] = kNow - 29;  // inside the 30 s leeway
  EXPECT_TRUE(verify(k.sign(c)).identity);
  c["exp"] = kNow - 30;
  EXPECT_EQ(failure(k.sign(c)), Reason::Expired);
  c["exp"] = double(kNow) - 29.5;  // NumericDate may have a fraction
  EXPECT_TRUE(verify(k.sign(c)).identity);
  policy_.leeway_ms = 0;
  c["exp"] = kNow;
  EXPECT_EQ(failure(k.sign(c)), Reason::Expired);
  c["exp"] = kNow + 1;
  EXPECT_TRUE(verify(k.sign(c)).identity);
  c.erase("exp");  // exp is optional
  VerifyResult r = verify(k.sign(c));
  ASSERT_TRUE(r.identity);
  EXPECT_EQ(r.identity->expiresAtMs(), UINT64_MAX);
}

TEST_F(JwtVerifierTest, NotYetValid) {
  const TestKey& k = testKey(Algorithm::PS256);
  json c = claims();
  c["nbf"] = kNow + 29;
  EXPECT_TRUE(verify(k.sign(c)).identity);
  c["nbf"] = kNow + 31;
  EXPECT_EQ(failure(k.sign(c)), Reason::NotYetValid);
  c = claims();
  c["iat"] = kNow + 31;  // issued in the future
  EXPECT_EQ(failure(k.sign(c)), Reason::NotYetValid);
}

TEST_F(JwtVerifierTest, Issuer) {
  const TestKey& k = testKey(Algorithm::ES384);
  json c = claims();
  c["iss"] = "https://issuer.example/";  // exact match only
  EXPECT_EQ(failure(k.sign(c)), Reason::WrongIssuer);
  c.erase("iss");
  EXPECT_EQ(failure(k.sign(c)), Reason::WrongIssuer);
  policy_.issuer.clear();
  EXPECT_TRUE(verify(k.sign(c)).identity);
}

TEST_F(JwtVerifierTest, Audience) {
  const TestKey& k = testKey(Algorithm::ES512);
  json c = claims();
  c["aud"] = {"x", "other"};
  EXPECT_TRUE(verify(k.sign(c)).identity);
  c["aud"] = {"x", "y"};
  EXPECT_EQ(failure(k.sign(c)), Reason::WrongAudience);
  c["aud"] = "API";
  EXPECT_EQ(failure(k.sign(c)), Reason::WrongAudience);
  c["aud"] = json::array();
  EXPECT_EQ(failure(k.sign(c)), Reason::WrongAudience);
  c.erase("aud");
  EXPECT_EQ(failure(k.sign(c)), Reason::WrongAudience);
  policy_.audiences.clear();
  EXPECT_TRUE(verify(k.sign(c)).identity);
}

TEST_F(JwtVerifierTest, UnknownKid) {
  TestKey stranger(Algorithm::ES256, "rotated-in");
  VerifyResult r = verify(stranger.sign(claims()));
  EXPECT_EQ(r.failure, Reason::UnknownKid);
  EXPECT_TRUE(r.kid_not_found);
}

TEST_F(JwtVerifierTest, AlgNotAllowed) {
  const TestKey& rsa = testKey(Algorithm::RS256);
  std::string payload = b64(claims().dump());
  for (const char* none : {R"({"alg":"none"})", R"({"alg":"None"})", R"({"alg":"NONE"})"}) {
    EXPECT_EQ(failure(b64(none) + "." + payload + "."), Reason::Malformed);  // no signature
    EXPECT_EQ(failure(b64(none) + "." + payload + ".AAAA"), Reason::AlgNotAllowed);
  }
  EXPECT_EQ(failure(b64(R"({"alg":"HS1"})") + "." + payload + ".AAAA"), Reason::AlgNotAllowed);
  policy_.algorithms = algorithmBit(Algorithm::RS256);
  EXPECT_EQ(failure(testKey(Algorithm::ES256).sign(claims())), Reason::AlgNotAllowed);
  EXPECT_EQ(failure(rsa.sign(claims(), {}, Algorithm::PS256)), Reason::AlgNotAllowed);
  EXPECT_TRUE(verify(rsa.sign(claims())).identity);
}

// RFC 8725 §2.1: with HS256 allowed, a token "signed" with the RSA public key's bytes as
// the HMAC secret must not pass, whatever bytes of the key the attacker picked.
TEST_F(JwtVerifierTest, RsaKeyBytesAsHmacSecretAreRefused) {
  const TestKey& rsa = testKey(Algorithm::RS256);
  json jwk = rsa.jwk();
  std::vector<std::string> secrets = {jwk.dump(), jwk["n"].get<std::string>()};
  std::string n;
  ASSERT_TRUE(decodeBase64Url(jwk["n"].get<std::string>(), n));
  secrets.push_back(n);
  for (const auto& secret : secrets) {
    std::string input = b64(R"({"alg":"HS256","kid":"kid-RS256"})") + "." + b64(claims().dump());
    unsigned char mac[32];
    unsigned int len = 0;
    HMAC(EVP_sha256(), secret.data(), int(secret.size()),
         reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &len);
    std::string token = input + "." + b64(std::string_view(reinterpret_cast<char*>(mac), len));
    EXPECT_EQ(failure(token), Reason::AlgNotAllowed);
  }
}

}  // namespace
}  // namespace gw::jwt
