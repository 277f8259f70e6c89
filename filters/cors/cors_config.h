// cors: {allow_origins, allow_methods, allow_headers, expose_headers, allow_credentials,
// max_age}. Origins are exact (`https://app.example.com`), `*`, or RE2 patterns written
// `~<pattern>` and matched against the whole Origin. The header values the filter sends
// are precomputed here, once per configuration. Browsers take `*` in the allow lists
// literally on credentialed requests, so with allow_credentials the filter should echo
// the preflight's requested method and headers instead of sending "*".
#pragma once

#include <yaml-cpp/yaml.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/config/config.h"
#include "gateway/config/config_context.h"
#include "gateway/filter.h"

namespace gw::cors {

struct CorsConfig : FilterConfig {
  bool allow_any_origin = false;                                 // `*` was listed
  std::vector<std::string> exact_origins;                        // lower-case scheme and host
  std::vector<std::shared_ptr<const re2::RE2>> origin_patterns;  // full match
  std::vector<std::string> allow_methods;                        // upper case
  bool allow_any_method = false;                                 // `*` was listed
  std::vector<std::string> allow_headers;                        // lower case
  bool allow_any_header = false;                                 // `*` was listed
  std::vector<std::string> expose_headers;
  bool allow_credentials = false;
  std::optional<Millis> max_age;

  // Ready-made values of the Access-Control-* response headers ("" = do not send).
  std::string allow_methods_value;   // "GET, POST"
  std::string allow_headers_value;   // "authorization, content-type"
  std::string expose_headers_value;  // "X-Request-ID"
  std::string max_age_value;         // seconds, "600"

  bool originAllowed(std::string_view origin) const;
  bool methodAllowed(std::string_view method) const;
  // `name` in any case.
  bool headerAllowed(std::string_view name) const;
};

std::shared_ptr<const FilterConfig> parseCorsConfig(const YAML::Node& node, ConfigContext& ctx);

}  // namespace gw::cors
