#include "filters/auth/auth_failures.h"

#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>


namespace gw::auth {
namespace {

constexpr std::array<std::string_view, kReasonCount> kReasonNames = {
    "missing",       "malformed",          "bad_signature",    "expired",
    "not_yet_valid", "wrong_issuer",       "wrong_audience",   "unknown_kid",
    "alg_not_allowed", "insufficient_scope", "keys_unavailable", "unknown_key",
};

// Workers map onto shards by index; more workers than shards share one (the increment is
// an atomic add, so sharing stays correct, merely slower).
constexpr size_t kShards = 16;

struct alignas(64) Shard {
  std::array<std::atomic<uint64_t>, kReasonCount> counts{};
};

}  // namespace

struct RouteCounters {
  std::array<Shard, kShards> shards;
};

namespace {

// Process-wide and never shrinking: one entry per route name ever configured.
struct Registry {
  std::mutex mutex;
  std::map<std::string, std::unique_ptr<RouteCounters>, std::less<>> routes;

  RouteCounters* find(std::string_view route) {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = routes.find(route);
    if (it == routes.end()) {
      it = routes.emplace(std::string(route), std::make_unique<RouteCounters>()).first;
    }
    return it->second.get();
  }
};

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: workers may count during exit
  return *r;
}

void appendLabelValue(std::string& out, std::string_view value) {
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

}  // namespace

std::string_view reasonName(Reason reason) {
  size_t i = static_cast<size_t>(reason);
  return i < kReasonCount ? kReasonNames[i] : std::string_view("unknown");
}

AuthFailureCounter::AuthFailureCounter(std::string_view route)
    : counters_(registry().find(route)) {}

void AuthFailureCounter::count(const RequestContext& ctx, Reason reason) const {
  size_t index = static_cast<size_t>(reason);
  if (index >= kReasonCount) return;
  uint32_t worker = ctx.worker ? ctx.worker->workerIndex() : 0;
  counters_->shards[worker % kShards].counts[index].fetch_add(1, std::memory_order_relaxed);
}

std::vector<AuthFailureCount> authFailureCounts() {
  std::vector<AuthFailureCount> out;
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  for (const auto& [route, counters] : r.routes) {
    for (size_t i = 0; i < kReasonCount; ++i) {
      uint64_t sum = 0;
      for (const Shard& shard : counters->shards) {
        sum += shard.counts[i].load(std::memory_order_relaxed);
      }
      if (sum != 0) out.push_back({route, static_cast<Reason>(i), sum});
    }
  }
  return out;
}

void appendAuthFailureMetrics(std::string& out) {
  std::vector<AuthFailureCount> counts = authFailureCounts();
  if (counts.empty()) return;
  out +=
      "# HELP gateway_auth_failures_total Requests refused by authentication or "
      "authorisation.\n"
      "# TYPE gateway_auth_failures_total counter\n";
  for (const auto& c : counts) {
    out += "gateway_auth_failures_total{route=\"";
    appendLabelValue(out, c.route);
    out += "\",reason=\"";
    out += reasonName(c.reason);
    out += "\"} ";
    out += std::to_string(c.value);
    out += '\n';
  }
}

}  // namespace gw::auth
