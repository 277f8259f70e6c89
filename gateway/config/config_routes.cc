// Routes, their match rules, and the filter maps of routes and default_filters.
#include <re2/re2.h>

#include <algorithm>

#include <yaml-cpp/yaml.h>

#include "filters/registry.h"
#include "gateway/config/config_sections.h"

namespace gw::config_detail {
namespace {

size_t registryRank(const std::string& name) {
  const auto& registry = filterRegistry();
  for (size_t i = 0; i < registry.size(); ++i) {
    if (registry[i].name == name) return i;
  }
  return registry.size();
}

bool isSecretKey(std::string_view key) {
  static constexpr std::string_view kSecret[] = {"password", "secret", "client_secret", "token",
                                                 "private_key", "keys", "credentials"};
  std::string lower = toLowerAscii(key);
  for (std::string_view s : kSecret) {
    if (lower == s) return true;
  }
  return false;
}

// A copy of `node` whose secret-named values are "***" (at any depth).
YAML::Node masked(const YAML::Node& node) {
  if (node.IsMap()) {
    YAML::Node out(YAML::NodeType::Map);
    for (const auto& kv : node) {
      std::string key = kv.first.Scalar();
      out[key] = isSecretKey(key) ? YAML::Node("***") : masked(kv.second);
    }
    return out;
  }
  if (node.IsSequence()) {
    YAML::Node out(YAML::NodeType::Sequence);
    for (const auto& item : node) out.push_back(masked(item));
    return out;
  }
  return YAML::Clone(node);
}

std::string settingsText(const YAML::Node& node) {
  YAML::Emitter out;
  out.SetMapFormat(YAML::Flow);
  out.SetSeqFormat(YAML::Flow);
  out << masked(node);
  return out.good() ? std::string(out.c_str()) : std::string("?");
}

std::vector<std::string_view> filterNames() {
  std::vector<std::string_view> names;
  for (const auto& filter : filterRegistry()) names.push_back(filter.name);
  return names;
}

// "api.example.com", "*.example.com": lower-cased, one leading wildcard label at most.
std::optional<std::string> parseHost(const YAML::Node& node, ConfigContext& ctx) {
  auto host = ctx.nonEmptyString(node);
  if (!host) return std::nullopt;
  std::string lower = toLowerAscii(*host);
  std::string_view rest = lower;
  if (rest.substr(0, 2) == "*.") rest.remove_prefix(2);
  bool ok = !rest.empty() && rest.find_first_of("*/ \t") == std::string_view::npos;
  // Hosts match whatever the port: a port here would never match. IPv6 literals have
  // several colons ("::1") or brackets ("[::1]"); one colon, or "]:", is a port.
  size_t colons = size_t(std::count(rest.begin(), rest.end(), ':'));
  if (ok && !rest.empty() && rest.front() == '[') ok = rest.back() == ']';
  else if (ok && colons == 1) ok = false;
  if (!ok) {
    ctx.error(node, "bad host " + quoteValue(*host) +
                        " (expected a name without a port, or *.example.com)");
    return std::nullopt;
  }
  return lower;
}

std::optional<std::string> parsePath(const YAML::Node& node, ConfigContext& ctx) {
  auto path = ctx.string(node);
  if (!path) return std::nullopt;
  if (path->empty() || (*path)[0] != '/' || path->find_first_of(" ?#") != std::string::npos) {
    ctx.error(node, "a path must start with '/' and contain no spaces, '?' or '#'");
    return std::nullopt;
  }
  return path;
}

void parseMatchHeaders(const YAML::Node& node, ConfigContext& ctx, RouteMatch& match) {
  auto map = ctx.expectOpenMap(node, "match headers");
  if (!map) return;
  for (const auto& entry : map->entries()) {
    if (!isHttpToken(entry.key)) {
      ctx.error(entry.key_node, quoteValue(entry.key) + " is not a valid header name");
      continue;
    }
    auto value = ctx.string(entry.value);
    if (value) match.headers.emplace_back(toLowerAscii(entry.key), *value);
  }
}

void parseMatch(const YAML::Node& node, ConfigContext& ctx, RouteMatch& match) {
  auto map = ctx.expectMap(node, "match",
                           {"host", "path", "path_prefix", "path_regex", "methods", "headers"});
  if (!map) return;
  int path_rules = map->has("path") + map->has("path_prefix") + map->has("path_regex");
  if (path_rules > 1) ctx.error(node, "use only one of path, path_prefix, path_regex");
  ctx.read(*map, "host", match.host, [&](const YAML::Node& n) { return parseHost(n, ctx); });
  ctx.read(*map, "path", match.path, [&](const YAML::Node& n) { return parsePath(n, ctx); });
  ctx.read(*map, "path_prefix", match.path_prefix,
           [&](const YAML::Node& n) { return parsePath(n, ctx); });
  if (const YAML::Node* regex = map->find("path_regex")) {
    auto text = ctx.nonEmptyString(*regex);
    RE2::Options options;
    options.set_log_errors(false);
    auto compiled = text ? std::make_shared<const RE2>(*text, options) : nullptr;
    if (compiled && !compiled->ok()) {
      ctx.error(*regex, "bad path_regex " + quoteValue(*text) + ": " + compiled->error());
    } else if (compiled) {
      match.path_regex = *text;
      match.regex = std::move(compiled);
    }
  }
  ctx.read(*map, "methods", match.methods, [&](const YAML::Node& n) {
    auto methods = ctx.list(n, "methods", [&](const YAML::Node& m) -> std::optional<std::string> {
      auto method = ctx.token(m, "method");
      return method ? std::optional(toUpperAscii(*method)) : std::nullopt;
    });
    if (methods && methods->empty()) ctx.error(n, "methods must not be empty (omit it for any)");
    return methods;
  });
  if (const YAML::Node* headers = map->find("headers")) parseMatchHeaders(*headers, ctx, match);
}

// A strip_prefix that is not a prefix of what the route matches would never apply.
void checkStripPrefix(const MapNode& map, ConfigContext& ctx, const RouteConfig& route) {
  const YAML::Node* node = map.find("strip_prefix");
  if (!node || route.strip_prefix.empty()) return;
  const std::string& matched =
      route.match.path_prefix.empty() ? route.match.path : route.match.path_prefix;
  if (!matched.empty() && matched.compare(0, route.strip_prefix.size(), route.strip_prefix) != 0) {
    ctx.error(*node, "strip_prefix " + quoteValue(route.strip_prefix) +
                         " is not a prefix of the matched path " + quoteValue(matched));
  }
}

void parseRoute(const YAML::Node& node, ConfigContext& ctx, Config& config,
                std::vector<FilterSettings>& filter_overrides) {
  auto map = ctx.expectMap(
      node, "route",
      {"name", "match", "upstream", "admin", "strip_prefix", "timeout", "websocket", "filters"});
  if (!map) return;
  RouteConfig route;
  // `admin: true` serves the admin endpoints (SPEC §4) on this route instead of proxying:
  // the one way to expose them on a public listener, behind the route's filters.
  ctx.readBool(*map, "admin", route.admin);
  ctx.require(*map, route.admin ? std::initializer_list<std::string_view>{"name", "match"}
                                 : std::initializer_list<std::string_view>{"name", "match", "upstream"});
  readName(ctx, *map, route);
  if (const YAML::Node* match = map->find("match")) parseMatch(*match, ctx, route.match);
  if (const YAML::Node* upstream = map->find("upstream")) {
    route.upstream = ctx.nonEmptyString(*upstream).value_or("");
    auto it = std::find_if(config.upstreams.begin(), config.upstreams.end(),
                           [&](const UpstreamConfig& u) { return u.name == route.upstream; });
    if (it != config.upstreams.end()) {
      route.upstream_index = static_cast<size_t>(it - config.upstreams.begin());
    } else if (!route.upstream.empty()) {
      ctx.error(*upstream, "unknown upstream " + quoteValue(route.upstream));
    }
  }
  ctx.read(*map, "strip_prefix", route.strip_prefix,
           [&](const YAML::Node& n) { return parsePath(n, ctx); });
  checkStripPrefix(*map, ctx, route);
  if (const YAML::Node* timeout = map->find("timeout")) {
    route.timeout = ctx.duration(*timeout, Millis(1));
  }
  ctx.readBool(*map, "websocket", route.websocket);
  const YAML::Node* filters = map->find("filters");
  filter_overrides.push_back(filters ? parseFilterMap(*filters, ctx, true) : FilterSettings{});
  config.routes.push_back(std::move(route));
}

}  // namespace

FilterSettings parseFilterMap(const YAML::Node& node, ConfigContext& ctx, bool route_level) {
  FilterSettings settings;
  auto map = ctx.expectOpenMap(node, route_level ? "route filters" : "default_filters");
  if (!map) return settings;
  static const std::vector<std::string_view> kNames = filterNames();
  for (const auto& entry : map->entries()) {
    const FilterDescriptor* filter = findFilter(entry.key);
    if (!filter) {
      std::string message = "unknown filter " + quoteValue(entry.key);
      std::string_view suggestion = closestMatch(entry.key, kNames);
      if (!suggestion.empty()) message += " (did you mean '" + std::string(suggestion) + "'?)";
      ctx.error(entry.key_node, message);
      settings.complete = false;
      continue;
    }
    if (ctx.isOff(entry.value)) {
      settings.by_name[entry.key] = nullptr;
      continue;
    }
    auto parsed = filter->parse(entry.value, ctx);
    if (parsed) {
      settings.by_name[entry.key] = std::move(parsed);
      settings.settings[entry.key] = settingsText(entry.value);
    } else {
      settings.complete = false;
    }
  }
  return settings;
}

std::vector<RouteFilter> mergeFilters(const FilterSettings& defaults,
                                      const FilterSettings& overrides) {
  auto effective = defaults.by_name;
  // A route's entry replaces the default one whole (no deep merge): what the route says
  // about a filter is all there is.
  for (const auto& [name, config] : overrides.by_name) effective[name] = config;
  std::vector<RouteFilter> filters;
  for (const auto& [name, config] : effective) {
    if (!config) continue;
    bool from_route = overrides.by_name.count(name) != 0;
    const auto& texts = from_route ? overrides.settings : defaults.settings;
    auto text = texts.find(name);
    filters.push_back({name, config, text != texts.end() ? text->second : std::string(), from_route});
  }
  std::stable_sort(filters.begin(), filters.end(), [](const RouteFilter& a, const RouteFilter& b) {
    return registryRank(a.name) < registryRank(b.name);
  });
  return filters;
}

void parseRoutes(const YAML::Node& node, ConfigContext& ctx, Config& config,
                 std::vector<FilterSettings>& filter_overrides) {
  forEachItem(node, ctx, "routes",
              [&](const YAML::Node& item) { parseRoute(item, ctx, config, filter_overrides); });
  checkUniqueNames(ctx, config.routes, "route");
}

}  // namespace gw::config_detail
