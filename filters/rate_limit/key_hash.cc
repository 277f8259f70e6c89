#include "filters/rate_limit/key_hash.h"

#include <sys/random.h>

#include <chrono>

namespace gw::rate_limit {

uint64_t processHashSeed() {
  static const uint64_t seed = [] {
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, 0) != sizeof s) {
      // No entropy source: the seed still differs per run; only resistance to crafted
      // collisions suffers.
      s = uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()) ^
          uint64_t(std::chrono::system_clock::now().time_since_epoch().count()) *
              0x9e3779b97f4a7c15ull;
    }
    return s;
  }();
  return seed;
}

}  // namespace gw::rate_limit
