// rate_limit (SPEC §2, filters 5 and 7): token buckets per (route or `shared` name, limit,
// key value), in process (bucket_table.h) or in Redis (redis_limiter.h).
//
// One route's limits run at two chain positions: those keyed by client_ip, route or
// header:NAME before authentication (RateLimitBeforeAuth), those keyed by claim:NAME or
// api_key after it (RateLimitAfterAuth). Both filter objects share one RouteLimits. The
// limits of one position are decided together: a request is admitted only if every limit
// that is not dry_run has a token, and a refused request takes no token from any of them.
//
// Per-request state: the per-limit results live in the request's arena (pointed to by the
// RateLimitBeforeAuth scratch slot, whichever position made them) so that one response
// phase can write the RateLimit headers of the tightest limit of both positions; a Redis
// check in flight is in the position's own scratch slot (for onAbandon).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "filters/rate_limit/rate_limit_config.h"
#include "filters/rate_limit/rate_limit_stats.h"
#include "filters/rate_limit/redis_limiter.h"
#include "filters/rate_limit/token_bucket.h"
#include "gateway/filter.h"

namespace gw::rate_limit {

// One limit as it runs: the parsed Limit plus what the stores and headers need, computed
// once per configuration load.
struct LimitRuntime {
  const Limit* limit = nullptr;
  uint64_t seed = 0;        // memory store: seeds the key hash, so it names the bucket family
  uint64_t local_seed = 0;  // on_error: local buckets
  Rate rate;                // nanoseconds
  Rate local_rate;          // nanoseconds, at 1/replicas of the rate and burst
  std::string redis_prefix;    // key_prefix "rl:" family ":" rate ":" (the key value follows)
  std::string redis_interval;  // script arguments, microseconds
  std::string redis_window;
  std::string policy_name;  // a quoted structured-field string: "client_ip-1m"
};

// The result of one limit for the request in flight.
struct LimitStatus {
  bool known = false;  // evaluated (the position ran and got an answer)
  bool conforms = true;
  uint32_t remaining = 0;
  uint32_t reset_s = 0;  // until the bucket is full again
  uint32_t retry_s = 0;  // until the next token, when !conforms
};

class RouteLimits {
 public:
  RouteLimits(std::shared_ptr<const RateLimitConfig> config, const RouteConfig& route,
              const Config& whole);

  const RateLimitConfig& config() const { return *config_; }
  size_t size() const { return limits_.size(); }
  const LimitRuntime& limit(size_t i) const { return limits_[i]; }
  const std::string& routeName() const { return route_name_; }
  RouteCounters& counters() const { return *counters_; }
  // Null for the memory store.
  const std::shared_ptr<const RedisSettings>& redis() const { return redis_; }
  // The position whose response phase writes the headers: the first one present.
  FilterOrder headerWriter() const { return header_writer_; }

  // RateLimit-Limit/-Remaining/-Reset of the tightest limit, RateLimit-Policy, RateLimit,
  // and Retry-After when a limit refused the request.
  void writeHeaders(const LimitStatus* statuses, HeaderList& headers, StringArena& arena) const;
  void reportDryRun(const RequestContext& ctx, const LimitRuntime& limit) const;

 private:
  std::shared_ptr<const RateLimitConfig> config_;
  std::vector<LimitRuntime> limits_;
  std::string route_name_;
  RouteCounters* counters_;
  std::shared_ptr<const RedisSettings> redis_;
  FilterOrder header_writer_;
  std::string policy_header_;
  mutable LogThrottle dry_run_log_{1'000'000'000};
};

class RateLimitFilter final : public Filter, public RedisCheckOwner {
 public:
  RateLimitFilter(std::shared_ptr<const RouteLimits> limits, FilterOrder order);
  FilterOrder order() const override { return order_; }
  std::string_view name() const override { return "rate_limit"; }
  FilterStatus onRequestHeaders(RequestContext& ctx, HeaderList& headers) const override;
  void onResponseHeaders(RequestContext& ctx, ResponseHead& response) const override;
  void onAbandon(RequestContext& ctx) const override;
  void onRedisDone(RequestContext& ctx, const RedisCheck& check,
                   const RedisAnswer& answer) const override;

 private:
  enum class Verdict { Admit, Reject, Unavailable };

  FilterStatus checkRedis(RequestContext& ctx, const HeaderList& headers,
                          LimitStatus* statuses) const;
  // Decides in process: the memory store, or on_error: local (then `values` are the Redis
  // keys and the buckets are the local ones).
  Verdict decideInProcess(const RequestContext& ctx, const std::string_view* values,
                          LimitStatus* statuses, bool local) const;
  Verdict decideRedisAnswer(RequestContext& ctx, const RedisCheck& check,
                            const RedisAnswer& answer, LimitStatus* statuses) const;
  Verdict redisUnavailable(const RequestContext& ctx, const RedisCheck& check,
                           LimitStatus* statuses) const;
  // Counts and answers: the request phase's status, or (async) the resumption.
  FilterStatus finish(RequestContext& ctx, Verdict v) const;
  void resume(RequestContext& ctx, Verdict v) const;

  std::shared_ptr<const RouteLimits> limits_;
  FilterOrder order_;
  std::vector<uint32_t> mine_;  // indices of the limits at this position
  std::string numkeys_;         // "N" for EVALSHA
};

// The registry's build: one or two filter objects for the route (none for the default
// chain, which only answers requests that matched no route).
void buildRateLimit(const std::shared_ptr<const FilterConfig>& config, const RouteConfig* route,
                    const Config& whole, std::vector<std::shared_ptr<const Filter>>& chain);

// The monotonic clock the memory store and the deny cache read (nanoseconds). Tests set a
// simulated one; null restores the real clock.
using Clock = int64_t (*)();
void setClockForTesting(Clock clock);

}  // namespace gw::rate_limit
