// Internal to the configuration loader: one parser per top-level section, and the
// checks of the files the configuration names. Each reports through the context and
// fills what it could parse (a named entry is kept even if some of its fields were bad,
// so that references to it do not raise a second, misleading error).
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/config/config.h"
#include "gateway/config/config_context.h"

namespace gw::config_detail {

// "host:port", "[v6]:port": resolved now (getaddrinfo, numeric port).
std::optional<SocketAddress> parseAddress(ConfigContext& ctx, const YAML::Node& node,
                                          bool allow_port_zero);
// Resolves `text` into `out`; returns an error message, empty on success.
std::string resolveAddress(const std::string& text, bool allow_port_zero, SocketAddress& out);

// config_server.cc
void parseListeners(const YAML::Node& node, ConfigContext& ctx, Config& config);
void parseAdmin(const YAML::Node& node, ConfigContext& ctx, Config& config);
void parseLogging(const YAML::Node& node, ConfigContext& ctx, Config& config);
void parseLimits(const YAML::Node& node, ConfigContext& ctx, Config& config);
void parseTimeouts(const YAML::Node& node, ConfigContext& ctx, Config& config);
// config_upstreams.cc
void parseUpstreams(const YAML::Node& node, ConfigContext& ctx, Config& config);
void parseRateLimitStore(const YAML::Node& node, ConfigContext& ctx, Config& config);
// config_auth.cc
void parseJwtProviders(const YAML::Node& node, ConfigContext& ctx, Config& config);
void parseApiKeySets(const YAML::Node& node, ConfigContext& ctx, Config& config);

// config_routes.cc. The filter maps as written, before defaults are merged in: filter
// name -> config, with null for a filter switched `off`.
struct FilterSettings {
  std::map<std::string, std::shared_ptr<const FilterConfig>> by_name;
  std::map<std::string, std::string> settings;  // RouteFilter::settings, by name
  // False when a filter's configuration was bad (and reported): checks across filters
  // would then only add misleading errors.
  bool complete = true;
};
FilterSettings parseFilterMap(const YAML::Node& node, ConfigContext& ctx, bool route_level);
// `defaults` overridden by `overrides`, in the SPEC's fixed order.
std::vector<RouteFilter> mergeFilters(const FilterSettings& defaults,
                                      const FilterSettings& overrides);
// Parses routes; `filter_overrides` receives each route's own filter map (same index).
void parseRoutes(const YAML::Node& node, ConfigContext& ctx, Config& config,
                 std::vector<FilterSettings>& filter_overrides);

// config_files.cc: PEM files (the path itself was already checked to be readable).
bool checkCertificates(ConfigContext& ctx, const YAML::Node& at, const std::string& path);
bool checkPrivateKey(ConfigContext& ctx, const YAML::Node& at, const std::string& path);
// Reported at `at` (the key's node) when the key is not the certificate's.
void checkKeyMatchesCertificate(ConfigContext& ctx, const YAML::Node& at,
                                const std::string& cert_path, const std::string& key_path);
// A JWKS document: JSON with a "keys" array of objects that each have a "kty".
// Returns the file's text, or nullopt after reporting.
std::optional<std::string> readJwksFile(ConfigContext& ctx, const YAML::Node& at,
                                        const std::string& path);

// Runs `one` on each element of a list section; a null section is an empty list.
template <class Fn>
void forEachItem(const YAML::Node& node, ConfigContext& ctx, std::string_view what, Fn&& one) {
  if (node.IsNull()) return;
  if (!node.IsSequence()) {
    ctx.error(node, "expected a list of " + std::string(what));
    return;
  }
  for (const auto& item : node) one(item);
}

// Sets item.name and item.where: the name's position, so that a duplicate is pointed at
// by its name.
template <class T>
void readName(ConfigContext& ctx, const MapNode& map, T& item) {
  const YAML::Node* name = map.find("name");
  item.where = ctx.location(name ? *name : map.node());
  if (name) item.name = ctx.nonEmptyString(*name).value_or("");
}

// Reports every entry whose name was already used, pointing at the later one. Entries
// without a name were reported as such already.
template <class T>
void checkUniqueNames(ConfigContext& ctx, const std::vector<T>& items, std::string_view what) {
  std::map<std::string, const T*> seen;
  for (const T& item : items) {
    if (item.name.empty()) continue;
    auto [it, inserted] = seen.emplace(item.name, &item);
    if (inserted) continue;
    ctx.error(item.where, "duplicate " + std::string(what) + " name " + quoteValue(item.name) +
                              " (first defined at line " + std::to_string(it->second->where.line) +
                              ")");
  }
}

}  // namespace gw::config_detail
