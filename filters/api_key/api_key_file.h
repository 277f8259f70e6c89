// The api_keys keys_file format: one `NAME SHA256HEX` per line (the hex of the key's
// SHA-256, so the file holds no usable secret); blank lines and `#` comments are skipped.
// Read by the configuration loader, which keeps the entries in ApiKeySetConfig::keys.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/config/config.h"

namespace gw::api_key {

struct ApiKeyFile {
  std::vector<ApiKeyEntry> entries;
  // Every bad line: (1-based line number, what is wrong with it).
  std::vector<std::pair<int, std::string>> problems;
};

ApiKeyFile parseApiKeyFile(std::string_view text);

}  // namespace gw::api_key
