#include "filters/jwt/jws.h"

#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>

#include <array>

namespace gw::jwt {
namespace {

enum class Digest : uint8_t { Sha256, Sha384, Sha512, None };

Digest digestOf(Algorithm alg) {
  switch (alg) {
    case Algorithm::RS256:
    case Algorithm::PS256:
    case Algorithm::ES256:
    case Algorithm::HS256:
      return Digest::Sha256;
    case Algorithm::RS384:
    case Algorithm::PS384:
    case Algorithm::ES384:
    case Algorithm::HS384:
      return Digest::Sha384;
    case Algorithm::RS512:
    case Algorithm::PS512:
    case Algorithm::ES512:
    case Algorithm::HS512:
      return Digest::Sha512;
    case Algorithm::EdDSA:
      break;
  }
  return Digest::None;
}

// Fetched once: an implicit fetch by name on every verification takes the provider
// store's lock, which workers would then contend on.
const EVP_MD* fetchedDigest(Digest d) {
  static const std::array<EVP_MD*, 3> kDigests = {
      EVP_MD_fetch(nullptr, "SHA256", nullptr),
      EVP_MD_fetch(nullptr, "SHA384", nullptr),
      EVP_MD_fetch(nullptr, "SHA512", nullptr),
  };
  return d == Digest::None ? nullptr : kDigests[static_cast<size_t>(d)];
}

struct MdCtxFree {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};

// One context per thread, reset between uses.
EVP_MD_CTX* threadMdCtx() {
  thread_local std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  return ctx.get();
}

bool digestVerify(Algorithm alg, EVP_PKEY* pkey, std::string_view input,
                  std::string_view signature) {
  EVP_MD_CTX* ctx = threadMdCtx();
  if (!ctx || !pkey) return false;
  EVP_MD_CTX_reset(ctx);
  EVP_PKEY_CTX* pctx = nullptr;  // owned by ctx
  const EVP_MD* md = fetchedDigest(digestOf(alg));
  if (alg != Algorithm::EdDSA && !md) return false;
  bool ok = EVP_DigestVerifyInit(ctx, &pctx, md, nullptr, pkey) == 1;
  if (ok && (alg == Algorithm::PS256 || alg == Algorithm::PS384 || alg == Algorithm::PS512)) {
    // RFC 7518 §3.5: MGF1 with the same hash (OpenSSL's default) and a salt as long as it.
    ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1;
  }
  ok = ok && EVP_DigestVerify(
                 ctx, reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                 reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1;
  EVP_MD_CTX_reset(ctx);
  ERR_clear_error();
  return ok;
}

// JOSE's R || S (RFC 7518 §3.4) to the DER SEQUENCE OpenSSL verifies.
bool ecdsaVerify(Algorithm alg, EVP_PKEY* pkey, std::string_view input,
                 std::string_view signature) {
  size_t half = alg == Algorithm::ES256 ? 32 : alg == Algorithm::ES384 ? 48 : 66;
  if (signature.size() != 2 * half) return false;
  const auto* raw = reinterpret_cast<const unsigned char*>(signature.data());
  ECDSA_SIG* sig = ECDSA_SIG_new();
  BIGNUM* r = BN_bin2bn(raw, int(half), nullptr);
  BIGNUM* s = BN_bin2bn(raw + half, int(half), nullptr);
  if (!sig || !r || !s || ECDSA_SIG_set0(sig, r, s) != 1) {
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return false;
  }
  // Two INTEGERs of at most 67 bytes each, with their headers: well under 160.
  std::array<unsigned char, 160> der;
  int length = i2d_ECDSA_SIG(sig, nullptr);
  bool ok = false;
  if (length > 0 && size_t(length) <= der.size()) {
    unsigned char* p = der.data();
    length = i2d_ECDSA_SIG(sig, &p);
    ok = length > 0 &&
         digestVerify(alg, pkey, input,
                      std::string_view(reinterpret_cast<const char*>(der.data()), size_t(length)));
  }
  ECDSA_SIG_free(sig);
  ERR_clear_error();
  return ok;
}

bool hmacVerify(Algorithm alg, const std::string& secret, std::string_view input,
                std::string_view signature) {
  const EVP_MD* md = fetchedDigest(digestOf(alg));
  std::array<unsigned char, EVP_MAX_MD_SIZE> mac;
  unsigned int length = 0;
  if (!md || !HMAC(md, secret.data(), int(secret.size()),
                   reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac.data(),
                   &length)) {
    ERR_clear_error();
    return false;
  }
  // The length is public (it is the algorithm's); the bytes are compared in constant time.
  bool ok = signature.size() == length && CRYPTO_memcmp(mac.data(), signature.data(), length) == 0;
  OPENSSL_cleanse(mac.data(), mac.size());
  return ok;
}

}  // namespace

bool verifySignature(Algorithm alg, const Jwk& key, std::string_view signing_input,
                     std::string_view signature) {
  if (!key.allows(alg)) return false;
  switch (familyOf(alg)) {
    case KeyFamily::Hmac:
      return hmacVerify(alg, key.secret(), signing_input, signature);
    case KeyFamily::EcP256:
    case KeyFamily::EcP384:
    case KeyFamily::EcP521:
      return ecdsaVerify(alg, key.pkey(), signing_input, signature);
    case KeyFamily::Ed25519:
      return signature.size() == 64 && digestVerify(alg, key.pkey(), signing_input, signature);
    case KeyFamily::Rsa:
      break;
  }
  return digestVerify(alg, key.pkey(), signing_input, signature);
}

}  // namespace gw::jwt
