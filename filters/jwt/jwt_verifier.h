// Verification of one compact JWS bearer token (RFC 7519 JWT, RFC 8725 practices) against
// a key set and a provider's policy: the pure part of the jwt filter, without I/O, clocks
// or caches, so that it can be tested against the RFC vectors and benchmarked alone.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "filters/auth/auth_failures.h"
#include "filters/jwt/jwk.h"
#include "gateway/filter.h"

namespace gw::jwt {

// Larger tokens are refused unread (malformed): no legitimate token needs more, and the
// cost of base64 and JSON work stays bounded.
inline constexpr size_t kMaxTokenBytes = 8192;

// One claim of a verified token, in the forms the filter uses.
struct Claim {
  std::string name;
  // A string as it is; a number or boolean in its JSON form; an array's elements joined
  // with ","; an object as JSON; empty for null.
  std::string text;
  // An array's elements, each as `text` would render it alone; empty for other claims.
  std::vector<std::string> elements;
  bool is_array = false;
};

// What a verified token says. Immutable; shared by the token cache and the requests.
class TokenIdentity final : public Identity {
 public:
  TokenIdentity(std::vector<Claim> claims, std::vector<std::string> scopes, uint64_t expires_at_ms);

  std::string_view claim(std::string_view name) const override;
  const Claim* find(std::string_view name) const;
  // `sub`, or empty.
  std::string_view subject() const { return claim("sub"); }
  // Granted by a space-separated `scope` or `scp`, or an array `scp`.
  bool hasScope(std::string_view scope) const;
  // The claim equals one of `accepted` (an array claim: any of its elements does).
  bool claimMatches(std::string_view name, const std::vector<std::string>& accepted) const;
  const std::vector<Claim>& claims() const { return claims_; }
  // exp (plus leeway) in ms since the epoch; UINT64_MAX for a token without exp.
  uint64_t expiresAtMs() const { return expires_at_ms_; }

 private:
  std::vector<Claim> claims_;  // sorted by name
  std::vector<std::string> scopes_;
  uint64_t expires_at_ms_;
};

// What a provider requires of every token (its routes add require_claims and scopes).
struct VerifyPolicy {
  std::string issuer;                  // empty: any
  std::vector<std::string> audiences;  // empty: any
  uint32_t algorithms = 0;             // algorithmBit()s
  uint64_t leeway_ms = 0;
};

struct VerifyResult {
  std::shared_ptr<const TokenIdentity> identity;   // set exactly when verified
  auth::Reason failure = auth::Reason::Malformed;  // when not
  // UnknownKid for a token that named a kid: fetching the key set again may help.
  bool kid_not_found = false;
};

// Checks, in this order: size and shape, header (alg allowed, no `crit`), key (kid and
// family), signature, claims (exp, nbf, iat with leeway; iss; aud). `now_ms` is the wall
// clock. Never throws.
VerifyResult verifyToken(std::string_view token, const KeySet& keys, const VerifyPolicy& policy,
                         uint64_t now_ms);

}  // namespace gw::jwt
