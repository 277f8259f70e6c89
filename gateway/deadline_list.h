// Timeouts without a timer per connection.
//
// Every entry of one DeadlineList has the same duration, so appending at the tail keeps
// the list sorted by deadline and the worker needs one uv_timer for the head of each
// list. An idle connection then costs two pointers and a deadline instead of a 152-byte
// uv_timer_t. Single-threaded (one worker).
#pragma once

#include <cstdint>

namespace gw {

// Which of the worker's deadline lists a connection is in.
enum class DeadlineKind : uint8_t { None, HeaderRead, BodyRead, Idle, WriteStall };

struct DeadlineNode {
  DeadlineNode* prev = nullptr;
  DeadlineNode* next = nullptr;
  uint64_t deadline_ms = 0;
  bool linked() const { return prev != nullptr; }
};

class DeadlineList {
 public:
  DeadlineList() { head_.prev = head_.next = &head_; }
  DeadlineList(const DeadlineList&) = delete;
  DeadlineList& operator=(const DeadlineList&) = delete;

  void push(DeadlineNode* n, uint64_t deadline_ms) {
    if (n->linked()) unlink(n);
    n->deadline_ms = deadline_ms;
    n->prev = head_.prev;
    n->next = &head_;
    head_.prev->next = n;
    head_.prev = n;
  }
  static void unlink(DeadlineNode* n) {
    if (!n->linked()) return;
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = nullptr;
  }
  DeadlineNode* front() { return head_.next == &head_ ? nullptr : head_.next; }
  bool empty() const { return head_.next == &head_; }

 private:
  DeadlineNode head_;
};

}  // namespace gw
