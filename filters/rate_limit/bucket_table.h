// The in-process bucket store (rate_limit_store.type: memory): token buckets shared by
// every worker of the process, bounded in memory whatever the number of keys.
//
// Contract:
// - Thread-safe. 256 shards, each an open-addressing table behind its own small mutex: two
//   workers contend only when their keys land in the same shard, and the critical section
//   is a probe and a few integer operations (no allocation once the shard is at its size).
// - A bucket is identified by a 64-bit key hash alone (see key_hash.h: seeded per process),
//   and stored as one GCRA timestamp (token_bucket.h): 16 bytes per bucket.
// - Bounded: at most maxKeys() buckets, allocatedBytes() <= kShards x 16 x slots per shard
//   (16 MiB for the default 786,432 buckets). A shard grows by doubling up to its bound.
// - Idle expiry: a bucket that has refilled is the same as no bucket, so it is dropped when
//   a look at a few random slots per insertion finds it (unless it was used since the last
//   look). When a shard is full, an insertion evicts a sampled bucket not used since it was
//   last looked at (second chance, like CLOCK, sampled like Redis' approximated LRU); new
//   buckets start unmarked, so a flood of one-off keys (an attack spraying addresses)
//   evicts itself before the buckets of returning clients.
//   An evicted bucket that was not full is forgotten (the client gets a full bucket again):
//   the documented cost of the bound.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>

#include "filters/rate_limit/token_bucket.h"

namespace gw::rate_limit {

class BucketTable {
 public:
  static constexpr size_t kShards = 256;
  static constexpr size_t kDefaultMaxKeys = 786432;  // 16 MiB of slots
  static constexpr size_t kSlotBytes = 16;

  explicit BucketTable(size_t max_keys = kDefaultMaxKeys);
  ~BucketTable();
  BucketTable(const BucketTable&) = delete;
  BucketTable& operator=(const BucketTable&) = delete;

  // The process-wide table of the memory store. It outlives configuration reloads, so a
  // SIGHUP does not hand every client a fresh bucket.
  static BucketTable& process();

  // Takes one token from `key`'s bucket if it has one (and `take` is set). `now` is a
  // monotonic time in the units of `rate`.
  TakeResult take(uint64_t key, const Rate& rate, int64_t now, bool take = true);
  // Gives back the token a take() of the same request took (a later limit refused it).
  void refund(uint64_t key, const Rate& rate);

  size_t size() const;  // live buckets; locks every shard (tests, benchmarks)
  size_t maxKeys() const { return max_per_shard_ * kShards; }
  size_t allocatedBytes() const;
  uint64_t evictions() const;  // live (not yet refilled) buckets dropped for room

 private:
  struct Slot;
  struct Shard;

  Shard& shardFor(uint64_t key) const;

  std::unique_ptr<Shard[]> shards_;
  uint32_t max_capacity_;   // slots per shard at most (a power of two)
  uint32_t max_per_shard_;  // buckets per shard at most (3/4 of max_capacity_)
};

}  // namespace gw::rate_limit
