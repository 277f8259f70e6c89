// What /health and /health/ready report beyond the process itself: each subsystem
// (upstream health checks, Redis, JWKS providers) registers a named check that the admin
// endpoint asks on every probe.
//
// Contract: checks run on the admin thread and MUST be cheap and thread-safe (read
// atomics or a snapshot). Register and unregister from any thread.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace gw::health {

enum class Status { Healthy, Degraded, Unhealthy };

std::string_view statusName(Status s);  // "healthy", "degraded", "unhealthy"

struct Check {
  Status status = Status::Healthy;
  // Readiness: a check that is not ready turns /health/ready to 503 (a JWT provider
  // that never loaded its keys; an upstream with no healthy endpoint).
  bool ready = true;
  nlohmann::json detail = nlohmann::json::object();  // merged into the check's entry
};

// `key` as it appears in /health's "checks": "upstream:api", "redis", "jwks:main".
void setCheck(const std::string& key, std::function<Check()> check);
void removeCheck(const std::string& key);
// Removes every check whose key starts with `prefix` (a subsystem reconfigured).
void removeChecks(std::string_view prefix);

struct Report {
  Status status = Status::Healthy;
  bool ready = true;
  nlohmann::json checks = nlohmann::json::object();
};
Report collect();

}  // namespace gw::health
