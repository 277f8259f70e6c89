// Loads and validates the gateway's YAML configuration (SPEC §2) into an immutable Config.
//
// Contract:
// - Never throws. Every problem found is returned as a ConfigError pointing at the
//   offending position (FILE:LINE:COL, 1-based; LINE 0 for the file as a whole), sorted by
//   position; the loader goes on after an error wherever it can, so one run lists them all.
// - `config` is set only when there is no error. Everything it names was checked: files
//   exist and parse (certificates, keys, JWKS, key lists), addresses resolve, references
//   between sections hold, filter chains are built.
// - Relative file paths are relative to the working directory.
// - Blocking (reads files, resolves names): call it off the event loops.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "gateway/config/config.h"
#include "gateway/config/config_context.h"  // ConfigError

namespace gw {

struct LoadResult {
  std::shared_ptr<const Config> config;  // null unless ok()
  std::vector<ConfigError> errors;

  bool ok() const { return config != nullptr && errors.empty(); }
};

LoadResult loadConfigFile(const std::string& path);
// `gateway --check`: configurations are loaded to be validated only, so filters must not
// start background work (fetching a jwks_uri, connecting to Redis) when they are built.
void setValidationOnly(bool on);
bool validationOnly();
// `display_name` is the FILE of error messages and Config::source_file.
LoadResult loadConfigString(const std::string& yaml_text, const std::string& display_name);

}  // namespace gw
