#include "filters/jwt/token_cache.h"

#include <algorithm>

namespace gw::jwt {

TokenCache::TokenCache(size_t capacity) : capacity_(std::max<size_t>(1, capacity)) {
  index_.reserve(capacity_);
}

void TokenCache::unlink(uint32_t i) {
  Node& n = nodes_[i];
  (n.prev == kNone ? head_ : nodes_[n.prev].next) = n.next;
  (n.next == kNone ? tail_ : nodes_[n.next].prev) = n.prev;
  n.prev = n.next = kNone;
}

void TokenCache::pushFront(uint32_t i) {
  Node& n = nodes_[i];
  n.prev = kNone;
  n.next = head_;
  if (head_ != kNone) nodes_[head_].prev = i;
  head_ = i;
  if (tail_ == kNone) tail_ = i;
}

void TokenCache::erase(uint32_t i) {
  Node& n = nodes_[i];
  index_.erase(std::string_view(n.token));
  unlink(i);
  n.identity.reset();
  // Tokens are credentials: do not leave them lying in freed slots longer than needed.
  std::fill(n.token.begin(), n.token.end(), '\0');
  n.token.clear();
  free_.push_back(i);
}

const std::shared_ptr<const TokenIdentity>* TokenCache::find(std::string_view token, uint64_t stamp,
                                                             uint64_t now_ms) {
  auto it = index_.find(token);
  if (it == index_.end()) {
    ++misses_;
    return nullptr;
  }
  uint32_t i = it->second;
  Node& n = nodes_[i];
  if (n.stamp != stamp || now_ms >= n.valid_until_ms) {
    erase(i);
    ++misses_;
    return nullptr;
  }
  if (head_ != i) {
    unlink(i);
    pushFront(i);
  }
  ++hits_;
  return &n.identity;
}

void TokenCache::insert(std::string_view token, uint64_t stamp, uint64_t now_ms,
                        std::shared_ptr<const TokenIdentity> identity) {
  if (!identity) return;
  uint64_t valid_until = identity->expiresAtMs();
  if (now_ms + kMaxUnboundedMs < valid_until) valid_until = now_ms + kMaxUnboundedMs;
  if (auto it = index_.find(token); it != index_.end()) erase(it->second);
  uint32_t i;
  if (!free_.empty()) {
    i = free_.back();
    free_.pop_back();
  } else if (nodes_.size() < capacity_) {
    i = uint32_t(nodes_.size());
    nodes_.emplace_back();
  } else {
    i = tail_;
    erase(i);
    free_.pop_back();
  }
  Node& n = nodes_[i];
  n.token.assign(token);
  n.stamp = stamp;
  n.valid_until_ms = valid_until;
  n.identity = std::move(identity);
  pushFront(i);
  index_.emplace(std::string_view(n.token), i);
}

void TokenCache::clear() {
  while (head_ != kNone) erase(head_);
}

}  // namespace gw::jwt
