#include "filters/ip_access/ip_access_config.h"

namespace gw::ip_access {
namespace {

bool anyContains(const std::vector<Cidr>& list, const uint8_t (&ip16)[16]) {
  for (const Cidr& cidr : list) {
    if (cidr.contains(ip16)) return true;
  }
  return false;
}

}  // namespace

bool IpAccessConfig::admits(const uint8_t (&ip16)[16]) const {
  if (anyContains(deny, ip16)) return false;
  return allow.empty() || anyContains(allow, ip16);
}

std::shared_ptr<const FilterConfig> parseIpAccessConfig(const YAML::Node& node,
                                                        ConfigContext& ctx) {
  size_t errors = ctx.errorCount();
  auto map = ctx.expectMap(node, "ip_access", {"allow", "deny"});
  if (!map) return nullptr;
  auto config = std::make_shared<IpAccessConfig>();
  auto cidrs = [&](const YAML::Node& n) { return ctx.cidrList(n); };
  ctx.read(*map, "allow", config->allow, cidrs);
  ctx.read(*map, "deny", config->deny, cidrs);
  return ctx.errorCount() == errors ? config : nullptr;
}

}  // namespace gw::ip_access
