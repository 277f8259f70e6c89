// The bounded queue between the workers, which finish spans, and the exporter thread,
// which sends them in batches.
//
// Contract:
// - Any thread. One short lock per push or take: a span is handed over by swapping strings,
//   so no span is copied under the lock and a worker gets back a string whose capacity the
//   next span reuses (steady traffic allocates nothing once every slot has been used).
// - At most capacity() spans wait; push() refuses beyond (the caller counts the drop), so
//   memory stays bounded whatever the collector does.
#pragma once

#include <cstddef>
#include <mutex>
#include <string>
#include <vector>

namespace gw::tracing {

class SpanQueue {
 public:
  explicit SpanQueue(size_t capacity) : slots_(capacity) {}

  // Takes `span` (leaving `out` with an empty string of some capacity) and returns the
  // number now waiting, or 0 when the queue was full and `span` was left as it was.
  size_t push(std::string& span);
  // Appends up to `max` spans to `out`, oldest first; returns how many. One consumer at a
  // time: the spans are swapped out under the lock and copied after it, so that a worker
  // never waits for a batch's copy.
  size_t takeInto(std::string& out, size_t max);
  size_t size() const;
  size_t capacity() const;
  // A new bound; spans beyond it (oldest kept) are dropped and their number returned.
  size_t resize(size_t capacity);

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> slots_;  // a ring
  size_t head_ = 0;                 // the oldest
  size_t count_ = 0;
  std::vector<std::string> taken_;  // the consumer's: empty strings that go into the slots
};

}  // namespace gw::tracing
