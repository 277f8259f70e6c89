#include "gateway/admin/health.h"

#include <map>
#include <mutex>

namespace gw::health {

namespace {

struct Registry {
  std::mutex mutex;
  std::map<std::string, std::function<Check()>, std::less<>> checks;
};

Registry& registry() {
  static Registry* r = new Registry();  // used until exit by every thread
  return *r;
}

}  // namespace

std::string_view statusName(Status s) {
  switch (s) {
    case Status::Healthy: return "healthy";
    case Status::Degraded: return "degraded";
    case Status::Unhealthy: return "unhealthy";
  }
  return "unhealthy";
}

void setCheck(const std::string& key, std::function<Check()> check) {
  std::lock_guard<std::mutex> lock(registry().mutex);
  registry().checks[key] = std::move(check);
}

void removeCheck(const std::string& key) {
  std::lock_guard<std::mutex> lock(registry().mutex);
  registry().checks.erase(key);
}

void removeChecks(std::string_view prefix) {
  std::lock_guard<std::mutex> lock(registry().mutex);
  auto& c = registry().checks;
  for (auto it = c.lower_bound(prefix); it != c.end() && it->first.compare(0, prefix.size(), prefix) == 0;) {
    it = c.erase(it);
  }
}

Report collect() {
  std::map<std::string, std::function<Check()>, std::less<>> copy;
  {
    std::lock_guard<std::mutex> lock(registry().mutex);
    copy = registry().checks;
  }
  Report report;
  for (const auto& [key, fn] : copy) {
    Check c = fn();
    nlohmann::json entry = c.detail.is_object() ? c.detail : nlohmann::json::object();
    entry["status"] = statusName(c.status);
    report.checks[key] = std::move(entry);
    report.ready &= c.ready;
    if (c.status == Status::Unhealthy) report.status = Status::Unhealthy;
    else if (c.status == Status::Degraded && report.status == Status::Healthy) report.status = Status::Degraded;
  }
  return report;
}

}  // namespace gw::health
