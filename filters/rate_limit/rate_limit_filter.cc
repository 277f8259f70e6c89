#include "filters/rate_limit/rate_limit_filter.h"

#include <openssl/evp.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <ctime>
#include <new>

#include "filters/rate_limit/arena_array.h"
#include "filters/rate_limit/bucket_table.h"
#include "filters/rate_limit/key_hash.h"
#include "gateway/config/config.h"
#include "gateway/admin/health.h"
#include "gateway/log.h"
#include "gateway/metrics.h"

namespace gw::rate_limit {

namespace {

int64_t monotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

Clock g_clock = monotonicNs;

constexpr int64_t kNsPerSecond = 1'000'000'000;
// Longer header values are replaced by a digest in Redis keys, so a client cannot make the
// gateway store kilobytes per key in Redis.
constexpr size_t kMaxRedisKeyValue = 128;

uint64_t saturatingMul(uint64_t a, uint64_t b) {
  uint64_t r;
  return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}

uint32_t ceilDiv32(int64_t value, int64_t unit) {
  if (value <= 0) return 0;
  return uint32_t(std::min<int64_t>((value + unit - 1) / unit, UINT32_MAX));
}

std::string_view arenaNumber(StringArena& arena, uint64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return arena.copy(std::string_view(buf, size_t(r.ptr - buf)));
}

// Shared by both positions; whichever runs first makes it.
LimitStatus* statusesOf(RequestContext& ctx, size_t n, bool create) {
  FilterScratch& s = ctx.scratchFor(FilterOrder::RateLimitBeforeAuth);
  if (!s.text.empty() || !create) {
    return reinterpret_cast<LimitStatus*>(const_cast<char*>(s.text.data()));
  }
  LimitStatus* st = arenaArray<LimitStatus>(*ctx.arena, n);
  s.text = std::string_view(reinterpret_cast<const char*>(st), n * sizeof(LimitStatus));
  return st;
}

void setStatus(LimitStatus& s, bool conforms, int64_t remaining, int64_t reset, int64_t retry,
               int64_t unit) {
  s.known = true;
  s.conforms = conforms;
  s.remaining = uint32_t(std::clamp<int64_t>(remaining, 0, UINT32_MAX));
  s.reset_s = ceilDiv32(reset, unit);
  s.retry_s = conforms ? 0 : std::max<uint32_t>(1, ceilDiv32(retry, unit));
}

std::string_view missingToDash(std::string_view v) { return v.empty() ? "-" : v; }

// The value that tells one limit's buckets apart. For the memory store the client address
// is its 16 bytes (two spellings of one IPv6 address are one bucket); for Redis, text that
// every replica spells the same way.
std::string_view keyValue(const Limit& limit, const RequestContext& ctx, const HeaderList& headers,
                          bool binary, char (&buf)[kIpTextMax]) {
  switch (limit.key_type) {
    case KeyType::ClientIp: {
      if (binary) return {reinterpret_cast<const char*>(ctx.client_ip16), 16};
      size_t n = formatIp16(ctx.client_ip16, buf);
      return n ? std::string_view(buf, n) : missingToDash(ctx.client_ip);
    }
    case KeyType::Route:
      return {};
    case KeyType::Header:
      return missingToDash(headers.get(limit.key_name));
    case KeyType::Claim:
      return missingToDash(ctx.identity ? ctx.identity->claim(limit.key_name) : std::string_view());
    case KeyType::ApiKey:
      return missingToDash(ctx.user);
  }
  return "-";
}

// prefix + value, the value digested (SHA-256, the same on every replica) when long. In a
// Redis Cluster the value is a hash tag, {value}: the limits of one check on one client (per
// minute and per hour, a shared one) are then keys of one slot, checked in one call.
std::string_view redisKey(StringArena& arena, const std::string& prefix, std::string_view value,
                          bool tag) {
  char digest[2 * 16 + 1];
  if (value.size() > kMaxRedisKeyValue) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(value.data(), value.size(), md, &len, EVP_sha256(), nullptr);
    static constexpr char kHex[] = "0123456789abcdef";
    digest[0] = '#';
    for (int i = 0; i < 16; ++i) {
      digest[1 + 2 * i] = kHex[md[i] >> 4];
      digest[2 + 2 * i] = kHex[md[i] & 15];
    }
    value = std::string_view(digest, sizeof digest);
  }
  tag = tag && !value.empty();
  size_t size = prefix.size() + value.size() + (tag ? 2 : 0);
  char* out = arena.allocate(size);
  char* p = out;
  std::memcpy(p, prefix.data(), prefix.size());
  p += prefix.size();
  if (tag) *p++ = '{';
  if (!value.empty()) std::memcpy(p, value.data(), value.size());
  p += value.size();
  if (tag) *p = '}';
  return {out, size};
}

std::string formatPer(Millis per) {
  int64_t ms = per.count();
  if (ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
  if (ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

// A structured-field string (RFC 8941 §3.3.3): printable ASCII, `"` and `\` escaped.
std::string sfString(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += (c >= 0x20 && c < 0x7f) ? c : '_';
  }
  return out + "\"";
}

// /health "redis": down is "degraded" while requests still pass (on_error allow or local),
// "unhealthy" when they are refused (deny). Readiness does not depend on it: every replica
// shares the one Redis, so taking this one out of rotation would not help.
void registerRedisHealthCheck(RedisOnError on_error) {
  health::setCheck("redis", [on_error] {
    RedisHealth h = redisHealth();
    health::Check c;
    c.detail["state"] = std::string(h.status());
    c.detail["workers_connected"] = h.up;
    c.detail["workers"] = h.workers;
    c.detail["errors_total"] = redisErrorsTotal();
    nlohmann::json nodes = nlohmann::json::array();
    for (const RedisNodeHealth& n : redisNodes()) {
      nodes.push_back({{"address", n.address},
                       {"role", n.role},
                       {"status", std::string(n.status())},
                       {"workers_connected", n.up},
                       {"workers", n.workers}});
    }
    c.detail["nodes"] = std::move(nodes);
    if (h.used && h.up < h.workers) {
      c.status = h.up == 0 && on_error == RedisOnError::Deny ? health::Status::Unhealthy
                                                             : health::Status::Degraded;
    }
    return c;
  });
}

}  // namespace

void setClockForTesting(Clock clock) { g_clock = clock ? clock : monotonicNs; }

// ---------------------------------------------------------------------------------------
// RouteLimits

RouteLimits::RouteLimits(std::shared_ptr<const RateLimitConfig> config, const RouteConfig& route,
                         const Config& whole)
    : config_(std::move(config)),
      route_name_(route.name),
      counters_(&routeCounters(route.name)),
      header_writer_(config_->hasBeforeAuth() ? FilterOrder::RateLimitBeforeAuth
                                              : FilterOrder::RateLimitAfterAuth) {
  const RateLimitStoreConfig& store = whole.rate_limit_store;
  if (store.type == RateLimitStoreType::Redis) {
    redis_ = RedisSettings::get(store.redis);
    registerRedisHealthCheck(store.redis.on_error);
    declareRedisErrorSeries();
  }
  uint64_t replicas = std::max<uint32_t>(1, store.redis.replicas);
  const auto& limits = config_->limits();
  limits_.resize(limits.size());
  for (size_t i = 0; i < limits.size(); ++i) {
    const Limit& l = limits[i];
    LimitRuntime& r = limits_[i];
    r.limit = &l;
    // The bucket family: per route and position in its list, or pooled by `shared` name;
    // the rate is part of it, so a reload that changes a limit starts it afresh.
    std::string family = l.shared.empty() ? "r:" + route.name + ":" + std::to_string(i)
                                          : "s:" + l.shared;
    std::string rate = std::to_string(l.requests) + "/" + std::to_string(l.per.count()) + "ms/" +
                       std::to_string(l.burst);
    std::string identity = family + "|" + l.key + "|" + rate;
    r.seed = hashText(identity, processHashSeed());
    r.local_seed = hashText(identity + "|local", processHashSeed());
    uint64_t per_ns = saturatingMul(uint64_t(l.per.count()), 1'000'000);
    r.rate = makeRate(l.requests, per_ns, l.burst);
    r.local_rate = makeRate(l.requests, saturatingMul(per_ns, replicas),
                            std::max<uint64_t>(1, l.burst / replicas));
    Rate us = makeRate(l.requests, saturatingMul(uint64_t(l.per.count()), 1000), l.burst);
    r.redis_interval = std::to_string(us.interval);
    r.redis_window = std::to_string(us.window);
    r.redis_prefix = store.redis.key_prefix + "rl:" + family + ":" + rate + ":";
    // Policy names are unique among the limits the headers show: shared name, or key and
    // window.
    std::string name = l.shared.empty() ? l.key + "-" + formatPer(l.per) : l.shared;
    for (size_t j = 0; j < i; ++j) {
      if (!limits[j].dry_run && limits_[j].policy_name == sfString(name)) {
        name += "-" + std::to_string(i);
      }
    }
    r.policy_name = sfString(name);
    if (l.dry_run) continue;
    if (!policy_header_.empty()) policy_header_ += ", ";
    policy_header_ += r.policy_name + ";q=" + std::to_string(l.requests) +
                      ";w=" + std::to_string(std::max<int64_t>(1, (l.per.count() + 999) / 1000));
  }
}

void RouteLimits::writeHeaders(const LimitStatus* st, HeaderList& headers,
                               StringArena& arena) const {
  int tight = -1;
  bool refused = false;
  uint32_t retry = 0;
  size_t field_bytes = 0;
  for (size_t i = 0; i < limits_.size(); ++i) {
    if (!st[i].known || limits_[i].limit->dry_run) continue;
    if (!st[i].conforms) {
      refused = true;
      retry = std::max(retry, st[i].retry_s);
    }
    if (tight < 0 || st[i].remaining < st[tight].remaining ||
        (st[i].remaining == st[tight].remaining && st[i].reset_s > st[tight].reset_s)) {
      tight = int(i);
    }
    field_bytes += limits_[i].policy_name.size() + 2 * 13 + 2;
  }
  if (tight < 0) return;
  const LimitStatus& t = st[tight];
  // These fields replace any of the same names, the upstream's included.
  static constexpr std::string_view kFields[] = {"RateLimit-Limit", "RateLimit-Remaining",
                                                 "RateLimit-Reset", "RateLimit-Policy", "RateLimit"};
  headers.removeAny(kFields);
  headers.addRef("RateLimit-Limit", arenaNumber(arena, limits_[tight].limit->burst));
  headers.addRef("RateLimit-Remaining", arenaNumber(arena, t.remaining));
  headers.addRef("RateLimit-Reset", arenaNumber(arena, t.reset_s));
  headers.addRef("RateLimit-Policy", policy_header_);
  // RateLimit: "name";r=R;t=T for every limit that was evaluated.
  char* out = arena.allocate(field_bytes);
  char* p = out;
  for (size_t i = 0; i < limits_.size(); ++i) {
    if (!st[i].known || limits_[i].limit->dry_run) continue;
    if (p != out) {
      std::memcpy(p, ", ", 2);
      p += 2;
    }
    const std::string& name = limits_[i].policy_name;
    std::memcpy(p, name.data(), name.size());
    p += name.size();
    std::memcpy(p, ";r=", 3);
    p = std::to_chars(p + 3, p + 13, st[i].remaining).ptr;
    std::memcpy(p, ";t=", 3);
    // A refusing limit's t names the moment of Retry-After, its next token (the draft:
    // both fields on one response point at the same time); otherwise, when it is full.
    p = std::to_chars(p + 3, p + 13, st[i].conforms ? st[i].reset_s : st[i].retry_s).ptr;
  }
  headers.addRef("RateLimit", std::string_view(out, size_t(p - out)));
  if (refused) headers.setRef("Retry-After", arenaNumber(arena, std::max<uint32_t>(1, retry)));
}

void RouteLimits::reportDryRun(const RequestContext& ctx, const LimitRuntime& limit) const {
  counters_->dry_run.fetch_add(1, std::memory_order_relaxed);
  uint64_t suppressed = 0;
  if (!dry_run_log_.allow(g_clock(), &suppressed)) return;
  // Header and claim values may be secrets: only the client address is logged.
  std::string skipped = std::to_string(suppressed);
  std::string rate = std::to_string(limit.limit->requests) + "/" + formatPer(limit.limit->per);
  log::info("rate limit exceeded (dry run)", {{"route", route_name_},
                                              {"limit", limit.limit->key},
                                              {"rate", rate},
                                              {"client_ip", ctx.client_ip},
                                              {"suppressed", skipped}});
}

// ---------------------------------------------------------------------------------------
// The filter

RateLimitFilter::RateLimitFilter(std::shared_ptr<const RouteLimits> limits, FilterOrder order)
    : limits_(std::move(limits)), order_(order) {
  for (size_t i = 0; i < limits_->size(); ++i) {
    bool after = limits_->limit(i).limit->after_auth;
    if (after == (order == FilterOrder::RateLimitAfterAuth)) mine_.push_back(uint32_t(i));
  }
  numkeys_ = std::to_string(mine_.size());
}

FilterStatus RateLimitFilter::onRequestHeaders(RequestContext& ctx, HeaderList& headers) const {
  LimitStatus* statuses = statusesOf(ctx, limits_->size(), /*create=*/true);
  if (limits_->redis()) return checkRedis(ctx, headers, statuses);
  std::string_view values[kMaxLimits];
  char buf[kIpTextMax];
  for (size_t k = 0; k < mine_.size(); ++k) {
    values[k] = keyValue(*limits_->limit(mine_[k]).limit, ctx, headers, /*binary=*/true, buf);
  }
  return finish(ctx, decideInProcess(ctx, values, statuses, /*local=*/false));
}

RateLimitFilter::Verdict RateLimitFilter::decideInProcess(const RequestContext& ctx,
                                                          const std::string_view* values,
                                                          LimitStatus* statuses,
                                                          bool local) const {
  BucketTable& table = BucketTable::process();
  int64_t now = g_clock();
  uint64_t keys[kMaxLimits];
  int64_t resets[kMaxLimits];
  bool took[kMaxLimits];
  bool admitted = true;
  for (size_t k = 0; k < mine_.size(); ++k) {
    const LimitRuntime& l = limits_->limit(mine_[k]);
    keys[k] = hashText(values[k], local ? l.local_seed : l.seed);
    // Once a limit refused, the others are only looked at: a refused request takes nothing.
    TakeResult r = table.take(keys[k], local ? l.local_rate : l.rate, now, admitted);
    took[k] = admitted && r.conforms;
    resets[k] = r.reset;
    setStatus(statuses[mine_[k]], r.conforms, r.remaining, r.reset, r.retry, kNsPerSecond);
    if (!r.conforms && !l.limit->dry_run) admitted = false;
  }
  for (size_t k = 0; k < mine_.size(); ++k) {
    const LimitRuntime& l = limits_->limit(mine_[k]);
    if (!admitted && took[k]) {
      const Rate& rate = local ? l.local_rate : l.rate;
      table.refund(keys[k], rate);
      // The answer describes the bucket as the refund left it: a token more, full sooner.
      LimitStatus& s = statuses[mine_[k]];
      setStatus(s, true, std::min<int64_t>(int64_t(s.remaining) + 1, l.limit->burst),
                std::max<int64_t>(0, resets[k] - int64_t(rate.interval)), 0, kNsPerSecond);
    }
    if (l.limit->dry_run && !statuses[mine_[k]].conforms) limits_->reportDryRun(ctx, l);
  }
  return admitted ? Verdict::Admit : Verdict::Reject;
}

FilterStatus RateLimitFilter::checkRedis(RequestContext& ctx, const HeaderList& headers,
                                         LimitStatus* statuses) const {
  size_t n = mine_.size();
  RedisCheck check;
  check.numkeys = int(n);
  check.argc = int(3 + 4 * n);
  check.argv = arenaArray<const char*>(*ctx.arena, size_t(check.argc));
  check.lens = arenaArray<size_t>(*ctx.arena, size_t(check.argc));
  check.argv[2] = numkeys_.data();
  check.lens[2] = numkeys_.size();
  char buf[kIpTextMax];
  for (size_t k = 0; k < n; ++k) {
    const LimitRuntime& l = limits_->limit(mine_[k]);
    std::string_view key =
        redisKey(*ctx.arena, l.redis_prefix, keyValue(*l.limit, ctx, headers, false, buf),
                 limits_->redis()->config.mode == RedisMode::Cluster);
    check.argv[3 + k] = key.data();
    check.lens[3 + k] = key.size();
    size_t a = 3 + n + 3 * k;
    check.argv[a] = l.redis_interval.data();
    check.lens[a] = l.redis_interval.size();
    check.argv[a + 1] = l.redis_window.data();
    check.lens[a + 1] = l.redis_window.size();
    check.argv[a + 2] = l.limit->dry_run ? "1" : "0";
    check.lens[a + 2] = 1;
  }
  if (!ctx.worker) {
    countRedisError(RedisErrorReason::Connect);
    return finish(ctx, redisUnavailable(ctx, check, statuses));
  }
  RedisLimiter& redis = RedisLimiter::forWorker(*ctx.worker, limits_->redis());
  // A key Redis refused has no token before the time it gave: refuse without asking.
  int64_t now = g_clock();
  for (size_t k = 0; k < n; ++k) {
    const LimitRuntime& l = limits_->limit(mine_[k]);
    if (l.limit->dry_run) continue;
    uint64_t h = hashBytes(check.argv[3 + k], check.lens[3 + k], processHashSeed());
    int64_t until = redis.deniedUntil(h);
    if (until > now) {
      setStatus(statuses[mine_[k]], false, 0, until - now + (l.rate.window - l.rate.interval),
                until - now, kNsPerSecond);
      return finish(ctx, Verdict::Reject);
    }
  }
  RedisErrorReason why;
  if (RedisLimiter::Call* call = redis.send(ctx, *this, check, &why)) {
    ctx.scratchFor(order_).value = reinterpret_cast<uintptr_t>(call);
    return FilterStatus::StopWait;
  }
  countRedisError(why);
  return finish(ctx, redisUnavailable(ctx, check, statuses));
}

void RateLimitFilter::onRedisDone(RequestContext& ctx, const RedisCheck& check,
                                  const RedisAnswer& answer) const {
  ctx.scratchFor(order_).value = 0;
  LimitStatus* statuses = statusesOf(ctx, limits_->size(), /*create=*/false);
  Verdict v;
  if (answer.outcome == RedisOutcome::Ok && answer.count == 1 + 3 * mine_.size()) {
    v = decideRedisAnswer(ctx, check, answer, statuses);
  } else {
    // An answer of the wrong shape.
    if (answer.outcome == RedisOutcome::Ok) countRedisError(RedisErrorReason::BadReply);
    v = redisUnavailable(ctx, check, statuses);
  }
  resume(ctx, v);
}

RateLimitFilter::Verdict RateLimitFilter::decideRedisAnswer(RequestContext& ctx,
                                                            const RedisCheck& check,
                                                            const RedisAnswer& answer,
                                                            LimitStatus* statuses) const {
  constexpr int64_t kNsPerMs = 1'000'000;
  bool admitted = answer.values[0] == 1;
  int64_t now = g_clock();
  RedisLimiter* redis = ctx.worker ? &RedisLimiter::of(*ctx.worker) : nullptr;
  for (size_t k = 0; k < mine_.size(); ++k) {
    const LimitRuntime& l = limits_->limit(mine_[k]);
    const int64_t* v = answer.values + 1 + 3 * k;
    bool conforms = v[2] <= 0;
    setStatus(statuses[mine_[k]], conforms, v[0], v[1], v[2], 1000);
    if (conforms) continue;
    if (l.limit->dry_run) {
      limits_->reportDryRun(ctx, l);
    } else if (!admitted && redis) {
      uint64_t h = hashBytes(check.argv[3 + k], check.lens[3 + k], processHashSeed());
      redis->rememberDenied(h, now + v[2] * kNsPerMs);
    }
  }
  return admitted ? Verdict::Admit : Verdict::Reject;
}

RateLimitFilter::Verdict RateLimitFilter::redisUnavailable(const RequestContext& ctx,
                                                           const RedisCheck& check,
                                                           LimitStatus* statuses) const {
  switch (limits_->redis()->config.on_error) {
    case RedisOnError::Allow:
      return Verdict::Admit;
    case RedisOnError::Deny:
      return Verdict::Unavailable;
    case RedisOnError::Local:
      break;
  }
  // The Redis keys already hold the route, limit and key value: they name local buckets.
  std::string_view keys[kMaxLimits];
  for (size_t k = 0; k < mine_.size(); ++k) keys[k] = {check.argv[3 + k], check.lens[3 + k]};
  return decideInProcess(ctx, keys, statuses, /*local=*/true);
}

FilterStatus RateLimitFilter::finish(RequestContext& ctx, Verdict v) const {
  switch (v) {
    case Verdict::Admit:
      return FilterStatus::Continue;
    case Verdict::Reject:
      limits_->counters().rate_limited.fetch_add(1, std::memory_order_relaxed);
      metrics::local().add(metrics::Id::RateLimited,
                           {ctx.route ? ctx.route->metrics_label : uint16_t(0), 0, 0});
      ctx.sendLocalReply(429, "RATE_LIMITED", "Too many requests");
      return FilterStatus::StopReplied;
    case Verdict::Unavailable:
      ctx.sendLocalReply(503, "SERVICE_UNAVAILABLE", "Rate limit service unavailable");
      return FilterStatus::StopReplied;
  }
  return FilterStatus::Continue;
}

void RateLimitFilter::resume(RequestContext& ctx, Verdict v) const {
  if (finish(ctx, v) == FilterStatus::Continue) ctx.continueRequest();
}

void RateLimitFilter::onAbandon(RequestContext& ctx) const {
  FilterScratch& s = ctx.scratchFor(order_);
  auto* call = reinterpret_cast<RedisLimiter::Call*>(s.value);
  s.value = 0;
  if (call && ctx.worker) RedisLimiter::of(*ctx.worker).abandon(call);
}

void RateLimitFilter::onResponseHeaders(RequestContext& ctx, ResponseHead& response) const {
  if (order_ != limits_->headerWriter()) return;
  const LimitStatus* statuses = statusesOf(ctx, limits_->size(), /*create=*/false);
  if (statuses) limits_->writeHeaders(statuses, response.headers, *ctx.arena);
}

void buildRateLimit(const std::shared_ptr<const FilterConfig>& config, const RouteConfig* route,
                    const Config& whole, std::vector<std::shared_ptr<const Filter>>& chain) {
  if (!route) return;
  auto typed = std::static_pointer_cast<const RateLimitConfig>(config);
  auto limits = std::make_shared<const RouteLimits>(typed, *route, whole);
  if (typed->hasBeforeAuth()) {
    chain.push_back(std::make_shared<RateLimitFilter>(limits, FilterOrder::RateLimitBeforeAuth));
  }
  if (typed->hasAfterAuth()) {
    chain.push_back(std::make_shared<RateLimitFilter>(limits, FilterOrder::RateLimitAfterAuth));
  }
}

}  // namespace gw::rate_limit
