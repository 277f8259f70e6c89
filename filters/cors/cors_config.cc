#include "filters/cors/cors_config.h"

#include <re2/re2.h>

#include <algorithm>

namespace gw::cors {
namespace {

// An origin is scheme://host[:port] and nothing more; browsers send exactly that, so a
// configured trailing slash or path could never match.
bool isOrigin(std::string_view s) {
  size_t scheme_end = s.find("://");
  if (scheme_end == std::string_view::npos || scheme_end == 0) return false;
  std::string_view rest = s.substr(scheme_end + 3);
  return !rest.empty() && rest.find_first_of("/?#@ ") == std::string_view::npos;
}

bool parseOrigin(const YAML::Node& node, ConfigContext& ctx, CorsConfig& config) {
  auto origin = ctx.nonEmptyString(node);
  if (!origin) return false;
  if (*origin == "*") {
    config.allow_any_origin = true;
    return true;
  }
  if ((*origin)[0] == '~') {
    RE2::Options options;
    options.set_log_errors(false);
    auto re = std::make_shared<RE2>(origin->substr(1), options);
    if (!re->ok()) {
      ctx.error(node, "bad origin pattern " + quoteValue(origin->substr(1)) + ": " + re->error());
      return false;
    }
    config.origin_patterns.push_back(std::move(re));
    return true;
  }
  if (!isOrigin(*origin)) {
    ctx.error(node, quoteValue(*origin) +
                        " is not an origin (expected scheme://host[:port] with no path, "
                        "`*`, or ~pattern)");
    return false;
  }
  config.exact_origins.push_back(toLowerAscii(*origin));
  return true;
}

// A list of tokens, each passed through `normalise` (upper- or lower-casing).
std::optional<std::vector<std::string>> tokenList(const YAML::Node& node, ConfigContext& ctx,
                                                  std::string_view what,
                                                  std::string (*normalise)(std::string_view)) {
  return ctx.list(node, what, [&](const YAML::Node& n) -> std::optional<std::string> {
    if (n.IsScalar() && n.Scalar() == "*") return std::string("*");
    auto t = ctx.token(n, what);
    return t ? std::optional(normalise(*t)) : std::nullopt;
  });
}

std::string keepCase(std::string_view s) { return std::string(s); }

// Moves a `*` out of the list into a flag.
bool takeWildcard(std::vector<std::string>& items) {
  auto star = std::remove(items.begin(), items.end(), "*");
  bool found = star != items.end();
  items.erase(star, items.end());
  return found;
}

}  // namespace

bool CorsConfig::originAllowed(std::string_view origin) const {
  if (allow_any_origin) return true;
  // Case-insensitive against the lower-cased list: no copy per request.
  for (const auto& allowed : exact_origins) {
    if (equalsIgnoreCase(allowed, origin)) return true;
  }
  for (const auto& re : origin_patterns) {
    if (RE2::FullMatch(re2::StringPiece(origin.data(), origin.size()), *re)) return true;
  }
  return false;
}

bool CorsConfig::methodAllowed(std::string_view method) const {
  if (allow_any_method) return true;
  return std::find(allow_methods.begin(), allow_methods.end(), method) != allow_methods.end();
}

bool CorsConfig::headerAllowed(std::string_view name) const {
  if (allow_any_header) return true;
  for (const auto& allowed : allow_headers) {
    if (equalsIgnoreCase(allowed, name)) return true;
  }
  return false;
}

std::shared_ptr<const FilterConfig> parseCorsConfig(const YAML::Node& node, ConfigContext& ctx) {
  size_t errors = ctx.errorCount();
  auto map = ctx.expectMap(node, "cors",
                           {"allow_origins", "allow_methods", "allow_headers", "expose_headers",
                            "allow_credentials", "max_age"});
  if (!map || !ctx.require(*map, {"allow_origins"})) return nullptr;
  auto config = std::make_shared<CorsConfig>();
  const YAML::Node& origins = *map->find("allow_origins");
  if (!origins.IsSequence() || origins.size() == 0) {
    ctx.error(origins, "allow_origins must be a non-empty list");
  } else {
    for (const auto& origin : origins) parseOrigin(origin, ctx, *config);
  }
  // The CORS-safelisted methods, as browsers assume them without configuration.
  config->allow_methods = {"GET", "HEAD", "POST"};
  ctx.read(*map, "allow_methods", config->allow_methods,
           [&](const YAML::Node& n) { return tokenList(n, ctx, "method", toUpperAscii); });
  ctx.read(*map, "allow_headers", config->allow_headers,
           [&](const YAML::Node& n) { return tokenList(n, ctx, "header name", toLowerAscii); });
  ctx.read(*map, "expose_headers", config->expose_headers,
           [&](const YAML::Node& n) { return tokenList(n, ctx, "header name", keepCase); });
  ctx.readBool(*map, "allow_credentials", config->allow_credentials);
  if (const YAML::Node* max_age = map->find("max_age")) config->max_age = ctx.duration(*max_age);
  if (ctx.errorCount() != errors) return nullptr;

  config->allow_any_method = takeWildcard(config->allow_methods);
  config->allow_any_header = takeWildcard(config->allow_headers);
  config->allow_methods_value =
      config->allow_any_method ? "*" : joinStrings(config->allow_methods, ", ");
  config->allow_headers_value =
      config->allow_any_header ? "*" : joinStrings(config->allow_headers, ", ");
  config->expose_headers_value = joinStrings(config->expose_headers, ", ");
  if (config->max_age) config->max_age_value = std::to_string(config->max_age->count() / 1000);
  return config;
}

}  // namespace gw::cors
