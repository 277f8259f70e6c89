// Prometheus metrics (SPEC §5) without contention on the request path.
//
// Contract:
// - Every worker thread has its own MetricStore (metrics::local() on that thread); it alone
//   writes it, with relaxed atomics (plain moves on x86). A scrape sums all stores.
// - Threads that are not workers (the admin loop, background fetchers) write to the
//   process store, whose writes take a lock: use it only for rare events.
// - Label values are interned once (labelId) into small ids, so the request path never
//   hashes or copies a string. Interning takes a lock: do it at configuration load, not
//   per request. Cardinality stays bounded because label values come from configuration
//   names and small closed sets (methods, status codes, reasons), never from request data.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/admin/route_window.h"

namespace gw::metrics {

enum class Type : uint8_t { Counter, Gauge, Histogram };

enum class Id : uint8_t {
  RequestsTotal,             // route, method, code, protocol
  RequestDuration,           // route
  RequestsInFlight,          //
  UpstreamRequestsTotal,     // upstream, code
  UpstreamRequestDuration,   // upstream
  UpstreamConnectFailures,   // upstream
  UpstreamEndpointHealthy,   // upstream, endpoint
  UpstreamEndpointInFlight,  // upstream, endpoint (an extension)
  CircuitBreakerOpen,        // upstream
  RateLimited,               // route
  AuthFailures,              // route, reason
  CorsPreflights,            // route
  RequestRejected,           // route, reason
  UpstreamBadResponses,      // upstream, reason (an extension)
  ConnectionsActive,         // listener
  ConnectionsTotal,          // listener
  ConnectionsRejected,       // listener, reason (an extension)
  TlsHandshakes,             // listener
  TlsHandshakeErrors,        // listener
  ConfigReloads,             // result
  RedisErrors,               //
  TracingSpansDropped,       // reason
  TracingSpansExported,      //
  TracingExports,            // result
  BuildInfo,                 // version
  Http2ProtocolErrors,       // listener, reason
  GrpcResponses,             // route, grpc_status
  kCount
};

struct Definition {
  std::string_view name;
  std::string_view help;
  Type type;
  std::array<std::string_view, 4> labels;  // empty entries unused
};
const Definition& definition(Id id);

// Interns a label value; the same text always gives the same id. Lock; not per request.
uint16_t labelId(std::string_view value);
std::string labelText(uint16_t id);
// Pre-interned values for the request path.
uint16_t statusLabel(int status);         // "200"
uint16_t methodLabel(std::string_view m);  // "GET" (any llhttp method name)
uint16_t protocolLabel(std::string_view p);  // "HTTP/1.0", "HTTP/1.1", "HTTP/2"
uint16_t grpcStatusLabel(std::string_view s);  // "0".."16", "other", "none" (empty)

using Labels = std::array<uint16_t, 4>;

// Bucket upper bounds in seconds: 0.25 ms to 10 s, what a proxy's latencies span.
constexpr std::array<double, 16> kBuckets = {0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                             0.025,   0.05,   0.1,   0.25,   0.5,   1,
                                             2.5,     5,      7.5,   10};

struct Cell {
  std::atomic<int64_t> value{0};  // counter or gauge; histogram: count
  std::atomic<uint64_t> sum_ns{0};
  std::atomic<uint64_t> buckets[kBuckets.size()]{};
};

class MetricStore {
 public:
  explicit MetricStore(bool shared);
  ~MetricStore();
  MetricStore(const MetricStore&) = delete;
  MetricStore& operator=(const MetricStore&) = delete;

  void add(Id id, Labels labels, int64_t n = 1);
  void set(Id id, Labels labels, int64_t v);
  void observe(Id id, Labels labels, uint64_t duration_ns);

  // Calls f(id, labels, cell) for every cell. Takes the store's lock.
  // The per-route last-minute windows of /status, kept beside the counters so that they
  // live, and are found by readers, exactly as long as the worker's store.
  window::RouteWindows& windows() { return windows_; }
  const window::RouteWindows& windows() const { return windows_; }

  template <typename F>
  void forEach(F&& f) const {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& e : entries_) {
      if (e.cell) f(e.id, e.labels, *e.cell);
    }
  }

 private:
  struct Entry {
    uint64_t key = 0;  // the labels packed; with id, the series (cell null: empty slot)
    Id id{};
    Labels labels{};
    Cell* cell = nullptr;
  };
  Cell& cell(Id id, Labels labels);
  void grow();

  bool shared_;  // written by several threads: every write locks
  mutable std::mutex mutex_;  // guards the table's shape (inserts, scrapes)
  std::mutex write_mutex_;    // shared stores: one writer at a time
  std::vector<Entry> entries_;  // open addressing; size a power of two
  size_t used_ = 0;
  std::vector<std::unique_ptr<Cell[]>> chunks_;
  size_t chunk_used_ = 0;
  // The last cell found per metric: steady traffic repeats the same labels (route, method,
  // status), so most lookups end here, before the hash. Cells never move.
  struct Recent {
    uint64_t key = 0;
    Cell* cell = nullptr;
  };
  std::array<Recent, size_t(Id::kCount)> recent_{};
  window::RouteWindows windows_;
};

// The calling thread's store (a worker's own), or the process store.
MetricStore& local();
MetricStore& process();
// Makes `store` the calling thread's (workers call it at start).
void bindThread(MetricStore* store);
// Every store that a scrape must sum (workers register theirs).
void registerStore(MetricStore* store);
void unregisterStore(MetricStore* store);
// Calls f on every registered store, under the registry's lock (a store cannot go away
// during the call).
void forEachStore(const std::function<void(const MetricStore&)>& f);
// The sum over every store of one counter or gauge series.
int64_t total(Id id, Labels labels);

// Prometheus text format 0.0.4 of everything registered plus process_* metrics.
std::string renderPrometheus(std::string_view version, uint64_t start_time_ms);

}  // namespace gw::metrics
