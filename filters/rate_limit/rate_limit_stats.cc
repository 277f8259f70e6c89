#include "filters/rate_limit/rate_limit_stats.h"

#include <array>
#include <map>
#include <memory>
#include <mutex>

#include "gateway/metrics.h"

namespace gw::rate_limit {

namespace {

constexpr uint32_t kMaxWorkers = 1024;  // config allows 1 to 1024 workers

struct Registry {
  std::mutex mutex;
  std::map<std::string, std::unique_ptr<RouteCounters>, std::less<>> routes;
};

Registry& registry() {
  static Registry r;
  return r;
}

struct NodeRegistry {
  std::mutex mutex;
  // address + role -> worker -> state
  std::map<std::pair<std::string, std::string>, std::map<uint32_t, RedisLinkState>> nodes;
};

NodeRegistry& nodeRegistry() {
  static NodeRegistry r;
  return r;
}

std::string_view upDegradedDown(uint32_t up, uint32_t of) {
  if (up == 0) return "down";
  return up < of ? "degraded" : "up";
}

std::atomic<uint64_t> g_redis_errors{0};
std::atomic<uint8_t> g_link_states[kMaxWorkers];

}  // namespace

RouteCounters& routeCounters(std::string_view route) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  auto it = r.routes.find(route);
  if (it == r.routes.end()) {
    it = r.routes.emplace(std::string(route), std::make_unique<RouteCounters>(std::string(route)))
             .first;
  }
  return *it->second;
}

void forEachRouteCounters(const std::function<void(const RouteCounters&)>& f) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  for (const auto& [name, counters] : r.routes) f(*counters);
}

uint64_t redisErrorsTotal() { return g_redis_errors.load(std::memory_order_relaxed); }

std::string_view redisErrorReasonName(RedisErrorReason reason) {
  switch (reason) {
    case RedisErrorReason::Timeout: return "timeout";
    case RedisErrorReason::Connect: return "connect";
    case RedisErrorReason::Reply: return "error_reply";
    case RedisErrorReason::BadReply: return "bad_reply";
    case RedisErrorReason::MovedStorm: return "moved_storm";
    case RedisErrorReason::ClusterDown: return "cluster_down";
    case RedisErrorReason::Count: break;
  }
  return "error_reply";
}

namespace {
uint16_t reasonLabel(RedisErrorReason reason) {
  static const auto ids = [] {
    std::array<uint16_t, size_t(RedisErrorReason::Count)> out{};
    for (size_t i = 0; i < out.size(); ++i) {
      out[i] = metrics::labelId(redisErrorReasonName(RedisErrorReason(i)));
    }
    return out;
  }();
  return ids[size_t(reason) < ids.size() ? size_t(reason) : size_t(RedisErrorReason::Reply)];
}
}  // namespace

void countRedisError(RedisErrorReason reason) {
  g_redis_errors.fetch_add(1, std::memory_order_relaxed);
  metrics::local().add(metrics::Id::RedisErrors, {reasonLabel(reason), 0, 0});
}

void declareRedisErrorSeries() {
  for (size_t i = 0; i < size_t(RedisErrorReason::Count); ++i) {
    metrics::process().add(metrics::Id::RedisErrors, {reasonLabel(RedisErrorReason(i)), 0, 0}, 0);
  }
}

void setRedisNodeState(uint32_t worker_index, std::string_view address, std::string_view role,
                       RedisLinkState state) {
  NodeRegistry& r = nodeRegistry();
  std::lock_guard<std::mutex> lock(r.mutex);
  auto key = std::make_pair(std::string(address), std::string(role));
  if (state != RedisLinkState::Unused) {
    r.nodes[key][worker_index] = state;
    return;
  }
  auto it = r.nodes.find(key);
  if (it == r.nodes.end()) return;
  it->second.erase(worker_index);
  if (it->second.empty()) r.nodes.erase(it);
}

std::string_view RedisNodeHealth::status() const { return upDegradedDown(up, workers); }

std::vector<RedisNodeHealth> redisNodes() {
  NodeRegistry& r = nodeRegistry();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<RedisNodeHealth> out;
  for (const auto& [key, workers] : r.nodes) {
    RedisNodeHealth& n = out.emplace_back();
    n.address = key.first;
    n.role = key.second;
    for (const auto& [worker, state] : workers) {
      ++n.workers;
      if (state == RedisLinkState::Up) ++n.up;
    }
  }
  return out;
}

void setRedisLinkState(uint32_t worker_index, RedisLinkState state) {
  if (worker_index < kMaxWorkers) {
    g_link_states[worker_index].store(uint8_t(state), std::memory_order_relaxed);
  }
}

std::string_view RedisHealth::status() const {
  return used ? upDegradedDown(up, workers) : "unused";
}

RedisHealth redisHealth() {
  RedisHealth h;
  for (const auto& s : g_link_states) {
    auto state = RedisLinkState(s.load(std::memory_order_relaxed));
    if (state == RedisLinkState::Unused) continue;
    h.used = true;
    ++h.workers;
    if (state == RedisLinkState::Up) ++h.up;
  }
  return h;
}

bool LogThrottle::allow(int64_t now_ns, uint64_t* suppressed) {
  int64_t next = next_ns_.load(std::memory_order_relaxed);
  if (now_ns < next ||
      !next_ns_.compare_exchange_strong(next, now_ns + interval_ns_, std::memory_order_relaxed)) {
    suppressed_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  *suppressed = suppressed_.exchange(0, std::memory_order_relaxed);
  return true;
}

}  // namespace gw::rate_limit
