// A fast seeded 64-bit hash for bucket keys (client addresses, header values, claims).
//
// The in-process table identifies a bucket by this hash alone (no key bytes stored), so the
// seed is secret and random per process: a client cannot craft two header values that
// share a bucket. Built on the 64x64->128 multiply-fold of wyhash (public domain).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace gw::rate_limit {

namespace hash_detail {

constexpr uint64_t kP0 = 0xa0761d6478bd642full;
constexpr uint64_t kP1 = 0xe7037ed1a0b428dbull;
constexpr uint64_t kP2 = 0x8ebc6af09c88c6e3ull;

inline uint64_t fold(uint64_t a, uint64_t b) {
  __uint128_t r = static_cast<__uint128_t>(a) * b;
  return static_cast<uint64_t>(r) ^ static_cast<uint64_t>(r >> 64);
}

inline uint64_t read64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

inline uint64_t read32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

}  // namespace hash_detail

inline uint64_t hashBytes(const void* data, size_t n, uint64_t seed) {
  using namespace hash_detail;
  const auto* p = static_cast<const uint8_t*>(data);
  seed ^= fold(seed ^ kP0, kP1);
  uint64_t a = 0;
  uint64_t b = 0;
  if (n <= 16) {
    if (n >= 4) {
      // Two overlapping reads cover 4..16 bytes without a byte loop.
      size_t mid = (n >> 3) << 2;
      a = (read32(p) << 32) | read32(p + mid);
      b = (read32(p + n - 4) << 32) | read32(p + n - 4 - mid);
    } else if (n > 0) {
      a = (uint64_t(p[0]) << 16) | (uint64_t(p[n >> 1]) << 8) | p[n - 1];
    }
  } else {
    size_t i = n;
    while (i > 16) {
      seed = fold(read64(p) ^ kP1, read64(p + 8) ^ seed);
      p += 16;
      i -= 16;
    }
    a = read64(p + i - 16);
    b = read64(p + i - 8);
  }
  return fold(kP1 ^ n, fold(a ^ kP1, b ^ seed ^ kP2));
}

inline uint64_t hashText(std::string_view s, uint64_t seed) {
  return hashBytes(s.data(), s.size(), seed);
}

// The process's secret seed (random, drawn once).
uint64_t processHashSeed();

}  // namespace gw::rate_limit
