// The in-process rate limiter (filters/rate_limit): the bucket table alone, and the whole
// filter (request phase + RateLimit response fields) for a client_ip limit that never
// refuses, at 1 and 2 threads (the workers of this 2-core machine), with the table empty
// and with it full of a million sprayed addresses. allocs/req counts heap allocations per
// request on the filter path (it must be 0 once warm).
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <yaml-cpp/yaml.h>

#include <atomic>
#include <mutex>
#include <cstdlib>
#include <new>
#include <random>
#include <vector>

#include "filters/rate_limit/bucket_table.h"
#include "filters/rate_limit/key_hash.h"
#include "filters/rate_limit/rate_limit_config.h"
#include "filters/rate_limit/rate_limit_filter.h"
#include "gateway/config/config.h"
#include "gateway/config/config_context.h"

// Counts heap allocations of the calling thread (for allocs/req). glibc's own entry points,
// so that the compiler does not pair them with new/delete as it does malloc/free.
extern "C" void* __libc_malloc(size_t);
extern "C" void __libc_free(void*);
namespace {
thread_local uint64_t t_allocs = 0;
}

void* operator new(size_t n) {
  ++t_allocs;
  if (void* p = __libc_malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { __libc_free(p); }
void operator delete(void* p, size_t) noexcept { __libc_free(p); }

namespace gw::rate_limit {
namespace {

constexpr int64_t kSecond = 1'000'000'000;

int64_t now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * kSecond + ts.tv_nsec;
}

// Never refuses: a million per second per key.
const Rate kGenerous = makeRate(1'000'000, uint64_t(kSecond), 1'000'000);

void BM_TableHotKey(benchmark::State& state) {
  static BucketTable table(1 << 16);
  for (auto _ : state) benchmark::DoNotOptimize(table.take(42, kGenerous, now()));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_TableHotKey)->Threads(1)->Threads(2)->UseRealTime();

void BM_TableManyClients(benchmark::State& state) {
  static BucketTable table;
  std::mt19937_64 rng(state.thread_index());
  std::vector<uint64_t> keys(65536);
  for (auto& k : keys) k = rng();
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(table.take(keys[i++ & 65535], kGenerous, now()));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_TableManyClients)->Threads(1)->Threads(2)->UseRealTime();

// An attack: every request a new address, the table at its bound (CLOCK eviction).
void BM_TableSprayAtBound(benchmark::State& state) {
  static BucketTable table;
  std::mt19937_64 rng(1000 + state.thread_index());
  Rate rate = makeRate(10, 60 * uint64_t(kSecond), 10);
  if (state.thread_index() == 0) {
    for (size_t i = 0; i < 1'000'000; ++i) table.take(rng(), rate, now());
  }
  for (auto _ : state) benchmark::DoNotOptimize(table.take(rng(), rate, now()));
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {
    state.counters["buckets"] = double(table.size());
    state.counters["MiB"] = double(table.allocatedBytes()) / (1 << 20);
  }
}
BENCHMARK(BM_TableSprayAtBound)->Threads(1)->Threads(2)->UseRealTime();

// --- the whole filter ------------------------------------------------------------------

class NullDriver final : public RequestDriver {
 public:
  void sendLocalReply(int, std::string_view, std::string_view) override { ++replies; }
  void sendResponse(int, std::string_view, std::string_view) override {}
  void continueRequest() override {}
  std::string_view generateRequestId() override { return "id"; }
  uint64_t replies = 0;
};

struct FilterRoute {
  FilterRoute() {
    ConfigContext ctx("bench.yaml");
    auto parsed = parseRateLimitConfig(
        YAML::Load("limits: [{key: client_ip, requests: 1000000, per: 1s}]"), ctx);
    route.name = "bench";
    buildRateLimit(parsed, &route, whole, chain);
  }
  Config whole;
  RouteConfig route;
  std::vector<std::shared_ptr<const Filter>> chain;
};

// One request as the core runs it: request phase, response phase, arena reset.
void runFilter(benchmark::State& state) {
  static FilterRoute r;
  const Filter& filter = *r.chain[0];
  StringArena arena;
  NullDriver driver;
  HeaderList headers(&arena);
  ResponseHead response;
  response.headers.setArena(&arena);
  RequestContext ctx;
  // 256 clients per thread, like a busy API.
  uint32_t client = 0;
  uint64_t allocs = 0, requests = 0;
  for (auto _ : state) {
    arena.reset();
    response.headers.clear();
    ctx = RequestContext();
    ctx.arena = &arena;
    ctx.driver = &driver;
    ctx.route = &r.route;
    ctx.config = &r.whole;
    ctx.client_ip16[10] = ctx.client_ip16[11] = 0xff;
    ctx.client_ip16[12] = 10;
    ctx.client_ip16[13] = uint8_t(state.thread_index());
    ctx.client_ip16[15] = uint8_t(client++);
    uint64_t before = t_allocs;
    filter.onRequestHeaders(ctx, headers);
    filter.onResponseHeaders(ctx, response);
    if (requests++ > 1000) allocs += t_allocs - before;  // once warm
    benchmark::DoNotOptimize(response.headers.size());
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["allocs/req"] =
      benchmark::Counter(double(allocs) / double(requests), benchmark::Counter::kAvgThreads);
  state.counters["refused"] = double(driver.replies);
}

void BM_FilterClientIp(benchmark::State& state) { runFilter(state); }
BENCHMARK(BM_FilterClientIp)->Threads(1)->Threads(2)->UseRealTime();

// The same legitimate traffic with the process table full of a million sprayed addresses
// (run after BM_FilterClientIp: the table is the process's and stays full).
void BM_FilterClientIpUnderSpray(benchmark::State& state) {
  static std::once_flag once;
  std::call_once(once, [] {
    std::mt19937_64 rng(7);
    Rate rate = makeRate(10, 60 * uint64_t(kSecond), 10);
    for (size_t i = 0; i < 1'000'000; ++i) BucketTable::process().take(rng(), rate, now());
  });
  runFilter(state);
  if (state.thread_index() == 0) state.counters["buckets"] = double(BucketTable::process().size());
}
BENCHMARK(BM_FilterClientIpUnderSpray)->Threads(1)->Threads(2)->UseRealTime();

void BM_KeyHash(benchmark::State& state) {
  uint8_t ip[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1};
  for (auto _ : state) {
    ++ip[15];
    benchmark::DoNotOptimize(hashBytes(ip, 16, 12345));
  }
}
BENCHMARK(BM_KeyHash);

}  // namespace
}  // namespace gw::rate_limit
