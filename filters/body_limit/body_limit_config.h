// body_limit: {max_bytes: SIZE}: the route's request body limit (413 beyond it).
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <memory>

#include "gateway/config/config_context.h"
#include "gateway/filter.h"

namespace gw::body_limit {

struct BodyLimitConfig : FilterConfig {
  uint64_t max_bytes = 0;
};

std::shared_ptr<const FilterConfig> parseBodyLimitConfig(const YAML::Node& node,
                                                         ConfigContext& ctx);

}  // namespace gw::body_limit
