#include "gateway/tracing/span_queue.h"

#include <algorithm>

namespace gw::tracing {

namespace {
// A slot that once held an unusually large span gives its memory back rather than keep it
// for every later span: the queue's footprint follows the usual span size.
constexpr size_t kKeptCapacity = 4096;
}  // namespace

size_t SpanQueue::push(std::string& span) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (count_ == slots_.size()) return 0;
  std::string& slot = slots_[(head_ + count_) % slots_.size()];
  slot.swap(span);
  span.clear();
  return ++count_;
}

size_t SpanQueue::takeInto(std::string& out, size_t max) {
  size_t n = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    n = std::min(max, count_);
    if (taken_.size() < n) taken_.resize(n);
    for (size_t i = 0; i < n; ++i) {
      slots_[head_].swap(taken_[i]);  // the slot gets an empty string, kept capacity
      head_ = (head_ + 1) % slots_.size();
    }
    count_ -= n;
  }
  for (size_t i = 0; i < n; ++i) {
    out += taken_[i];
    taken_[i].clear();
    if (taken_[i].capacity() > kKeptCapacity) taken_[i].shrink_to_fit();
  }
  return n;
}

size_t SpanQueue::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return count_;
}

size_t SpanQueue::capacity() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return slots_.size();
}

size_t SpanQueue::resize(size_t capacity) {
  if (capacity == 0) capacity = 1;
  std::lock_guard<std::mutex> lock(mutex_);
  if (capacity == slots_.size()) return 0;
  std::vector<std::string> slots(capacity);
  size_t kept = std::min(count_, capacity);
  for (size_t i = 0; i < kept; ++i) slots[i].swap(slots_[(head_ + i) % slots_.size()]);
  size_t dropped = count_ - kept;
  slots_.swap(slots);
  head_ = 0;
  count_ = kept;
  return dropped;
}

}  // namespace gw::tracing
