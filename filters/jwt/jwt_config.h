// jwt: {provider, require_claims: {claim: [values]}, scopes: [...]}: a valid bearer token
// of the named jwt_providers entry, with every required claim holding one of its values
// (any element of an array claim) and every scope granted.
#pragma once

#include <yaml-cpp/yaml.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gateway/config/config.h"
#include "gateway/config/config_context.h"
#include "gateway/filter.h"

namespace gw::jwt {

class JwtConfig : public FilterConfig {
 public:
  using ClaimRequirement = std::pair<std::string, std::vector<std::string>>;

  JwtConfig(std::string provider, SourceLocation where,
            std::vector<ClaimRequirement> require_claims, std::vector<std::string> scopes)
      : provider_(std::move(provider)),
        where_(std::move(where)),
        require_claims_(std::move(require_claims)),
        scopes_(std::move(scopes)) {}

  // The jwt_providers entry's name; the loader checks that it exists.
  const std::string& provider() const { return provider_; }
  const SourceLocation& providerLocation() const { return where_; }
  // claim -> accepted values, in file order.
  const std::vector<ClaimRequirement>& requireClaims() const { return require_claims_; }
  const std::vector<std::string>& scopes() const { return scopes_; }

 private:
  std::string provider_;
  SourceLocation where_;
  std::vector<ClaimRequirement> require_claims_;
  std::vector<std::string> scopes_;
};

std::shared_ptr<const FilterConfig> parseJwtConfig(const YAML::Node& node, ConfigContext& ctx);

}  // namespace gw::jwt
