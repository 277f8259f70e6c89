// jwt (SPEC §2, filter 6): a valid `Authorization: Bearer` token of the route's provider,
// with the route's require_claims and scopes, or the request is answered here:
//   401 + WWW-Authenticate: Bearer realm="gateway"[, error="invalid_token", ...]
//   403 + error="insufficient_scope"
//   503 while the provider has never loaded a key set (the token may well be valid).
// On success: forward_claims become upstream headers (incoming ones of those names are
// always removed first), the subject becomes ctx.user and the claims ctx.identity.
//
// A token whose kid is unknown makes the provider refetch its jwks_uri (at most once per
// 10 s); the request waits for that fetch (StopWait) instead of failing at once, so a
// key rotation costs no 401s.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "filters/jwt/jwt_config.h"
#include "filters/jwt/jwt_verifier.h"
#include "filters/jwt/key_store.h"
#include "filters/jwt/token_cache.h"
#include "gateway/filter.h"

namespace gw::jwt {

// One jwt_providers entry as the filters of one configuration load use it.
class Provider {
 public:
  Provider(const JwtProviderConfig& config, std::shared_ptr<KeyStore> keys);

  const std::string& name() const { return name_; }
  const VerifyPolicy& policy() const { return policy_; }
  // Changes whenever the policy does, so that a reload's new rules are not answered from
  // tokens cached under the old ones.
  uint64_t policyFingerprint() const { return fingerprint_; }
  const std::vector<std::pair<std::string, std::string>>& forwardClaims() const {
    return forward_claims_;
  }
  KeyStore& keys() const { return *keys_; }
  // The per-worker state's key: survives reloads, as the token cache should.
  const std::string& stateKey() const { return state_key_; }

 private:
  std::string name_;
  VerifyPolicy policy_;
  uint64_t fingerprint_;
  std::vector<std::pair<std::string, std::string>> forward_claims_;  // claim -> header
  std::shared_ptr<KeyStore> keys_;
  std::string state_key_;
};

class JwtFilter final : public Filter {
 public:
  JwtFilter(std::shared_ptr<const JwtConfig> config, std::shared_ptr<const Provider> provider,
            std::string_view route);

  FilterOrder order() const override { return FilterOrder::Auth; }
  std::string_view name() const override { return "jwt"; }
  FilterStatus onRequestHeaders(RequestContext& ctx, HeaderList& headers) const override;
  void onAbandon(RequestContext& ctx) const override;

  // Finishes a request parked by onRequestHeaders() once its key set was refetched (or the
  // wait ended): exactly one of ctx.continueRequest() / ctx.sendLocalReply() follows.
  void resume(RequestContext& ctx, HeaderList& headers, std::string_view token) const;

  const Provider& provider() const { return *provider_; }

 private:
  FilterStatus authenticate(RequestContext& ctx, HeaderList& headers, std::string_view token,
                            bool may_wait) const;
  FilterStatus refuse(RequestContext& ctx, auth::Reason reason) const;
  FilterStatus admit(RequestContext& ctx, HeaderList& headers,
                     const std::shared_ptr<const TokenIdentity>& identity) const;

  std::shared_ptr<const JwtConfig> config_;
  std::shared_ptr<const Provider> provider_;
  std::string forbidden_challenge_;  // the 403's WWW-Authenticate, with the route's scopes
  auth::AuthFailureCounter failures_;
};

// The worker's verified-token cache for `provider` (for tests, and cache metrics later).
const TokenCache& tokenCache(WorkerServices& worker, const Provider& provider);

// The registry's `build`: one JwtFilter on the route, its provider's keys acquired now.
void buildJwtFilter(const std::shared_ptr<const FilterConfig>& config, const RouteConfig* route,
                    const Config& whole, std::vector<std::shared_ptr<const Filter>>& chain);

}  // namespace gw::jwt
