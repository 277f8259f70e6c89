#include "filters/body_limit/body_limit_config.h"

namespace gw::body_limit {

std::shared_ptr<const FilterConfig> parseBodyLimitConfig(const YAML::Node& node,
                                                         ConfigContext& ctx) {
  size_t errors = ctx.errorCount();
  auto map = ctx.expectMap(node, "body_limit", {"max_bytes"});
  if (!map || !ctx.require(*map, {"max_bytes"})) return nullptr;
  auto config = std::make_shared<BodyLimitConfig>();
  ctx.readSize(*map, "max_bytes", config->max_bytes);
  return ctx.errorCount() == errors ? config : nullptr;
}

}  // namespace gw::body_limit
