// ip_access: {allow: [CIDR], deny: [CIDR]} on the client address. Deny wins; a non-empty
// allow list admits only what it lists.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "gateway/config/config.h"
#include "gateway/config/config_context.h"
#include "gateway/filter.h"

namespace gw::ip_access {

struct IpAccessConfig : FilterConfig {
  std::vector<Cidr> allow;
  std::vector<Cidr> deny;

  // The whole rule, in the IPv4-mapped form of RequestContext::client_ip16.
  bool admits(const uint8_t (&ip16)[16]) const;
};

std::shared_ptr<const FilterConfig> parseIpAccessConfig(const YAML::Node& node, ConfigContext& ctx);

}  // namespace gw::ip_access
