#include "filters/jwt/jwt_config.h"

namespace gw::jwt {
namespace {

// `role: [admin, ops]`, or `role: admin` for a single value.
std::optional<std::vector<std::string>> claimValues(const YAML::Node& node, ConfigContext& ctx) {
  if (node.IsScalar()) {
    auto value = ctx.string(node);
    return value ? std::optional(std::vector<std::string>{*value}) : std::nullopt;
  }
  auto values = ctx.stringList(node);
  if (values && values->empty()) {
    ctx.error(node, "a required claim needs at least one accepted value");
    return std::nullopt;
  }
  return values;
}

}  // namespace

std::shared_ptr<const FilterConfig> parseJwtConfig(const YAML::Node& node, ConfigContext& ctx) {
  size_t errors = ctx.errorCount();
  auto map = ctx.expectMap(node, "jwt", {"provider", "require_claims", "scopes"});
  if (!map || !ctx.require(*map, {"provider"})) return nullptr;
  const YAML::Node& provider = *map->find("provider");
  auto name = ctx.nonEmptyString(provider);
  std::vector<JwtConfig::ClaimRequirement> claims;
  if (const YAML::Node* required = map->find("require_claims")) {
    if (auto entries = ctx.expectOpenMap(*required, "require_claims")) {
      for (const auto& entry : entries->entries()) {
        auto values = claimValues(entry.value, ctx);
        if (values) claims.emplace_back(entry.key, std::move(*values));
      }
    }
  }
  std::vector<std::string> scopes;
  ctx.read(*map, "scopes", scopes, [&](const YAML::Node& n) {
    return ctx.list(n, "scopes", [&](const YAML::Node& s) -> std::optional<std::string> {
      auto scope = ctx.nonEmptyString(s);
      // A granted `scope` claim is space-separated: a scope with a space could never match.
      if (scope && scope->find(' ') != std::string::npos) {
        ctx.error(s, "a scope cannot contain spaces");
        return std::nullopt;
      }
      return scope;
    });
  });
  if (!name || ctx.errorCount() != errors) return nullptr;
  return std::make_shared<JwtConfig>(*name, ctx.location(provider), std::move(claims),
                                     std::move(scopes));
}

}  // namespace gw::jwt
