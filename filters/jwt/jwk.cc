#include "filters/jwt/jwk.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/param_build.h>

#include <array>
#include <nlohmann/json.hpp>

#include "filters/jwt/base64url.h"
#include "gateway/config/config_context.h"  // quoteValue()

namespace gw::jwt {
namespace {

using Json = nlohmann::json;

constexpr std::array<std::string_view, kAlgorithmCount> kAlgorithmNames = {
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512",
};

// RFC 7518 §3.3: 2048 bits at least. The upper bound keeps a hostile JWKS from making each
// verification arbitrarily slow.
constexpr int kMinRsaBits = 2048;
constexpr int kMaxRsaBits = 16384;
constexpr int kMaxRsaExponentBits = 64;

struct BnFree {
  void operator()(BIGNUM* p) const { BN_free(p); }
};
struct ParamBldFree {
  void operator()(OSSL_PARAM_BLD* p) const { OSSL_PARAM_BLD_free(p); }
};
struct ParamFree {
  void operator()(OSSL_PARAM* p) const { OSSL_PARAM_free(p); }
};
struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};
using BnPtr = std::unique_ptr<BIGNUM, BnFree>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree>;

// Why a key was not taken: skipped (not meant for us) or invalid (meant for us, broken).
struct KeyProblem {
  bool invalid = false;
  std::string message;
};

PkeyPtr pkeyFromParams(const char* type, OSSL_PARAM_BLD* bld) {
  std::unique_ptr<OSSL_PARAM, ParamFree> params(OSSL_PARAM_BLD_to_param(bld));
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  EVP_PKEY* pkey = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &pkey, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    ERR_clear_error();
    return nullptr;
  }
  return PkeyPtr(pkey);
}

bool publicKeyChecks(EVP_PKEY* pkey) {
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey, nullptr));
  bool ok = ctx && EVP_PKEY_public_check(ctx.get()) == 1;
  ERR_clear_error();
  return ok;
}

// A required base64url member; sets `problem` when absent or not base64url.
bool member(const Json& key, const char* name, std::string& out, KeyProblem& problem) {
  auto it = key.find(name);
  if (it == key.end() || !it->is_string()) {
    problem = {true, std::string("\"") + name + "\" is missing or not a string"};
    return false;
  }
  if (!decodeBase64Url(it->get_ref<const std::string&>(), out)) {
    problem = {true, std::string("\"") + name + "\" is not base64url"};
    return false;
  }
  return true;
}

PkeyPtr rsaKey(const Json& key, KeyProblem& problem) {
  std::string n, e;
  if (!member(key, "n", n, problem) || !member(key, "e", e, problem)) return nullptr;
  BnPtr bn_n(BN_bin2bn(reinterpret_cast<const unsigned char*>(n.data()), int(n.size()), nullptr));
  BnPtr bn_e(BN_bin2bn(reinterpret_cast<const unsigned char*>(e.data()), int(e.size()), nullptr));
  if (!bn_n || !bn_e) return nullptr;
  int bits = BN_num_bits(bn_n.get());
  if (bits < kMinRsaBits || bits > kMaxRsaBits) {
    problem = {true, "RSA modulus of " + std::to_string(bits) + " bits (2048 to 16384 accepted)"};
    return nullptr;
  }
  if (!BN_is_odd(bn_e.get()) || BN_is_one(bn_e.get()) ||
      BN_num_bits(bn_e.get()) > kMaxRsaExponentBits) {
    problem = {true, "RSA exponent is not an odd number between 3 and 2^64"};
    return nullptr;
  }
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldFree> bld(OSSL_PARAM_BLD_new());
  if (!bld || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1) {
    return nullptr;
  }
  PkeyPtr pkey = pkeyFromParams("RSA", bld.get());
  if (!pkey) problem = {true, "OpenSSL refused the RSA key"};
  return pkey;
}

PkeyPtr ecKey(const Json& key, KeyFamily family, KeyProblem& problem) {
  const char* group = family == KeyFamily::EcP256   ? "prime256v1"
                      : family == KeyFamily::EcP384 ? "secp384r1"
                                                    : "secp521r1";
  size_t size = family == KeyFamily::EcP256 ? 32 : family == KeyFamily::EcP384 ? 48 : 66;
  std::string x, y;
  if (!member(key, "x", x, problem) || !member(key, "y", y, problem)) return nullptr;
  // RFC 7518 §6.2.1.2 wants the full coordinate size, but some issuers (python-jwt before
  // 2.8 among them) drop leading zero bytes: those are padded back. The point is checked
  // to be on the curve below either way.
  if (x.empty() || y.empty() || x.size() > size || y.size() > size) {
    problem = {true, "EC coordinates must be " + std::to_string(size) + " bytes each"};
    return nullptr;
  }
  std::string point =
      "\x04" + std::string(size - x.size(), '\0') + x + std::string(size - y.size(), '\0') + y;
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldFree> bld(OSSL_PARAM_BLD_new());
  if (!bld ||
      OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, group, 0) != 1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                       point.size()) != 1) {
    return nullptr;
  }
  PkeyPtr pkey = pkeyFromParams("EC", bld.get());
  // An off-curve point would open invalid-curve attacks: checked here, not trusted.
  if (!pkey || !publicKeyChecks(pkey.get())) {
    problem = {true, "the EC point is not on the curve"};
    return nullptr;
  }
  return pkey;
}

PkeyPtr ed25519Key(const Json& key, KeyProblem& problem) {
  std::string x;
  if (!member(key, "x", x, problem)) return nullptr;
  if (x.size() != 32) {
    problem = {true, "an Ed25519 key is 32 bytes"};
    return nullptr;
  }
  EVP_PKEY* pkey = EVP_PKEY_new_raw_public_key_ex(
      nullptr, "ED25519", nullptr, reinterpret_cast<const unsigned char*>(x.data()), x.size());
  if (!pkey) {
    ERR_clear_error();
    problem = {true, "OpenSSL refused the Ed25519 key"};
  }
  return PkeyPtr(pkey);
}

std::optional<KeyFamily> familyOfKey(const std::string& kty, const Json& key, KeyProblem& problem) {
  if (kty == "RSA") return KeyFamily::Rsa;
  if (kty == "oct") return KeyFamily::Hmac;
  auto crv_it = key.find("crv");
  std::string crv = crv_it != key.end() && crv_it->is_string() ? crv_it->get<std::string>() : "";
  if (kty == "EC") {
    if (crv == "P-256") return KeyFamily::EcP256;
    if (crv == "P-384") return KeyFamily::EcP384;
    if (crv == "P-521") return KeyFamily::EcP521;
    problem = {false, "unsupported EC curve " + quoteValue(crv)};
    return std::nullopt;
  }
  if (kty == "OKP") {
    if (crv == "Ed25519") return KeyFamily::Ed25519;
    problem = {false, "unsupported OKP curve " + quoteValue(crv)};
    return std::nullopt;
  }
  problem = {false, "unsupported kty " + quoteValue(kty)};
  return std::nullopt;
}

// The members that say what a key is for: use, key_ops, alg. Empty problem = a signature
// key; `alg` receives the JWK's own algorithm when it names one.
void checkPurpose(const Json& key, KeyFamily family, std::optional<Algorithm>& alg,
                  KeyProblem& problem) {
  if (auto use = key.find("use"); use != key.end()) {
    if (!use->is_string()) {
      problem = {true, "\"use\" is not a string"};
      return;
    }
    if (use->get_ref<const std::string&>() != "sig") {
      problem = {false, "\"use\" is " + quoteValue(use->get<std::string>()) + ", not 'sig'"};
      return;
    }
  }
  if (auto ops = key.find("key_ops"); ops != key.end()) {
    bool verify = false;
    if (ops->is_array()) {
      for (const auto& op : *ops)
        verify |= op.is_string() && op.get_ref<const std::string&>() == "verify";
    }
    if (!verify) {
      problem = {false, "\"key_ops\" does not include 'verify'"};
      return;
    }
  }
  if (auto a = key.find("alg"); a != key.end()) {
    if (!a->is_string()) {
      problem = {true, "\"alg\" is not a string"};
      return;
    }
    alg = algorithmFromName(a->get_ref<const std::string&>());
    if (!alg) {
      problem = {false, "\"alg\" " + quoteValue(a->get<std::string>()) +
                            " is not a supported signature algorithm"};
      return;
    }
    if (familyOf(*alg) != family) {
      problem = {true,
                 "\"alg\" " + quoteValue(a->get<std::string>()) + " does not fit the key type"};
    }
  }
}

std::optional<Jwk> parseKey(const Json& key, KeyProblem& problem) {
  if (!key.is_object()) {
    problem = {true, "not a JSON object"};
    return std::nullopt;
  }
  std::string kid;
  if (auto k = key.find("kid"); k != key.end()) {
    if (!k->is_string()) {
      problem = {true, "\"kid\" is not a string"};
      return std::nullopt;
    }
    kid = k->get<std::string>();
  }
  auto kty = key.find("kty");
  if (kty == key.end() || !kty->is_string()) {
    problem = {true, "\"kty\" is missing or not a string"};
    return std::nullopt;
  }
  auto family = familyOfKey(kty->get<std::string>(), key, problem);
  if (!family) return std::nullopt;
  std::optional<Algorithm> alg;
  checkPurpose(key, *family, alg, problem);
  if (!problem.message.empty()) return std::nullopt;

  PkeyPtr pkey;
  std::string secret;
  switch (*family) {
    case KeyFamily::Rsa:
      pkey = rsaKey(key, problem);
      break;
    case KeyFamily::EcP256:
    case KeyFamily::EcP384:
    case KeyFamily::EcP521:
      pkey = ecKey(key, *family, problem);
      break;
    case KeyFamily::Ed25519:
      pkey = ed25519Key(key, problem);
      break;
    case KeyFamily::Hmac:
      if (!member(key, "k", secret, problem)) return std::nullopt;
      // RFC 7518 §3.2: at least the hash size; the smallest is HS256's 256 bits.
      if (secret.size() < 32) {
        OPENSSL_cleanse(secret.data(), secret.size());
        problem = {true, "an HMAC key must be at least 256 bits"};
        return std::nullopt;
      }
      break;
  }
  if (*family != KeyFamily::Hmac && !pkey) {
    if (problem.message.empty()) problem = {true, "OpenSSL refused the key"};
    return std::nullopt;
  }
  return Jwk(std::move(kid), *family, alg, std::move(pkey), std::move(secret));
}

std::string describeKey(size_t index, const Json& key) {
  std::string out = "key " + std::to_string(index);
  if (key.is_object()) {
    auto kid = key.find("kid");
    if (kid != key.end() && kid->is_string()) {
      out += " (kid " + quoteValue(kid->get<std::string>()) + ")";
    }
  }
  return out;
}

}  // namespace

std::optional<Algorithm> algorithmFromName(std::string_view name) {
  for (size_t i = 0; i < kAlgorithmCount; ++i) {
    if (kAlgorithmNames[i] == name) return static_cast<Algorithm>(i);
  }
  return std::nullopt;
}

std::string_view algorithmName(Algorithm alg) { return kAlgorithmNames[static_cast<size_t>(alg)]; }

KeyFamily familyOf(Algorithm alg) {
  switch (alg) {
    case Algorithm::RS256:
    case Algorithm::RS384:
    case Algorithm::RS512:
    case Algorithm::PS256:
    case Algorithm::PS384:
    case Algorithm::PS512:
      return KeyFamily::Rsa;
    case Algorithm::ES256:
      return KeyFamily::EcP256;
    case Algorithm::ES384:
      return KeyFamily::EcP384;
    case Algorithm::ES512:
      return KeyFamily::EcP521;
    case Algorithm::EdDSA:
      return KeyFamily::Ed25519;
    case Algorithm::HS256:
    case Algorithm::HS384:
    case Algorithm::HS512:
      break;
  }
  return KeyFamily::Hmac;
}

Jwk::Jwk(std::string kid, KeyFamily family, std::optional<Algorithm> alg, PkeyPtr pkey,
         std::string secret)
    : kid_(std::move(kid)),
      family_(family),
      alg_(alg),
      pkey_(std::move(pkey)),
      secret_(std::move(secret)) {}

bool Jwk::allows(Algorithm alg) const {
  if (familyOf(alg) != family_ || (alg_ && *alg_ != alg)) return false;
  if (family_ != KeyFamily::Hmac) return true;
  size_t min = alg == Algorithm::HS256 ? 32 : alg == Algorithm::HS384 ? 48 : 64;
  return secret_.size() >= min;
}

Jwk::~Jwk() {
  if (!secret_.empty()) OPENSSL_cleanse(secret_.data(), secret_.size());
}

JwksParseResult parseJwks(std::string_view json_text) {
  JwksParseResult result;
  try {
    Json doc = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) {
      result.error = "not valid JSON";
      return result;
    }
    auto keys = doc.is_object() ? doc.find("keys") : doc.end();
    if (!doc.is_object() || keys == doc.end() || !keys->is_array()) {
      result.error = "expected a JSON object with a \"keys\" array";
      return result;
    }
    std::vector<Jwk> usable;
    for (size_t i = 0; i < keys->size(); ++i) {
      const Json& key = (*keys)[i];
      KeyProblem problem;
      std::optional<Jwk> jwk = parseKey(key, problem);
      if (jwk) {
        usable.push_back(std::move(*jwk));
        continue;
      }
      std::string message = describeKey(i, key) + ": " + problem.message;
      (problem.invalid ? result.invalid : result.skipped).push_back(std::move(message));
    }
    if (usable.empty()) {
      result.error = "no usable signature key";
      if (!result.invalid.empty()) result.error += " (" + result.invalid.front() + ")";
      return result;
    }
    result.keys = std::make_shared<const KeySet>(std::move(usable));
  } catch (const std::exception& e) {
    // nlohmann's accessors are only used after type checks; this is the last line.
    result.keys.reset();
    result.error = std::string("cannot read the key set: ") + e.what();
  }
  return result;
}

std::vector<std::string> checkJwks(std::string_view json_text,
                                   const std::vector<std::string>& algorithms) {
  JwksParseResult parsed = parseJwks(json_text);
  std::vector<std::string> problems = parsed.invalid;
  if (!parsed.keys) {
    if (parsed.invalid.empty()) problems.push_back(parsed.error);
    return problems;
  }
  for (const Jwk& key : parsed.keys->keys()) {
    for (const auto& name : algorithms) {
      if (auto alg = algorithmFromName(name); alg && key.allows(*alg)) return problems;
    }
  }
  problems.push_back("no key can verify any of the provider's algorithms");
  return problems;
}

}  // namespace gw::jwt
