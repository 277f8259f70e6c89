// A per-worker pool of one kind of per-request object (an HTTP/1.1 request, an HTTP/2
// stream): steady traffic reuses them and allocates nothing; what a burst left behind
// goes back to the heap within two housekeeping periods (see UnusedCount).
//
// Contract: one thread only. T has recycle(), called on release.
#pragma once

#include <cstddef>
#include <vector>

#include "gateway/unused_count.h"

namespace gw {

template <class T>
class FreeList {
 public:
  explicit FreeList(size_t max_free) : max_free_(max_free) {}
  FreeList(const FreeList&) = delete;
  FreeList& operator=(const FreeList&) = delete;
  ~FreeList() {
    for (T* t : free_) delete t;
  }

  T* acquire() {
    if (free_.empty()) return new T();
    T* t = free_.back();
    free_.pop_back();
    unused_.taken(free_.size());
    return t;
  }
  void release(T* t) {
    t->recycle();
    if (free_.size() >= max_free_) {
      delete t;
      return;
    }
    free_.push_back(t);
  }
  // Frees what stayed unused for a whole period; returns how many.
  size_t trim() {
    size_t n = unused_.endPeriod(free_.size());
    for (size_t i = 0; i < n; ++i) delete free_[i];
    free_.erase(free_.begin(), free_.begin() + std::ptrdiff_t(n));
    return n;
  }

 private:
  std::vector<T*> free_;  // a stack: the most recently released last
  UnusedCount unused_;
  size_t max_free_;
};

}  // namespace gw
