// request_id: {header}: which request header carries the id (default X-Request-ID).
#pragma once

#include <yaml-cpp/yaml.h>

#include <memory>
#include <string>

#include "gateway/config/config_context.h"
#include "gateway/filter.h"

namespace gw::request_id {

struct RequestIdConfig : FilterConfig {
  std::string header = "X-Request-ID";
};

std::shared_ptr<const FilterConfig> parseRequestIdConfig(const YAML::Node& node,
                                                         ConfigContext& ctx);

}  // namespace gw::request_id
