// A bounded LRU of verified tokens, so that a client repeating its token costs one hash
// lookup and one comparison instead of a signature check.
//
// Contract:
// - Single-threaded: one cache per worker and provider (jwt_filter.cc keeps it in the
//   worker's state), so the hit path takes no lock and shares no cache line.
// - Keyed by the token's full text: the hash only picks the bucket, and an entry matches
//   only a byte-identical token. A hash collision can therefore never hand one token's
//   identity to another.
// - An entry is valid while now < its token's exp (+ leeway), capped at kMaxUnboundedMs for
//   tokens without exp, and only under the `stamp` it was verified with (the key set's
//   version and the provider policy): a key rotation or a policy change by reload turns
//   the old entries into misses.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "filters/jwt/jwt_verifier.h"

namespace gw::jwt {

class TokenCache {
 public:
  static constexpr size_t kDefaultCapacity = 4096;
  static constexpr uint64_t kMaxUnboundedMs = 5 * 60 * 1000;

  explicit TokenCache(size_t capacity = kDefaultCapacity);
  TokenCache(const TokenCache&) = delete;
  TokenCache& operator=(const TokenCache&) = delete;

  // The identity verified for exactly this token under `stamp`, if still valid at now_ms;
  // an entry found expired or stale is dropped.
  const std::shared_ptr<const TokenIdentity>* find(std::string_view token, uint64_t stamp,
                                                   uint64_t now_ms);
  // Adds or replaces; evicts the least recently used entry when full.
  void insert(std::string_view token, uint64_t stamp, uint64_t now_ms,
              std::shared_ptr<const TokenIdentity> identity);
  void clear();

  size_t size() const { return index_.size(); }
  size_t capacity() const { return capacity_; }
  uint64_t hits() const { return hits_; }
  uint64_t misses() const { return misses_; }

 private:
  static constexpr uint32_t kNone = UINT32_MAX;
  struct Node {
    std::string token;
    uint64_t stamp = 0;
    uint64_t valid_until_ms = 0;
    std::shared_ptr<const TokenIdentity> identity;
    uint32_t prev = kNone, next = kNone;
  };

  void unlink(uint32_t i);
  void pushFront(uint32_t i);
  void erase(uint32_t i);

  size_t capacity_;
  // A deque: growing it never moves a node, so the views in index_ stay valid.
  std::deque<Node> nodes_;
  std::vector<uint32_t> free_;
  std::unordered_map<std::string_view, uint32_t> index_;  // views into nodes_[i].token
  uint32_t head_ = kNone, tail_ = kNone;                  // most / least recently used
  uint64_t hits_ = 0, misses_ = 0;
};

}  // namespace gw::jwt
