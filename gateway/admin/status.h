// GET /status on the admin listener (SPEC §11): the operator's view in one JSON document,
// which the status page (status_page.h) polls.
//
// Contract: built on the admin thread from the configuration snapshot in force, the
// process-wide endpoint states, the health checks and every worker's last-minute route
// windows (route_window.h); it reads atomics only and never blocks a worker.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "gateway/config/config.h"

namespace gw {

struct ReloadRecord {
  uint64_t at_ms = 0;  // wall clock; 0: no reload since the start
  bool ok = false;
};

struct StatusInput {
  const Config* config = nullptr;
  uint64_t now_ms = 0;       // wall clock
  uint64_t start_ms = 0;     // when the process started
  uint64_t loaded_at_ms = 0;  // when the configuration in force was loaded
  ReloadRecord last_reload;
  uint64_t now_ns = 0;  // monotonic, the route windows' clock
};

nlohmann::json statusJson(const StatusInput& in);

}  // namespace gw
