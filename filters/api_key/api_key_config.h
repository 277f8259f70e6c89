// api_key: {set}: the request must carry a key of the named api_keys entry.
#pragma once

#include <yaml-cpp/yaml.h>

#include <memory>
#include <string>

#include "gateway/config/config.h"
#include "gateway/config/config_context.h"
#include "gateway/filter.h"

namespace gw::api_key {

class ApiKeyConfig : public FilterConfig {
 public:
  ApiKeyConfig(std::string set, SourceLocation where)
      : set_(std::move(set)), where_(std::move(where)) {}
  // The api_keys entry's name; the loader checks that it exists.
  const std::string& set() const { return set_; }
  const SourceLocation& setLocation() const { return where_; }

 private:
  std::string set_;
  SourceLocation where_;
};

std::shared_ptr<const FilterConfig> parseApiKeyConfig(const YAML::Node& node, ConfigContext& ctx);

}  // namespace gw::api_key
