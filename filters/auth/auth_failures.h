// gateway_auth_failures_total{route,reason} (SPEC §5): the failures of the jwt and api_key
// filters, counted per route and reason.
//
// Contract:
// - AuthFailureCounter::count() is called on a worker thread from a filter's request phase
//   (or its resumption). It takes no lock: each route's counters are sharded by worker
//   index, so workers do not share cache lines.
// - authFailureCounts() and appendAuthFailureMetrics() may be called from any thread (the
//   /metrics scrape). Counters are never reset: a route that disappears on reload keeps its
//   totals, one that comes back continues them (Prometheus counters must not go down).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/filter.h"

namespace gw::auth {

enum class Reason : uint8_t {
  Missing,            // no credentials (no Bearer token, no API key header)
  Malformed,          // not a compact JWS, bad base64url or JSON, oversized, bad claim types
  BadSignature,
  Expired,
  NotYetValid,        // nbf or iat in the future (beyond the leeway)
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

struct RouteCounters;

// One route's counters, bound when its filter is built, so that counting needs neither a
// lookup nor a lock.
class AuthFailureCounter {
 public:
  // `route` is empty for a chain outside any route.
  explicit AuthFailureCounter(std::string_view route);
  // One failure, in the shard of the worker running `ctx` (or shard 0 without a worker).
  void count(const RequestContext& ctx, Reason reason) const;

 private:
  RouteCounters* counters_;  // process-wide, never freed
};

struct AuthFailureCount {
  std::string route;
  Reason reason;
  uint64_t value;
};

// Every (route, reason) counted so far, summed across workers, sorted by route then reason.
std::vector<AuthFailureCount> authFailureCounts();

// The metric family in Prometheus text format 0.0.4: # HELP, # TYPE and one sample per
// (route, reason) counted so far; nothing at all when nothing was counted.
void appendAuthFailureMetrics(std::string& out);

}  // namespace gw::auth
