#include "filters/request_id/request_id_config.h"

namespace gw::request_id {

std::shared_ptr<const FilterConfig> parseRequestIdConfig(const YAML::Node& node,
                                                         ConfigContext& ctx) {
  size_t errors = ctx.errorCount();
  auto map = ctx.expectMap(node, "request_id", {"header"});
  if (!map) return nullptr;
  auto config = std::make_shared<RequestIdConfig>();
  ctx.read(*map, "header", config->header,
           [&](const YAML::Node& n) { return ctx.token(n, "header name"); });
  return ctx.errorCount() == errors ? config : nullptr;
}

}  // namespace gw::request_id
