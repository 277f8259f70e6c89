// What the rate limiter counts, and Redis health, for /metrics and /health.
//
// - gateway_rate_limited_total{route} and gateway_redis_errors_total are also added to the
//   worker's metrics store (gateway/metrics.h) as they happen; the totals here serve tests,
//   logs and anything that wants them without a scrape: forEachRouteCounters() →
//   RouteCounters::rate_limited, redisErrorsTotal().
// - RouteCounters::dry_run: requests a dry_run limit would have refused (not exported yet).
// - /health "redis": redisHealth(), registered as the "redis" check by the filter.
// Every accessor is thread-safe and cheap (relaxed atomic loads); counters only grow, also
// across configuration reloads (they are keyed by route name, not by snapshot).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace gw::rate_limit {

struct RouteCounters {
  explicit RouteCounters(std::string name) : route(std::move(name)) {}
  const std::string route;
  // Written only on rejections, so a shared atomic costs the admitted path nothing.
  std::atomic<uint64_t> rate_limited{0};  // answered 429
  std::atomic<uint64_t> dry_run{0};       // a dry_run limit would have answered 429
};

// The counters of `route`, created on first use and never freed (bounded by the route
// names ever configured). Takes a lock: call it at configuration load, not per request.
RouteCounters& routeCounters(std::string_view route);
void forEachRouteCounters(const std::function<void(const RouteCounters&)>& f);

// The `reason` label of gateway_redis_errors_total.
enum class RedisErrorReason : uint8_t {
  Timeout,      // no answer within `timeout`
  Connect,      // no connection to the node (down, connecting again, refused)
  Reply,        // an error reply (READONLY, OOM, a script error ...)
  BadReply,     // a reply of the wrong type or size, or a garbage redirect or slot map
  MovedStorm,   // more redirects for one check than a resharding can explain
  ClusterDown,  // no master known for the slot, or CLUSTERDOWN
  Count
};
std::string_view redisErrorReasonName(RedisErrorReason reason);

// Rate-limit checks Redis did not answer (error reply, timeout, connection down): each
// was decided by `on_error`.
uint64_t redisErrorsTotal();
void countRedisError(RedisErrorReason reason);
// Every reason's series at zero, so that alerts on its rate have a start (type: redis).
void declareRedisErrorSeries();

enum class RedisLinkState : uint8_t { Unused = 0, Up, Connecting, Down };

// Each worker publishes the state of its Redis connection here.
void setRedisLinkState(uint32_t worker_index, RedisLinkState state);

// Each worker publishes the state of its connection to each Redis node it uses (on a
// change, not per request); Unused forgets it. role: "master", "seed" (a cluster node asked
// for the slot map only) or "sentinel".
void setRedisNodeState(uint32_t worker_index, std::string_view address, std::string_view role,
                       RedisLinkState state);

struct RedisNodeHealth {
  std::string address;
  std::string role;
  uint32_t workers = 0;  // workers connected or connecting to it
  uint32_t up = 0;       // of which answering
  // "up" when every such worker's connection answers, "degraded" when some do, "down"
  // when none does.
  std::string_view status() const;
};
std::vector<RedisNodeHealth> redisNodes();

struct RedisHealth {
  bool used = false;      // some worker has a Redis connection (type: redis is in use)
  uint32_t workers = 0;   // workers with a connection
  uint32_t up = 0;        // of which answering
  // "up" when every worker's connection answers, "degraded" when some do, "down" when
  // none does (requests are then decided by on_error).
  std::string_view status() const;
};
RedisHealth redisHealth();

// Lets one message through per interval across all threads, and counts the others, so a
// failing Redis or a flood of dry-run hits cannot flood the log.
class LogThrottle {
 public:
  explicit LogThrottle(int64_t interval_ns) : interval_ns_(interval_ns) {}
  // True when this message should be written; *suppressed is how many were skipped since.
  bool allow(int64_t now_ns, uint64_t* suppressed);

 private:
  const int64_t interval_ns_;
  std::atomic<int64_t> next_ns_{0};
  std::atomic<uint64_t> suppressed_{0};
};

}  // namespace gw::rate_limit
