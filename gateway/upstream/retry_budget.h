// SPEC §2's retry budget over a sliding 10-second window: retries may be at most a fifth
// of the requests of the window plus a floor of retries per second (Linkerd's retry budget:
// retryRatio 0.2, minRetriesPerSecond, ttl 10 s). Under load retries then add at most
// ~20% to an outage's traffic, while a quiet upstream can always retry its failures.
//
// One per worker and upstream (no shared cache line on the request path): the floor is the
// upstream's, divided among the workers. Single-threaded.
#pragma once

#include <array>
#include <cstdint>

namespace gw {

class RetryBudget {
 public:
  static constexpr uint32_t kWindowSeconds = 10;
  static constexpr uint32_t kRatioPercent = 20;
  static constexpr uint32_t kMinRetriesPerSecond = 10;

  explicit RetryBudget(uint32_t workers = 1)
      : floor_((kMinRetriesPerSecond * kWindowSeconds + workers - 1) / (workers ? workers : 1)) {}

  // A request (not a retry) was sent at `now_ms` (a monotonic clock).
  void countRequest(uint64_t now_ms) {
    Bucket& b = bucket(now_ms);
    ++b.requests;
    ++requests_;
  }
  // Whether one more retry fits at `now_ms`; if so it is counted.
  bool takeRetry(uint64_t now_ms) {
    Bucket& b = bucket(now_ms);
    if (uint64_t(retries_ + 1) * 100 > uint64_t(requests_) * kRatioPercent + uint64_t(floor_) * 100) {
      return false;
    }
    ++b.retries;
    ++retries_;
    return true;
  }

 private:
  struct Bucket {
    uint32_t requests = 0;
    uint32_t retries = 0;
  };
  // The bucket of now's second, the seconds that fell out of the window cleared first.
  Bucket& bucket(uint64_t now_ms) {
    uint64_t second = now_ms / 1000;
    if (second != newest_) {
      uint64_t stale = second - newest_ < kWindowSeconds ? second - newest_ : kWindowSeconds;
      for (uint64_t s = second - stale + 1; s <= second; ++s) {
        Bucket& old = buckets_[s % kWindowSeconds];
        requests_ -= old.requests;
        retries_ -= old.retries;
        old = {};
      }
      newest_ = second;
    }
    return buckets_[second % kWindowSeconds];
  }

  std::array<Bucket, kWindowSeconds> buckets_{};
  uint64_t newest_ = 0;  // the second of the newest bucket
  uint32_t requests_ = 0;  // in the window
  uint32_t retries_ = 0;
  uint32_t floor_;       // retries the window allows whatever the requests
};

}  // namespace gw
