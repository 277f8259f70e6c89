#include "gateway/admin/route_window.h"

#include <bit>
#include <cmath>

namespace gw::window {

namespace {

constexpr uint64_t kNsPerSecond = 1'000'000'000;

void bump(std::atomic<uint32_t>& a) {
  // Single writer: a plain load and store, not a locked read-modify-write.
  a.store(a.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

}  // namespace

size_t latencyBucket(uint64_t duration_ns) {
  uint64_t us = duration_ns / 1000;
  if (us == 0) return 0;
  size_t octave = size_t(std::bit_width(us)) - 1;
  size_t upper_half = octave > 0 ? size_t((us >> (octave - 1)) & 1) : 0;
  size_t b = 1 + 2 * octave + upper_half;
  return b < kLatencyBuckets ? b : kLatencyBuckets - 1;
}

double bucketLowerMs(size_t bucket) {
  if (bucket == 0) return 0;
  double base = std::ldexp(1.0, int((bucket - 1) / 2)) / 1000.0;
  return (bucket - 1) % 2 ? base * 1.5 : base;
}

double bucketUpperMs(size_t bucket) {
  if (bucket == 0) return 0.001;
  double base = std::ldexp(1.0, int((bucket - 1) / 2)) / 1000.0;
  return (bucket - 1) % 2 ? base * 2 : base * 1.5;
}

double Totals::quantileMs(double q) const {
  uint64_t count = 0;
  for (uint64_t n : latency) count += n;
  if (count == 0) return 0;
  double rank = q * double(count);
  uint64_t below = 0;
  for (size_t b = 0; b < kLatencyBuckets; ++b) {
    if (latency[b] == 0) continue;
    if (double(below + latency[b]) >= rank) {
      double within = (rank - double(below)) / double(latency[b]);
      return bucketLowerMs(b) + within * (bucketUpperMs(b) - bucketLowerMs(b));
    }
    below += latency[b];
  }
  return bucketUpperMs(kLatencyBuckets - 1);
}

RouteWindows::~RouteWindows() {
  for (auto& page : pages_) {
    Page* p = page.load(std::memory_order_relaxed);
    if (!p) continue;
    for (auto& r : p->rings) delete r.load(std::memory_order_relaxed);
    delete p;
  }
}

Ring& RouteWindows::ring(uint16_t route) {
  auto& page_slot = pages_[route / kPageSize];
  Page* page = page_slot.load(std::memory_order_relaxed);
  if (!page) {
    page = new Page();
    page_slot.store(page, std::memory_order_release);  // readers see it built
  }
  auto& ring_slot = page->rings[route % kPageSize];
  Ring* r = ring_slot.load(std::memory_order_relaxed);
  if (!r) {
    r = new Ring();
    ring_slot.store(r, std::memory_order_release);
  }
  return *r;
}

void RouteWindows::record(uint16_t route, uint64_t now_ns, const Outcome& outcome) {
  uint64_t now_s = now_ns / kNsPerSecond;
  Second& s = ring(route).seconds[now_s % kRingSeconds];
  uint32_t epoch = uint32_t(now_s + 1);
  if (s.epoch.load(std::memory_order_relaxed) != epoch) {
    // The slot last counted a second that has left the window: start it afresh. The
    // epoch is published after the zeroes, so a reader never credits old counts to it.
    s.epoch.store(0, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    s.requests.store(0, std::memory_order_relaxed);
    s.errors.store(0, std::memory_order_relaxed);
    s.rate_limited.store(0, std::memory_order_relaxed);
    for (auto& b : s.latency) b.store(0, std::memory_order_relaxed);
    s.epoch.store(epoch, std::memory_order_release);
  }
  bump(s.requests);
  if (outcome.error) bump(s.errors);
  if (outcome.rate_limited) bump(s.rate_limited);
  bump(s.latency[latencyBucket(outcome.duration_ns)]);
}

void RouteWindows::sumInto(uint16_t route, uint64_t now_ns, Totals& out) const {
  const Page* page = pages_[route / kPageSize].load(std::memory_order_acquire);
  if (!page) return;
  const Ring* r = page->rings[route % kPageSize].load(std::memory_order_acquire);
  if (!r) return;
  uint64_t now_s = now_ns / kNsPerSecond;
  for (const Second& s : r->seconds) {
    uint32_t epoch = s.epoch.load(std::memory_order_acquire);
    if (epoch == 0 || epoch > now_s + 1 || now_s + 1 - epoch >= kWindowSeconds) continue;
    Totals one;
    one.requests = s.requests.load(std::memory_order_relaxed);
    one.errors = s.errors.load(std::memory_order_relaxed);
    one.rate_limited = s.rate_limited.load(std::memory_order_relaxed);
    for (size_t b = 0; b < kLatencyBuckets; ++b) one.latency[b] = s.latency[b].load(std::memory_order_relaxed);
    // Recycled while being read (a seqlock's check): its counts belong to no one second.
    std::atomic_thread_fence(std::memory_order_acquire);
    if (s.epoch.load(std::memory_order_relaxed) != epoch) continue;
    out.requests += one.requests;
    out.errors += one.errors;
    out.rate_limited += one.rate_limited;
    for (size_t b = 0; b < kLatencyBuckets; ++b) out.latency[b] += one.latency[b];
  }
}

}  // namespace gw::window
