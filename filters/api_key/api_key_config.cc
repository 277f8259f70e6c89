#include "filters/api_key/api_key_config.h"

namespace gw::api_key {

std::shared_ptr<const FilterConfig> parseApiKeyConfig(const YAML::Node& node, ConfigContext& ctx) {
  size_t errors = ctx.errorCount();
  auto map = ctx.expectMap(node, "api_key", {"set"});
  if (!map || !ctx.require(*map, {"set"})) return nullptr;
  const YAML::Node& set = *map->find("set");
  auto name = ctx.nonEmptyString(set);
  if (!name || ctx.errorCount() != errors) return nullptr;
  return std::make_shared<ApiKeyConfig>(*name, ctx.location(set));
}

}  // namespace gw::api_key
