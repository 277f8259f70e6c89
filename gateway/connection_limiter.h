// limits.max_connections and limits.max_connections_per_ip, for all workers at once.
//
// Contract: thread-safe. The total is one atomic per accept and close; the per-address
// counts (only when a per-IP limit is set) live in 16 mutex-guarded shards, so workers
// accepting from different addresses rarely meet on a lock.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <unordered_map>

namespace gw {

class ConnectionLimiter {
 public:
  enum class Verdict { Admitted, TooMany, TooManyFromAddress };

  void setLimits(uint64_t max_total, uint64_t max_per_address);
  // On Admitted, *per_address tells whether release() must also count the address down.
  Verdict admit(const uint8_t (&ip16)[16], bool* per_address);
  void release(const uint8_t (&ip16)[16], bool per_address);
  uint64_t total() const { return total_.load(std::memory_order_relaxed); }
  // Addresses currently holding a count (for tests and the bound on memory).
  size_t trackedAddresses();

 private:
  struct Address {
    uint8_t bytes[16];
    bool operator==(const Address& o) const { return std::memcmp(bytes, o.bytes, 16) == 0; }
  };
  struct AddressHash {
    size_t operator()(const Address& a) const;
  };
  struct Shard {
    std::mutex mutex;
    std::unordered_map<Address, uint32_t, AddressHash> counts;
  };
  Shard& shardFor(const Address& a);

  std::atomic<uint64_t> total_{0};
  std::atomic<uint64_t> max_total_{UINT64_MAX};
  std::atomic<uint64_t> max_per_address_{0};
  std::array<Shard, 16> shards_;
};

}  // namespace gw
