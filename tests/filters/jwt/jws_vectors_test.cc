// The published JOSE examples: RFC 7515 appendix A, RFC 7520 §4 (the JOSE cookbook) and
// RFC 8037 appendix A. They were made by other implementations, so passing them shows the
// signing input, base64url and signature formats agree with the rest of the world.
#include <gtest/gtest.h>

#include "filters/jwt/base64url.h"
#include "filters/jwt/jws.h"
#include "filters/jwt/jwt_verifier.h"

namespace gw::jwt {
namespace {

// RFC 7515 A.1-A.3 share this payload: {"iss":"joe",\r\n "exp":1300819380,\r\n ...}.
constexpr const char* kJoePayload =
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFt"
    "cGxlLmNvbS9pc19yb290Ijp0cnVlfQ";

constexpr const char* kA1Jwk =
    R"({"keys":[{"kty":"oct","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0)"
    R"(iPS4hcgUuTwjAzZr1Z9CAow"}]})";
constexpr const char* kA1Token =
    "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9."
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFt"
    "cGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

constexpr const char* kA2Jwk =
    R"({"keys":[{"kty":"RSA","e":"AQAB","n":")"
    "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddx"
    "HmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMs"
    "D1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSH"
    "SXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdV"
    "MTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8"
    R"(NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"}]})";
constexpr const char* kA2Token =
    "eyJhbGciOiJSUzI1NiJ9."
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFt"
    "cGxlLmNvbS9pc19yb290Ijp0cnVlfQ."
    "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7"
    "AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4"
    "BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K"
    "0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqv"
    "hJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrB"
    "p0igcN_IoypGlUPQGe77Rw";

constexpr const char* kA3Jwk =
    R"({"keys":[{"kty":"EC","crv":"P-256",)"
    R"("x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",)"
    R"("y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]})";
constexpr const char* kA3Token =
    "eyJhbGciOiJFUzI1NiJ9."
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFt"
    "cGxlLmNvbS9pc19yb290Ijp0cnVlfQ."
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";

// RFC 7515 A.4: ES512 over the non-JSON payload "Payload".
constexpr const char* kA4Jwk =
    R"({"keys":[{"kty":"EC","crv":"P-521",)"
    R"("x":"AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_NjFZ6OvLFV1jSfS9tsz4qUxcWceqw)"
    R"(QGk",)"
    R"("y":"ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-x3S1WDhjDly79ajL4Kkd0AZMaZmh9ubmf63e3ky)"
    R"(Mj2"}]})";
constexpr const char* kA4Token =
    "eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA."
    "AdwMgeerwtHoh-l192l60hp9wAHZFVJbLfD_UxMi70cwnZOYaRI1bKPWROc-mZZq"
    "wqT2SI-KGDKB34XO0aw_7XdtAG8GaSwFKdCAPZgoXD2YBJZCPEX3xKpRwcdOO8Kp"
    "EHwJjyqOgzDO7iKvU8vcnwNrmxYbSW9ERBXukOXolLzeO_Jn";

// RFC 8037 A.1 and A.4: Ed25519.
constexpr const char* kEd25519Jwk =
    R"({"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]})";
constexpr const char* kEd25519Token =
    "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

// RFC 7520 §3.3, §3.2, §3.5: Bilbo's keys, and §4's payload (a quotation, not JSON).
constexpr const char* kBilboRsa =
    R"({"keys":[{"kty":"RSA","kid":"bilbo.baggins@hobbiton.example","use":"sig","e":"AQAB","n":")"
    "n4EPtAOCc9AlkeQHPzHStgAbgs7bTZLwUBZdR8_KuKPEHLd4rHVTeT-O-XV2jRojdNhxJWTDvNd7nqQ0VEiZQHz_AJmSC"
    "pMa"
    "JMRBSFKrKb2wqVwGU_NsYOYL-QtiWN2lbzcEe6XC0dApr5ydQLrHqkHHig3RBordaZ6Aj-oBHqFEHYpPe7Tpe-OfVfHd1"
    "E6c"
    "S6M1FZcD1NNLYD5lFHpPI9bTwJlsde3uhGqC0ZCuEHg8lhzwOHrtIQbS0FVbb9k3-tVTU4fg_3L_vniUFAKwuCLqKnS2B"
    "Ywd"
    R"(q_mzSnbLY7h_qixoR7jig3__kRhuaxwUkRz5iaiQkqgc5gHdrNP5zw"}]})";
constexpr const char* kBilboEc =
    R"({"keys":[{"kty":"EC","kid":"bilbo.baggins@hobbiton.example","use":"sig","crv":"P-521",)"
    R"("x":"AHKZLLOsCOzz5cY97ewNUajB957y-C-U88c3v13nmGZx6sYl_oJXu9A5RkTKqjqvjyekWF-7ytDyRXYgCF5cj)"
    R"(0Kt",)"
    R"("y":"AdymlHvOiLxXkEhayXQnNCvDX4h9htZaCJN34kfmC6pV5OhQHiraVySsUdaQkAgDPrwQrJmbnX9cwlGfP-HqH)"
    R"(ZR1"}]})";
constexpr const char* kBilboHmac =
    R"({"keys":[{"kty":"oct","kid":"018c0ae5-4d9b-471b-bfd6-eef314bc7037","use":"sig","alg":"HS25)"
    R"(6",)"
    R"("k":"hJtXIZ2uSN5kbQfbtTNWbpdmhkV8FJG-Onbc6mxCcYg"}]})";
constexpr const char* kCookbookPayload =
    "SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250"
    "byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hl"
    "cmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4";
// §4.1 RS256, §4.2 PS384, §4.3 ES512, §4.4 HS256: header.payload.signature.
const std::string kCookbookRs256 =
    std::string("eyJhbGciOiJSUzI1NiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9.") +
    kCookbookPayload +
    ".MRjdkly7_-oTPTS3AXP41iQIGKa80A0ZmTuV5MEaHoxnW2e5CZ5NlKtainoFmKZopdHM1O2U4mwzJdQx996ivp83xugl"
    "II7"
    "PNDi84wnB-BDkoBwA78185hX-Es4JIwmDLJK3lfWRa-XtL0RnltuYv746iYTh_qHRD68BNt1uSNCrUCTJDt5aAE6x8wW1"
    "Kt9"
    "eRo4QPocSadnHXFxnt8Is9UzpERV0ePPQdLuW3IS_de3xyIrDaLGdjluPxUAhb6L2aXic1U12podGU0KLUQSE_oI-ZnmK"
    "J3F"
    "4uOZDnd6QZWJushZ41Axf_fcIe8u9ipH84ogoree7vjbU5y18kDquDg";
const std::string kCookbookPs384 =
    std::string("eyJhbGciOiJQUzM4NCIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9.") +
    kCookbookPayload +
    ".cu22eBqkYDKgIlTpzDXGvaFfz6WGoz7fUDcfT0kkOy42miAh2qyBzk1xEsnk2IpN6-tPid6VrklHkqsGqDqHCdP6O8TT"
    "B5d"
    "DDItllVo6_1OLPpcbUrhiUSMxbbXUvdvWXzg-UD8biiReQFlfz28zGWVsdiNAUf8ZnyPEgVFn442ZdNqiVJRmBqrYRXe8"
    "P_i"
    "jQ7p8Vdz0TTrxUeT3lm8d9shnr2lfJT8ImUjvAA2Xez2Mlp8cBE5awDzT0qI0n6uiP1aCN_2_jLAeQTlqRHtfa64QQSUm"
    "FAA"
    "jVKPbByi7xho0uTOcbH510a6GYmJUAfmWjwZ6oD4ifKo8DYM-X72Eaw";
const std::string kCookbookEs512 =
    std::string("eyJhbGciOiJFUzUxMiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9.") +
    kCookbookPayload +
    ".AE_R_YZCChjn4791jSQCrdPZCNYqHXCTZH0-JZGYNlaAjP2kqaluUIIUnC9qvbu9Plon7KRTzoNEuT4Va2cmL1eJAQy3"
    "mtPB"
    "u_u_sDDyYjnAMDxXPn7XrT0lw-kvAD890jl8e2puQens_IEKBpHABlsbEPX6sFY8OcGDqoRuBomu9xQ2";
const std::string kCookbookHs256 =
    std::string("eyJhbGciOiJIUzI1NiIsImtpZCI6IjAxOGMwYWU1LTRkOWItNDcxYi1iZmQ2LWVlZjMx"
                "NGJjNzAzNyJ9.") +
    kCookbookPayload + ".s0h6KThzkfBBBkLspW1h84VsJZFTsPPqMDA7g1Md7p0";

std::shared_ptr<const KeySet> keysOf(const char* jwks) {
  JwksParseResult r = parseJwks(jwks);
  EXPECT_TRUE(r.keys) << r.error;
  EXPECT_TRUE(r.invalid.empty());
  return r.keys;
}

// Verifies the JWS signature of compact `token` with the set's first key.
bool signatureHolds(const char* jwks, std::string_view token, Algorithm alg) {
  auto keys = keysOf(jwks);
  if (!keys) return false;
  size_t dot = token.rfind('.');
  std::string signature;
  if (!decodeBase64Url(token.substr(dot + 1), signature)) return false;
  return verifySignature(alg, keys->keys().front(), token.substr(0, dot), signature);
}

// The same token with one bit of its signature flipped (the last character changes).
std::string tampered(std::string token) {
  char& c = token.back();
  c = c == 'A' ? 'Q' : 'A';
  return token;
}

struct Vector {
  const char* name;
  const char* jwks;
  std::string token;
  Algorithm alg;
};

// gtest would otherwise print the struct's bytes, padding included.
void PrintTo(const Vector& v, std::ostream* os) { *os << v.name; }

class JwsVectorTest : public testing::TestWithParam<Vector> {};

TEST_P(JwsVectorTest, SignatureVerifies) {
  const Vector& v = GetParam();
  EXPECT_TRUE(signatureHolds(v.jwks, v.token, v.alg));
}

TEST_P(JwsVectorTest, AlteredSignatureOrInputFails) {
  const Vector& v = GetParam();
  EXPECT_FALSE(signatureHolds(v.jwks, tampered(v.token), v.alg));
  std::string other_input = v.token;
  other_input[other_input.find('.') + 1] ^= 1;  // the payload's first character
  EXPECT_FALSE(signatureHolds(v.jwks, other_input, v.alg));
}

INSTANTIATE_TEST_SUITE_P(
    Published, JwsVectorTest,
    testing::Values(Vector{"rfc7515_a1_hs256", kA1Jwk, kA1Token, Algorithm::HS256},
                    Vector{"rfc7515_a2_rs256", kA2Jwk, kA2Token, Algorithm::RS256},
                    Vector{"rfc7515_a3_es256", kA3Jwk, kA3Token, Algorithm::ES256},
                    Vector{"rfc7515_a4_es512", kA4Jwk, kA4Token, Algorithm::ES512},
                    Vector{"rfc8037_a4_eddsa", kEd25519Jwk, kEd25519Token, Algorithm::EdDSA},
                    Vector{"rfc7520_4_1_rs256", kBilboRsa, kCookbookRs256, Algorithm::RS256},
                    Vector{"rfc7520_4_2_ps384", kBilboRsa, kCookbookPs384, Algorithm::PS384},
                    Vector{"rfc7520_4_3_es512", kBilboEc, kCookbookEs512, Algorithm::ES512},
                    Vector{"rfc7520_4_4_hs256", kBilboHmac, kCookbookHs256, Algorithm::HS256}),
    [](const testing::TestParamInfo<Vector>& info) { return std::string(info.param.name); });

TEST(JwsVectorTest, KeysAreBoundToTheirAlgorithms) {
  // Bilbo's RSA key verifies RS256 and PS384 but not ES512; the EC key the reverse; the
  // HMAC key names alg HS256 and so refuses HS384 even though it is long enough.
  EXPECT_FALSE(signatureHolds(kBilboEc, kCookbookRs256, Algorithm::RS256));
  EXPECT_FALSE(signatureHolds(kBilboRsa, kCookbookEs512, Algorithm::ES512));
  EXPECT_FALSE(signatureHolds(kBilboRsa, kCookbookPs384, Algorithm::RS384));
  EXPECT_FALSE(signatureHolds(kBilboHmac, kCookbookHs256, Algorithm::HS384));
}

// The RFC 7515 A.1-A.3 payloads are JWT claims sets: the whole verification applies.
TEST(JwsVectorTest, Rfc7515TokensVerifyAsJwts) {
  VerifyPolicy policy;
  policy.issuer = "joe";
  policy.algorithms = algorithmBit(Algorithm::HS256) | algorithmBit(Algorithm::RS256) |
                      algorithmBit(Algorithm::ES256);
  const uint64_t before_exp = 1300819380000ull - 1000;
  for (auto [jwks, token] : {std::pair{kA1Jwk, kA1Token}, std::pair{kA2Jwk, kA2Token},
                             std::pair{kA3Jwk, kA3Token}}) {
    auto keys = keysOf(jwks);
    ASSERT_TRUE(keys);
    VerifyResult ok = verifyToken(token, *keys, policy, before_exp);
    ASSERT_TRUE(ok.identity) << token << " " << auth::reasonName(ok.failure);
    EXPECT_EQ(ok.identity->claim("iss"), "joe");
    EXPECT_EQ(ok.identity->claim("http://example.com/is_root"), "true");
    EXPECT_EQ(ok.identity->claim("exp"), "1300819380");
    EXPECT_EQ(ok.identity->expiresAtMs(), 1300819380000ull);
    EXPECT_EQ(verifyToken(token, *keys, policy, 1300819380000ull).failure, auth::Reason::Expired);
  }
}

}  // namespace
}  // namespace gw::jwt
