// The one table that names every filter: how to parse its configuration and how to
// build its runtime objects. Adding a filter = one folder under filters/ + one line in
// registry.cc.
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "gateway/filter.h"

namespace YAML {
class Node;
}

namespace gw {

class ConfigContext;  // gateway/config/config_context.h
struct Config;
struct RouteConfig;

struct FilterDescriptor {
  std::string_view name;
  // Parses and validates `node` (the value under the filter's name). Reports every
  // problem through ctx with the node's position and returns null if there was one.
  std::shared_ptr<const FilterConfig> (*parse)(const YAML::Node& node, ConfigContext& ctx);
  // Builds the runtime filter objects for one route (a filter may occupy more than one
  // chain position: rate_limit acts before and after authentication). `route` is null for
  // default_filters' own chain (used for answers given before a route is known). Null
  // while the filter has no runtime yet: it is then validated but not run.
  void (*build)(const std::shared_ptr<const FilterConfig>& config, const RouteConfig* route,
                const Config& whole, std::vector<std::shared_ptr<const Filter>>& chain);
};

const std::vector<FilterDescriptor>& filterRegistry();
const FilterDescriptor* findFilter(std::string_view name);
// The names of a route's filters as its chain runs them (rate_limit may run twice: before
// and after authentication), for /status and --explain.
std::vector<std::string_view> filterRunOrder(const RouteConfig& route);

}  // namespace gw

namespace gw {

// The `build` of a filter that occupies one chain position with one immutable object
// constructed from its typed configuration.
template <typename FilterT, typename ConfigT>
void buildSingle(const std::shared_ptr<const FilterConfig>& config, const RouteConfig*,
                 const Config&, std::vector<std::shared_ptr<const Filter>>& chain) {
  chain.push_back(std::make_shared<FilterT>(std::static_pointer_cast<const ConfigT>(config)));
}

}  // namespace gw
