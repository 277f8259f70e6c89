#include "gateway/connection_limiter.h"

namespace gw {

size_t ConnectionLimiter::AddressHash::operator()(const Address& a) const {
  uint64_t lo, hi;
  std::memcpy(&lo, a.bytes, 8);
  std::memcpy(&hi, a.bytes + 8, 8);
  uint64_t h = (lo * 0x9e3779b97f4a7c15ull) ^ (hi + 0x632be59bd9b4e019ull + (lo << 6));
  return size_t(h ^ (h >> 29));
}

ConnectionLimiter::Shard& ConnectionLimiter::shardFor(const Address& a) {
  return shards_[AddressHash()(a) & (shards_.size() - 1)];
}

void ConnectionLimiter::setLimits(uint64_t max_total, uint64_t max_per_address) {
  max_total_.store(max_total ? max_total : UINT64_MAX, std::memory_order_relaxed);
  max_per_address_.store(max_per_address, std::memory_order_relaxed);
}

ConnectionLimiter::Verdict ConnectionLimiter::admit(const uint8_t (&ip16)[16], bool* per_address) {
  *per_address = false;
  if (total_.fetch_add(1, std::memory_order_relaxed) + 1 > max_total_.load(std::memory_order_relaxed)) {
    total_.fetch_sub(1, std::memory_order_relaxed);
    return Verdict::TooMany;
  }
  uint64_t limit = max_per_address_.load(std::memory_order_relaxed);
  if (limit == 0) return Verdict::Admitted;
  Address a;
  std::memcpy(a.bytes, ip16, 16);
  Shard& s = shardFor(a);
  std::lock_guard<std::mutex> lock(s.mutex);
  uint32_t& n = s.counts[a];
  if (n >= limit) {
    if (n == 0) s.counts.erase(a);
    total_.fetch_sub(1, std::memory_order_relaxed);
    return Verdict::TooManyFromAddress;
  }
  ++n;
  *per_address = true;
  return Verdict::Admitted;
}

void ConnectionLimiter::release(const uint8_t (&ip16)[16], bool per_address) {
  total_.fetch_sub(1, std::memory_order_relaxed);
  if (!per_address) return;
  Address a;
  std::memcpy(a.bytes, ip16, 16);
  Shard& s = shardFor(a);
  std::lock_guard<std::mutex> lock(s.mutex);
  auto it = s.counts.find(a);
  // An address with no connection left is forgotten: memory follows open connections.
  if (it != s.counts.end() && --it->second == 0) s.counts.erase(it);
}

size_t ConnectionLimiter::trackedAddresses() {
  size_t n = 0;
  for (auto& s : shards_) {
    std::lock_guard<std::mutex> lock(s.mutex);
    n += s.counts.size();
  }
  return n;
}

}  // namespace gw
