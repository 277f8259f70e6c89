// The process-wide state of upstream endpoints: health (from active checks), circuit
// breaker, and the bulkhead counters of each upstream. Shared by all workers and kept
// across configuration reloads (keyed by upstream name and endpoint address), so a reload
// neither forgets that an endpoint is down nor resets a breaker.
//
// Contract: every field is an atomic; workers read them on every request (plain loads on
// x86) and write only on events (a failure, a breaker transition, a connection opened or
// closed), never a store per successful request unless something was failing.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gateway/config/config.h"

namespace gw {

struct EndpointState {
  std::string upstream;
  std::string address;

  // Active health checks (true until a check says otherwise).
  std::atomic<bool> healthy{true};
  std::atomic<uint32_t> check_successes{0};
  std::atomic<uint32_t> check_failures{0};
  std::atomic<int64_t> last_checked_ms{0};  // wall clock; 0 = never
  std::atomic<int64_t> last_latency_us{-1};

  // Circuit breaker.
  std::atomic<uint32_t> consecutive_failures{0};
  std::atomic<int64_t> open_until_ms{0};  // monotonic ms; 0 = closed
  std::atomic<bool> trial_in_flight{false};

  // Outcome of one proxied attempt (not of a health check). `trial`: the attempt was the
  // half-open breaker's trial, whose outcome alone decides; any other attempt that ends
  // while the breaker is open started before it opened and changes nothing. Returns true
  // when the breaker opened because of it.
  bool recordFailure(const CircuitBreakerConfig* cb, int64_t now_ms, bool trial = false);
  // Returns true when it closed an open breaker.
  bool recordSuccess(bool trial = false);
  // May this endpoint take a request now? A half-open breaker admits exactly one trial;
  // `trial` tells the caller it holds it (and must report its outcome).
  bool admits(int64_t now_ms, bool* trial);
  // Would admits() say yes? (Claims nothing.)
  bool eligible(int64_t now_ms) const;
  // Gives back a trial claimed by admits() whose request never went out.
  void releaseTrial() { trial_in_flight.store(false, std::memory_order_release); }
  bool breakerOpen(int64_t now_ms) const;
};

struct UpstreamState {
  std::string name;
  std::vector<std::shared_ptr<EndpointState>> endpoints;  // same order as the config
  // Bulkhead: connections in use (all workers) and requests waiting for one.
  std::atomic<uint32_t> connections{0};
  std::atomic<uint32_t> pending{0};
};

// The registry of states, by upstream name and endpoint address.
std::shared_ptr<UpstreamState> upstreamState(const UpstreamConfig& config);
// Refreshes gateway_circuit_breaker_open for `upstream`.
void publishBreakerGauge(const UpstreamState& upstream, uint16_t label, int64_t now_ms);

int64_t monotonicMs();

}  // namespace gw
