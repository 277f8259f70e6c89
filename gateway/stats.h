// Per-worker counters. Written only by their worker (a relaxed load + store, which is a
// plain move on x86: no lock prefix, no shared cache line), read by any thread at scrape
// time and summed across workers.
#pragma once

#include <atomic>
#include <cstdint>

namespace gw {

class Counter {
 public:
  void add(uint64_t n = 1) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  uint64_t value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

class Gauge {
 public:
  void add(int64_t n) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  int64_t value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> v_{0};
};

struct WorkerStats {
  Counter connections_total;
  Gauge connections_active;
  Counter requests_total;
  Gauge requests_in_flight;
  Counter local_replies;
  Counter upstream_requests;
  Counter upstream_connect_failures;
  Counter upstream_connections_opened;
  Counter upstream_connections_reused;
};

}  // namespace gw
