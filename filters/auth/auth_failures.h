// gateway_auth_failures_total{route,reason} (SPEC §5): why the jwt and api_key filters
// refused a request. Counted in the metrics store of the worker that refused it
// (gateway/metrics.h), so counting takes no lock and /metrics sums the workers.
#pragma once

#include <cstdint>
#include <string_view>

#include "gateway/filter.h"

namespace gw::auth {

enum class Reason : uint8_t {
  Missing,    // no credentials (no Bearer token, no API key header)
  Malformed,  // not a compact JWS, bad base64url or JSON, oversized, bad claim types
  BadSignature,
  Expired,
  NotYetValid,  // nbf or iat in the future (beyond the leeway)
  WrongIssuer,
  WrongAudience,
  UnknownKid,         // no key with the token's kid, even after a refetch
  AlgNotAllowed,      // none, not in the provider's algorithms, or not the key's family
  InsufficientScope,  // require_claims or scopes unmet (403)
  KeysUnavailable,    // the provider never loaded a key set (503)
  UnknownKey,         // an API key that is not in the set
  kCount,
};

inline constexpr size_t kReasonCount = static_cast<size_t>(Reason::kCount);

// The metric's `reason` label: "missing", "bad_signature", ...
std::string_view reasonName(Reason reason);

// One route's failure counter, made when the route's filter is built (interning its label
// takes a lock: configuration load, not the request path).
class AuthFailureCounter {
 public:
  explicit AuthFailureCounter(std::string_view route);
  // One failure, in the calling worker's metrics store.
  void count(Reason reason) const;

 private:
  uint16_t route_label_;
};

}  // namespace gw::auth
