// The `tracing` section (SPEC §10). Absent: Config::tracing is null and the gateway
// neither reads nor writes trace context (traceparent and tracestate pass untouched).
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gateway/config/config.h"
#include "gateway/tracing/sampler.h"

namespace gw {
class ConfigContext;
}

namespace gw::tracing {

// Defaults are reference.yaml's.
struct TracingConfig {
  std::string service_name = "gateway";
  double ratio = 0.01;       // sampler.ratio, in [0, 1]
  bool parent_based = true;  // a caller's sampled flag decides when it sent one
  std::string endpoint = "http://127.0.0.1:4318/v1/traces";
  Millis timeout{2000};  // one export request, connect to last response byte
  std::vector<std::pair<std::string, std::string>> headers;  // sent with every export
  uint32_t max_spans = 512;                                  // per export request
  Millis max_delay{2000};                // the longest a span waits for a batch to fill
  uint32_t queue = 8192;                 // spans waiting for export; beyond, new ones are dropped
  Sampler sampler{ratio, parent_based};  // built from the two above by parseTracing
};

// Reports problems through `ctx` at the offending node; returns what it could parse.
std::shared_ptr<const TracingConfig> parseTracing(const YAML::Node& node, ConfigContext& ctx);

}  // namespace gw::tracing
