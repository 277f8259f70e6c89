// security_headers: {mode: add_if_missing|set, headers: {NAME: VALUE|off},
// hide_headers: [...]}. SPEC §2's defaults are resolved here into the final ordered list
// the filter applies; `headers` changes, adds or (with `off`) removes single entries.
#pragma once

#include <yaml-cpp/yaml.h>

#include <memory>
#include <string>
#include <vector>

#include "gateway/config/config_context.h"
#include "gateway/filter.h"

namespace gw::security_headers {

enum class Mode {
  AddIfMissing,  // an upstream's own value wins
  Set,           // ours replaces the upstream's
};

struct HeaderSetting {
  std::string name;
  std::string value;
  // Only on responses to TLS connections (or via a trusted proxy that saw https):
  // Strict-Transport-Security over plain HTTP is ignored by browsers at best.
  bool tls_only = false;
};

struct SecurityHeadersConfig : FilterConfig {
  Mode mode = Mode::AddIfMissing;
  std::vector<HeaderSetting> headers;     // in the order they are added
  std::vector<std::string> hide_headers;  // removed from upstream responses
};

std::shared_ptr<const FilterConfig> parseSecurityHeadersConfig(const YAML::Node& node,
                                                               ConfigContext& ctx);

}  // namespace gw::security_headers
