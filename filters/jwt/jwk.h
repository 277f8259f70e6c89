// JSON Web Keys (RFC 7517) as the verifier uses them: each key bound to the one algorithm
// family its `kty` (and `crv`) allows, narrowed further by its `alg`, so that a token can
// never make the gateway use a key with an algorithm it was not made for (HS256 keyed with
// an RSA public key's bytes, RFC 8725 §2.1).
//
// Contract: a KeySet is immutable once parsed and may be shared by every thread; its
// EVP_PKEYs are only used for verification, which OpenSSL 3 allows concurrently.
#pragma once

#include <openssl/evp.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gw::jwt {

enum class Algorithm : uint8_t {
  RS256,
  RS384,
  RS512,
  PS256,
  PS384,
  PS512,
  ES256,
  ES384,
  ES512,
  EdDSA,
  HS256,
  HS384,
  HS512,
};
inline constexpr size_t kAlgorithmCount = 13;

std::optional<Algorithm> algorithmFromName(std::string_view name);
std::string_view algorithmName(Algorithm alg);
inline uint32_t algorithmBit(Algorithm alg) { return 1u << static_cast<unsigned>(alg); }

// What a key can do: each algorithm belongs to exactly one family.
enum class KeyFamily : uint8_t { Rsa, EcP256, EcP384, EcP521, Ed25519, Hmac };
KeyFamily familyOf(Algorithm alg);

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

class Jwk {
 public:
  Jwk(std::string kid, KeyFamily family, std::optional<Algorithm> alg, PkeyPtr pkey,
      std::string secret);
  ~Jwk();
  Jwk(Jwk&&) noexcept = default;
  Jwk& operator=(Jwk&&) noexcept = default;

  const std::string& kid() const { return kid_; }
  KeyFamily family() const { return family_; }
  // The family matches, the JWK's own `alg` (if any) is this one, and an HMAC key is at
  // least as long as the hash (RFC 7518 §3.2).
  bool allows(Algorithm alg) const;
  EVP_PKEY* pkey() const { return pkey_.get(); }         // asymmetric keys
  const std::string& secret() const { return secret_; }  // HMAC keys

 private:
  std::string kid_;
  KeyFamily family_;
  std::optional<Algorithm> alg_;
  PkeyPtr pkey_;
  std::string secret_;  // wiped on destruction
};

class KeySet {
 public:
  explicit KeySet(std::vector<Jwk> keys) : keys_(std::move(keys)) {}
  const std::vector<Jwk>& keys() const { return keys_; }
  size_t size() const { return keys_.size(); }
  bool empty() const { return keys_.empty(); }

 private:
  std::vector<Jwk> keys_;
};

struct JwksParseResult {
  // The usable signature keys; null when the document is not a JWKS at all or holds no
  // usable key (then `error` says why).
  std::shared_ptr<const KeySet> keys;
  std::string error;
  // Keys left out on purpose: encryption keys, unsupported kty/crv/alg (foreign JWKS
  // documents legitimately hold those).
  std::vector<std::string> skipped;
  // Keys that claim to be signature keys we support but are broken (bad base64url, a point
  // not on its curve, an RSA modulus under 2048 bits): an operator's mistake.
  std::vector<std::string> invalid;
};

// Parses a JWKS document ({"keys": [...]}). Never throws. Private key members, if any, are
// ignored (only the public part is used), and nothing secret appears in the messages.
JwksParseResult parseJwks(std::string_view json_text);

// What `gateway --check` reports about a jwks_file: its broken keys, and an error when no
// key can verify any of `algorithms` (names as in the configuration). Empty when usable.
std::vector<std::string> checkJwks(std::string_view json_text,
                                   const std::vector<std::string>& algorithms);

}  // namespace gw::jwt
