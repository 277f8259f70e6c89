#include "filters/rate_limit/bucket_table.h"

#include <bit>

namespace gw::rate_limit {

namespace {

constexpr uint32_t kInitialCapacity = 16;
constexpr uint64_t kRefBit = uint64_t(1) << 63;

// Linear probing stays short up to 3/4 full.
constexpr uint32_t maxLoad(uint32_t capacity) { return capacity / 4 * 3; }

}  // namespace

// key == 0: empty. Stored keys have bit 0 set so that no hash is mistaken for empty; the
// home slot uses the bits above it. `word` is full_at (>= 0, < 2^62) plus the CLOCK
// reference bit at the top.
struct BucketTable::Slot {
  uint64_t key = 0;
  uint64_t word = 0;

  int64_t fullAt() const { return int64_t(word & ~kRefBit); }
  bool referenced() const { return (word & kRefBit) != 0; }
  void set(int64_t full_at, bool ref) {
    word = uint64_t(full_at < 0 ? 0 : full_at) | (ref ? kRefBit : 0);
  }
};

struct alignas(64) BucketTable::Shard {
  std::mutex mutex;
  std::unique_ptr<Slot[]> slots;
  uint32_t mask = 0;
  uint32_t count = 0;
  uint64_t rng = 0x9e3779b97f4a7c15ull;
  uint64_t evictions = 0;

  uint32_t home(uint64_t stored) const { return uint32_t(stored >> 1) & mask; }

  // The slot holding `stored`, or the empty slot where it would go.
  uint32_t probe(uint64_t stored) const {
    uint32_t i = home(stored);
    while (slots[i].key != 0 && slots[i].key != stored) i = (i + 1) & mask;
    return i;
  }

  // Backward-shift deletion: no tombstones, so probes stay as short as the load allows.
  void erase(uint32_t i) {
    uint32_t j = i;
    for (;;) {
      j = (j + 1) & mask;
      if (slots[j].key == 0) break;
      uint32_t h = home(slots[j].key);
      if (((j - h) & mask) >= ((j - i) & mask)) {
        slots[i] = slots[j];
        i = j;
      }
    }
    slots[i] = Slot{};
    --count;
  }

  void rehash(uint32_t capacity) {
    std::unique_ptr<Slot[]> old = std::move(slots);
    uint32_t old_capacity = old ? mask + 1 : 0;
    slots = std::make_unique<Slot[]>(capacity);
    mask = capacity - 1;
    for (uint32_t i = 0; i < old_capacity; ++i) {
      if (old[i].key != 0) slots[probe(old[i].key)] = old[i];
    }
  }

  // Eviction looks at random slots rather than sweeping a hand: deletions in a linear-
  // probing table that follow a sweep leave the table dense ahead of the hand, and probe
  // lengths there explode; random deletions keep the load even.
  uint32_t randomSlot() {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return uint32_t(rng) & mask;
  }

  // Drops refilled buckets among a few random slots, per insertion: keeps the table lean
  // while keys churn, without a background thread. A refilled bucket used since it was last
  // looked at stays (losing its mark): a client whose limit refills between its requests
  // keeps its slot instead of being re-inserted every time.
  void reclaim(int64_t now, uint32_t samples) {
    while (samples-- > 0 && count > 0) {
      uint32_t i = randomSlot();
      Slot& s = slots[i];
      if (s.key == 0 || s.fullAt() > now) continue;
      if (s.referenced()) {
        s.set(s.fullAt(), false);
      } else {
        erase(i);
      }
    }
  }

  // Frees one slot: the first sampled bucket not used since it was last looked at (second
  // chance, as CLOCK gives; new buckets start unmarked). Only a bucket that had not refilled
  // counts as an eviction. Gives up on second chances after kMaxSamples.
  void evictOne(int64_t now) {
    static constexpr uint32_t kMaxSamples = 32;
    for (uint32_t n = 0;; ++n) {
      uint32_t i = randomSlot();
      Slot& s = slots[i];
      if (s.key == 0) continue;  // a quarter of the slots at most
      if (s.referenced() && n < kMaxSamples) {
        s.set(s.fullAt(), false);
        continue;
      }
      if (s.fullAt() > now) ++evictions;
      erase(i);
      return;
    }
  }
};

BucketTable::BucketTable(size_t max_keys) : shards_(std::make_unique<Shard[]>(kShards)) {
  size_t per_shard = (max_keys + kShards - 1) / kShards;
  size_t capacity = std::bit_ceil(std::max<size_t>(kInitialCapacity, (per_shard * 4 + 2) / 3));
  capacity = std::min<size_t>(capacity, size_t(1) << 30);
  max_capacity_ = uint32_t(capacity);
  max_per_shard_ = maxLoad(max_capacity_);
  for (size_t i = 0; i < kShards; ++i) {
    shards_[i].rng ^= uint64_t(i) * 0xbf58476d1ce4e5b9ull;
    shards_[i].rehash(std::min(kInitialCapacity, max_capacity_));
  }
}

BucketTable::~BucketTable() = default;

BucketTable& BucketTable::process() {
  static BucketTable table;
  return table;
}

BucketTable::Shard& BucketTable::shardFor(uint64_t key) const { return shards_[key >> 56]; }

TakeResult BucketTable::take(uint64_t key, const Rate& rate, int64_t now, bool take) {
  Shard& shard = shardFor(key);
  uint64_t stored = key | 1;
  std::lock_guard<std::mutex> lock(shard.mutex);
  uint32_t i = shard.probe(stored);
  Slot& slot = shard.slots[i];
  if (slot.key != 0) {
    TakeResult r = gcraTake(slot.fullAt(), rate, now, take);
    slot.set(r.full_at, true);
    return r;
  }
  TakeResult r = gcraTake(0, rate, now, take);
  if (r.full_at <= now) return r;  // still full: nothing worth remembering
  if (shard.count >= max_per_shard_) {
    shard.evictOne(now);
  } else if (shard.count + 1 > maxLoad(shard.mask + 1)) {
    shard.rehash((shard.mask + 1) * 2);
  } else {
    shard.reclaim(now, 2);
  }
  i = shard.probe(stored);  // eviction or growth moved things
  shard.slots[i].key = stored;
  shard.slots[i].set(r.full_at, false);  // cold until used again
  ++shard.count;
  return r;
}

void BucketTable::refund(uint64_t key, const Rate& rate) {
  Shard& shard = shardFor(key);
  uint64_t stored = key | 1;
  std::lock_guard<std::mutex> lock(shard.mutex);
  Slot& slot = shard.slots[shard.probe(stored)];
  if (slot.key != 0) slot.set(slot.fullAt() - rate.interval, slot.referenced());
}

size_t BucketTable::size() const {
  size_t n = 0;
  for (size_t i = 0; i < kShards; ++i) {
    std::lock_guard<std::mutex> lock(shards_[i].mutex);
    n += shards_[i].count;
  }
  return n;
}

size_t BucketTable::allocatedBytes() const {
  size_t n = kShards * sizeof(Shard);
  for (size_t i = 0; i < kShards; ++i) {
    std::lock_guard<std::mutex> lock(shards_[i].mutex);
    n += size_t(shards_[i].mask + 1) * sizeof(Slot);
  }
  return n;
}

uint64_t BucketTable::evictions() const {
  uint64_t n = 0;
  for (size_t i = 0; i < kShards; ++i) {
    std::lock_guard<std::mutex> lock(shards_[i].mutex);
    n += shards_[i].evictions;
  }
  return n;
}

}  // namespace gw::rate_limit
