#include "gateway/upstream/endpoint_state.h"

#include <time.h>

#include <map>
#include <mutex>

#include "gateway/log.h"
#include "gateway/metrics.h"

namespace gw {

namespace {

struct Registry {
  std::mutex mutex;
  std::map<std::string, std::shared_ptr<EndpointState>> endpoints;  // "upstream endpoint"
  std::map<std::string, std::shared_ptr<UpstreamState>> upstreams;
};

Registry& registry() {
  static Registry* r = new Registry();
  return *r;
}

}  // namespace

int64_t monotonicMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

bool EndpointState::recordFailure(const CircuitBreakerConfig* cb, int64_t now_ms, bool trial) {
  uint32_t failures = consecutive_failures.fetch_add(1, std::memory_order_relaxed) + 1;
  if (!cb) return false;
  if (trial) {
    // The trial failed: open for another period, and the next trial comes after it.
    open_until_ms.store(now_ms + cb->open_for.count(), std::memory_order_release);
    trial_in_flight.store(false, std::memory_order_release);
    log::warn("circuit breaker reopened", {{"upstream", upstream}, {"endpoint", address}});
    return true;
  }
  if (failures < cb->consecutive_failures) return false;
  int64_t expected = 0;
  if (!open_until_ms.compare_exchange_strong(expected, now_ms + cb->open_for.count(),
                                             std::memory_order_acq_rel)) {
    return false;  // already open: a straggler's failure changes nothing
  }
  log::warn("circuit breaker opened", {{"upstream", upstream}, {"endpoint", address},
                                       {"consecutive_failures", std::to_string(failures)}});
  return true;
}

bool EndpointState::recordSuccess(bool trial) {
  // Read first: on the common path nothing was failing and no shared line is written.
  if (consecutive_failures.load(std::memory_order_relaxed) != 0) {
    consecutive_failures.store(0, std::memory_order_relaxed);
  }
  if (!trial) return false;
  open_until_ms.store(0, std::memory_order_release);
  trial_in_flight.store(false, std::memory_order_release);
  log::info("circuit breaker closed", {{"upstream", upstream}, {"endpoint", address}});
  return true;
}

bool EndpointState::breakerOpen(int64_t now_ms) const {
  int64_t until = open_until_ms.load(std::memory_order_acquire);
  return until != 0 && (now_ms < until || trial_in_flight.load(std::memory_order_acquire));
}

bool EndpointState::admits(int64_t now_ms, bool* trial) {
  *trial = false;
  if (!healthy.load(std::memory_order_relaxed)) return false;
  int64_t until = open_until_ms.load(std::memory_order_acquire);
  if (until == 0) return true;
  if (now_ms < until) return false;
  // Half open: the first request to claim the trial goes; the others wait for its outcome.
  bool expected = false;
  if (trial_in_flight.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) {
    *trial = true;
    return true;
  }
  return false;
}

bool EndpointState::eligible(int64_t now_ms) const {
  if (!healthy.load(std::memory_order_relaxed)) return false;
  int64_t until = open_until_ms.load(std::memory_order_acquire);
  return until == 0 || (now_ms >= until && !trial_in_flight.load(std::memory_order_acquire));
}

std::shared_ptr<UpstreamState> upstreamState(const UpstreamConfig& config) {
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  // The upstream's own state is keyed by name and its endpoint list, so a reload that
  // changes the endpoints gets a fresh vector while unchanged endpoints keep their state.
  std::string key = config.name;
  for (const auto& e : config.endpoints) key += " " + e.text;
  auto& u = reg.upstreams[key];
  if (!u) {
    u = std::make_shared<UpstreamState>();
    u->name = config.name;
    for (const auto& e : config.endpoints) {
      auto& ep = reg.endpoints[config.name + " " + e.text];
      if (!ep) {
        ep = std::make_shared<EndpointState>();
        ep->upstream = config.name;
        ep->address = e.text;
      }
      u->endpoints.push_back(ep);
    }
  }
  return u;
}

void publishBreakerGauge(const UpstreamState& upstream, uint16_t label, int64_t now_ms) {
  int64_t open = 0;
  for (const auto& e : upstream.endpoints) open += e->breakerOpen(now_ms);
  metrics::process().set(metrics::Id::CircuitBreakerOpen, {label, 0, 0}, open);
}

}  // namespace gw
