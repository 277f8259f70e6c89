// How many of a free list's items a period went without: what a burst left behind.
//
// A per-worker pool (requests, slices) keeps what traffic handed back so that steady
// traffic allocates nothing; after a burst it would keep the burst's worth forever. The
// pool reports its free count whenever it hands one out; at the end of each period the
// worker releases the items that stayed free all period long, so steady traffic still
// finds its pool warm while a spike's memory goes back within two periods.
#pragma once

#include <algorithm>
#include <cstddef>

namespace gw {

class UnusedCount {
 public:
  // After an item was taken; free_now is what is left in the pool.
  void taken(size_t free_now) { low_ = std::min(low_, free_now); }
  // Ends the period: returns how many items stayed free throughout it, which the caller
  // releases, and starts the next period with what remains.
  size_t endPeriod(size_t free_now) {
    size_t unused = std::min(low_, free_now);
    low_ = free_now - unused;
    return unused;
  }

 private:
  size_t low_ = 0;
};

}  // namespace gw
