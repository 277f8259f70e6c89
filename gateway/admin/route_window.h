// Per-route rates, errors and latencies over the last minute, for /status (SPEC §11).
//
// Contract:
// - Each MetricStore (one per worker) owns a RouteWindows; only that worker records into
//   it, with relaxed atomics. The first request of a route on a worker allocates that
//   route's ring once; every later one allocates nothing and takes no lock.
// - Any thread (the admin loop) may read with sumInto() while the worker writes: a second
//   that the worker recycles during the read is skipped, so a total may miss one second's
//   counts, never mix two seconds.
// - Routes are keyed by their metrics label id (RouteConfig::metrics_label), which stays
//   the same across reloads for the same name, so a reload keeps a route's history.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace gw::window {

constexpr uint32_t kWindowSeconds = 60;
// A power of two above the window, so the slot of a second is a mask, and the second
// being written never aliases one that a reader still counts.
constexpr size_t kRingSeconds = 64;
// Latency buckets at half-octave steps from 1 µs (1, 1.5, 2, 3, 4, 6, … µs): p50 and p99
// within ±25% from microseconds to tens of seconds, in a fixed array.
constexpr size_t kLatencyBuckets = 52;

size_t latencyBucket(uint64_t duration_ns);
double bucketLowerMs(size_t bucket);
double bucketUpperMs(size_t bucket);

struct Second {
  std::atomic<uint32_t> epoch{0};  // the monotonic second it counts, plus one; 0 = never used
  std::atomic<uint32_t> requests{0};
  std::atomic<uint32_t> errors{0};
  std::atomic<uint32_t> rate_limited{0};
  std::array<std::atomic<uint32_t>, kLatencyBuckets> latency{};
};

struct Ring {
  std::array<Second, kRingSeconds> seconds;
};

// Sums over seconds and workers.
struct Totals {
  uint64_t requests = 0;
  uint64_t errors = 0;
  uint64_t rate_limited = 0;
  std::array<uint64_t, kLatencyBuckets> latency{};

  // The q-quantile (0..1) of the latencies, interpolated inside its bucket; 0 with no data.
  double quantileMs(double q) const;
};

// What a finished request adds to its route's window.
struct Outcome {
  uint64_t duration_ns = 0;
  bool error = false;         // 5xx, or refused by the gateway itself
  bool rate_limited = false;  // refused by a rate limit
};

class RouteWindows {
 public:
  RouteWindows() = default;
  ~RouteWindows();
  RouteWindows(const RouteWindows&) = delete;
  RouteWindows& operator=(const RouteWindows&) = delete;

  // The owning worker only.
  void record(uint16_t route, uint64_t now_ns, const Outcome& outcome);
  // Adds the seconds in (now - kWindowSeconds, now] of `route` to `out`. Any thread.
  void sumInto(uint16_t route, uint64_t now_ns, Totals& out) const;

 private:
  static constexpr size_t kPageSize = 256;
  struct Page {
    std::array<std::atomic<Ring*>, kPageSize> rings{};
  };
  Ring& ring(uint16_t route);

  // Two levels over the 65536 label ids: a configuration's few routes touch a few pages.
  std::array<std::atomic<Page*>, 65536 / kPageSize> pages_{};
};

}  // namespace gw::window
