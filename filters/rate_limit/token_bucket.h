// The token bucket as one timestamp (GCRA, the "virtual scheduling" form of ATM's generic
// cell rate algorithm): a bucket of capacity `burst` refilled at one token per `interval`
// is fully described by the instant at which it will be full again, `full_at`. The bucket
// holds min(burst, (now - (full_at - window)) / interval) tokens, window = burst x interval.
//
// One integer per bucket (not tokens + last refill) means no floating point, exact counts
// (5 per hour lets exactly 5 through) and nothing to store for a full bucket: a bucket
// with now >= full_at is the same as no bucket, which is what idle expiry and the Redis
// key's PEXPIRE rely on. The Lua script in redis_limiter.cc is the same arithmetic.
#pragma once

#include <algorithm>
#include <cstdint>

namespace gw::rate_limit {

// Both in nanoseconds (memory store) or microseconds (Redis), clamped at build time so that
// now + window + interval cannot overflow.
struct Rate {
  int64_t interval = 1;  // time to earn one token: per / requests
  int64_t window = 1;    // time to fill an empty bucket: burst x interval
};

constexpr int64_t kMaxSpan = int64_t(1) << 60;  // ~36 years in ns

// `requests` per `per_units`, capacity `burst`, in the units of `per_units`. The interval is
// rounded down (at most one unit faster than asked), and never zero.
inline Rate makeRate(uint64_t requests, uint64_t per_units, uint64_t burst) {
  Rate r;
  uint64_t interval = requests == 0 ? per_units : per_units / requests;
  r.interval = int64_t(std::clamp<uint64_t>(interval, 1, uint64_t(kMaxSpan)));
  uint64_t window = 0;
  if (__builtin_mul_overflow(uint64_t(r.interval), std::max<uint64_t>(burst, 1), &window) ||
      window > uint64_t(kMaxSpan)) {
    window = uint64_t(kMaxSpan);
  }
  r.window = int64_t(window);
  return r;
}

struct TakeResult {
  bool conforms = false;  // a token was there (and was taken, if asked)
  int64_t full_at = 0;    // the bucket's new state
  int64_t remaining = 0;  // whole tokens left after this request
  int64_t reset = 0;      // until the bucket is full again
  int64_t retry = 0;      // until the next token, when !conforms; else 0
};

// `full_at` is the stored state (0 or anything <= now: a full bucket). Takes one token if
// there is one and `take` is set.
inline TakeResult gcraTake(int64_t full_at, const Rate& rate, int64_t now, bool take) {
  int64_t empty_at = std::max(full_at, now) - rate.window;
  TakeResult r;
  r.conforms = empty_at + rate.interval <= now;
  if (r.conforms && take) empty_at += rate.interval;
  r.full_at = empty_at + rate.window;
  r.remaining = std::max<int64_t>(0, (now - empty_at) / rate.interval);
  r.reset = std::max<int64_t>(0, r.full_at - now);
  r.retry = r.conforms ? 0 : empty_at + rate.interval - now;
  return r;
}

}  // namespace gw::rate_limit
