// Arena storage for n objects of a trivial type, for the rate limiter's per-request arrays
// (statuses, Redis arguments): valid until the request's arena is reset, never freed alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>

#include "gateway/headers.h"

namespace gw::rate_limit {

// The arena does not align: the pointer is rounded up inside a slightly larger block.
template <class T>
T* arenaArray(StringArena& arena, size_t n) {
  char* raw = arena.allocate(n * sizeof(T) + alignof(T) - 1);
  auto p = (reinterpret_cast<uintptr_t>(raw) + alignof(T) - 1) & ~uintptr_t(alignof(T) - 1);
  T* out = reinterpret_cast<T*>(p);
  for (size_t i = 0; i < n; ++i) new (out + i) T();
  return out;
}

}  // namespace gw::rate_limit
