// Test-only token minting: keys for every JWS algorithm, their JWKs, and compact JWS
// signed with OpenSSL (the gateway itself only verifies).
#pragma once

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "filters/jwt/base64url.h"
#include "filters/jwt/jwk.h"

namespace gw::test_util {

using jwt::Algorithm;

inline std::string b64(std::string_view s) { return jwt::encodeBase64Url(s); }

inline std::string bnParam(EVP_PKEY* pkey, const char* name, size_t pad = 0) {
  BIGNUM* bn = nullptr;
  if (EVP_PKEY_get_bn_param(pkey, name, &bn) != 1) throw std::runtime_error("bn param");
  size_t size = pad ? pad : size_t(BN_num_bytes(bn));
  std::string out(size, '\0');
  BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), int(size));
  BN_free(bn);
  return out;
}

// A signing key for one algorithm family, with its public JWK.
class TestKey {
 public:
  TestKey(Algorithm alg, std::string kid) : alg_(alg), kid_(std::move(kid)) {
    switch (jwt::familyOf(alg)) {
      case jwt::KeyFamily::Rsa:
        pkey_.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t(2048)));
        break;
      case jwt::KeyFamily::EcP256:
        pkey_.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
        break;
      case jwt::KeyFamily::EcP384:
        pkey_.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384"));
        break;
      case jwt::KeyFamily::EcP521:
        pkey_.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-521"));
        break;
      case jwt::KeyFamily::Ed25519:
        pkey_.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
        break;
      case jwt::KeyFamily::Hmac:
        secret_ = std::string(64, '\0');
        for (size_t i = 0; i < secret_.size(); ++i) secret_[i] = char(i * 7 + kid_.size());
        break;
    }
    if (jwt::familyOf(alg) != jwt::KeyFamily::Hmac && !pkey_) throw std::runtime_error("keygen");
  }

  Algorithm alg() const { return alg_; }
  const std::string& kid() const { return kid_; }
  EVP_PKEY* pkey() const { return pkey_.get(); }
  const std::string& secret() const { return secret_; }

  nlohmann::json jwk() const {
    nlohmann::json j;
    if (!kid_.empty()) j["kid"] = kid_;
    switch (jwt::familyOf(alg_)) {
      case jwt::KeyFamily::Rsa:
        j["kty"] = "RSA";
        j["n"] = b64(bnParam(pkey(), OSSL_PKEY_PARAM_RSA_N));
        j["e"] = b64(bnParam(pkey(), OSSL_PKEY_PARAM_RSA_E));
        break;
      case jwt::KeyFamily::EcP256:
      case jwt::KeyFamily::EcP384:
      case jwt::KeyFamily::EcP521: {
        auto f = jwt::familyOf(alg_);
        size_t size = f == jwt::KeyFamily::EcP256 ? 32 : f == jwt::KeyFamily::EcP384 ? 48 : 66;
        j["kty"] = "EC";
        j["crv"] = f == jwt::KeyFamily::EcP256   ? "P-256"
                   : f == jwt::KeyFamily::EcP384 ? "P-384"
                                                 : "P-521";
        j["x"] = b64(bnParam(pkey(), OSSL_PKEY_PARAM_EC_PUB_X, size));
        j["y"] = b64(bnParam(pkey(), OSSL_PKEY_PARAM_EC_PUB_Y, size));
        break;
      }
      case jwt::KeyFamily::Ed25519: {
        unsigned char raw[32];
        size_t len = sizeof raw;
        EVP_PKEY_get_raw_public_key(pkey(), raw, &len);
        j["kty"] = "OKP";
        j["crv"] = "Ed25519";
        j["x"] = b64(std::string_view(reinterpret_cast<char*>(raw), len));
        break;
      }
      case jwt::KeyFamily::Hmac:
        j["kty"] = "oct";
        j["k"] = b64(secret_);
        break;
    }
    return j;
  }

  // The raw JWS signature of `input` (R || S for ECDSA).
  std::string signRaw(std::string_view input, Algorithm alg) const {
    const char* md = nullptr;
    switch (alg) {
      case Algorithm::RS256:
      case Algorithm::PS256:
      case Algorithm::ES256:
      case Algorithm::HS256:
        md = "SHA256";
        break;
      case Algorithm::RS384:
      case Algorithm::PS384:
      case Algorithm::ES384:
      case Algorithm::HS384:
        md = "SHA384";
        break;
      case Algorithm::RS512:
      case Algorithm::PS512:
      case Algorithm::ES512:
      case Algorithm::HS512:
        md = "SHA512";
        break;
      case Algorithm::EdDSA:
        break;
    }
    const auto* data = reinterpret_cast<const unsigned char*>(input.data());
    if (jwt::familyOf(alg) == jwt::KeyFamily::Hmac) {
      unsigned char mac[EVP_MAX_MD_SIZE];
      unsigned int len = 0;
      HMAC(EVP_get_digestbyname(md), secret_.data(), int(secret_.size()), data, input.size(), mac,
           &len);
      return std::string(reinterpret_cast<char*>(mac), len);
    }
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX* pctx = nullptr;
    EVP_DigestSignInit_ex(ctx, &pctx, md, nullptr, nullptr, pkey(), nullptr);
    if (alg == Algorithm::PS256 || alg == Algorithm::PS384 || alg == Algorithm::PS512) {
      EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
      EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST);
    }
    size_t len = 0;
    EVP_DigestSign(ctx, nullptr, &len, data, input.size());
    std::string sig(len, '\0');
    EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len, data, input.size());
    sig.resize(len);
    EVP_MD_CTX_free(ctx);
    auto f = jwt::familyOf(alg);
    if (f == jwt::KeyFamily::EcP256 || f == jwt::KeyFamily::EcP384 || f == jwt::KeyFamily::EcP521) {
      size_t half = f == jwt::KeyFamily::EcP256 ? 32 : f == jwt::KeyFamily::EcP384 ? 48 : 66;
      const unsigned char* p = reinterpret_cast<const unsigned char*>(sig.data());
      ECDSA_SIG* es = d2i_ECDSA_SIG(nullptr, &p, long(sig.size()));
      std::string raw(2 * half, '\0');
      BN_bn2binpad(ECDSA_SIG_get0_r(es), reinterpret_cast<unsigned char*>(raw.data()), int(half));
      BN_bn2binpad(ECDSA_SIG_get0_s(es), reinterpret_cast<unsigned char*>(raw.data()) + half,
                   int(half));
      ECDSA_SIG_free(es);
      return raw;
    }
    return sig;
  }

  // A compact JWS of `claims`; the header gets alg and kid unless `header` sets them.
  std::string sign(const nlohmann::json& claims, nlohmann::json header = nlohmann::json::object(),
                   std::optional<Algorithm> alg = std::nullopt) const {
    Algorithm a = alg.value_or(alg_);
    if (!header.contains("alg")) header["alg"] = std::string(jwt::algorithmName(a));
    if (!header.contains("kid") && !kid_.empty()) header["kid"] = kid_;
    std::string input = b64(header.dump()) + "." + b64(claims.dump());
    return input + "." + b64(signRaw(input, a));
  }

 private:
  Algorithm alg_;
  std::string kid_;
  jwt::PkeyPtr pkey_;
  std::string secret_;
};

// One key per algorithm, made once per test binary (RSA key generation is slow).
inline const TestKey& testKey(Algorithm alg) {
  static std::map<Algorithm, std::unique_ptr<TestKey>> keys;
  auto& k = keys[alg];
  if (!k) k = std::make_unique<TestKey>(alg, "kid-" + std::string(jwt::algorithmName(alg)));
  return *k;
}

inline std::string jwksOf(std::initializer_list<const TestKey*> keys) {
  nlohmann::json doc;
  doc["keys"] = nlohmann::json::array();
  for (const TestKey* k : keys) doc["keys"].push_back(k->jwk());
  return doc.dump();
}

inline constexpr Algorithm kAllAlgorithms[] = {
    Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384,
    Algorithm::PS512, Algorithm::ES256, Algorithm::ES384, Algorithm::ES512, Algorithm::EdDSA,
    Algorithm::HS256, Algorithm::HS384, Algorithm::HS512};

}  // namespace gw::test_util
