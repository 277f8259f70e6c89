#include "gateway/buffer.h"

#include <cassert>
#include <charconv>
#include <cstdlib>
#include <cstring>

namespace gw {

namespace {
// Free slices a worker keeps for reuse; beyond this they go back to the allocator so
// a burst does not pin memory forever (64 x 16 KiB = 1 MiB per worker).
constexpr size_t kMaxFreeSlices = 64;
}  // namespace

SlicePool& SlicePool::local() {
  thread_local SlicePool pool;
  return pool;
}

SlicePool::~SlicePool() {
  while (free_) {
    Slice* s = free_;
    free_ = s->next_free;
    delete s;
  }
}

Slice* SlicePool::acquire() {
  Slice* s = free_;
  if (s) {
    free_ = s->next_free;
    --free_count_;
    unused_.taken(free_count_);
  } else {
    s = new Slice;
  }
  s->refs = 0;
  s->used = 0;
  s->next_free = nullptr;
  return s;
}

size_t SlicePool::releaseUnused() {
  size_t unused = unused_.endPeriod(free_count_);
  if (unused == 0) return 0;
  // The list is a stack: the slices nobody took are the deepest ones.
  Slice** link = &free_;
  for (size_t kept = free_count_ - unused; kept > 0; --kept) link = &(*link)->next_free;
  Slice* s = *link;
  *link = nullptr;
  while (s) {
    Slice* next = s->next_free;
    delete s;
    s = next;
  }
  free_count_ -= unused;
  return unused;
}

void SlicePool::release(Slice* s) {
  if (free_count_ >= kMaxFreeSlices) {
    delete s;
    return;
  }
  s->next_free = free_;
  free_ = s;
  ++free_count_;
}

Slice* Buffer::tailSlice() {
  if (head_ < segments_.size()) {
    const Segment& last = segments_.back();
    if (last.slice && last.slice->used < kSliceSize &&
        last.data + last.len == last.slice->data + last.slice->used) {
      return last.slice;
    }
  }
  return nullptr;
}

void Buffer::pushOwned(Slice* s, char* p, size_t n) {
  if (head_ < segments_.size()) {
    Segment& last = segments_.back();
    if (last.slice == s && last.data + last.len == p) {
      last.len += uint32_t(n);
      size_ += n;
      return;
    }
  }
  ++s->refs;
  segments_.push_back({p, uint32_t(n), s});
  size_ += n;
}

void Buffer::setTail() {
  tail_ptr_ = nullptr;
  tail_room_ = 0;
  if (head_ >= segments_.size()) return;
  const Segment& last = segments_.back();
  if (last.slice && last.data + last.len == last.slice->data + last.slice->used) {
    tail_ptr_ = last.data + last.len;
    tail_room_ = kSliceSize - last.slice->used;
  }
}

void Buffer::appendSlow(const void* data, size_t n) {
  const char* src = static_cast<const char*>(data);
  while (n > 0) {
    Slice* s = tailSlice();
    if (!s) s = SlicePool::local().acquire();
    size_t room = kSliceSize - s->used;
    size_t take = n < room ? n : room;
    char* p = s->data + s->used;
    std::memcpy(p, src, take);
    s->used += uint32_t(take);
    pushOwned(s, p, take);
    src += take;
    n -= take;
  }
  setTail();
}

char* Buffer::reserve(size_t min, size_t* got) {
  assert(min <= kSliceSize);
  Slice* s = tailSlice();
  if (!s || kSliceSize - s->used < min) {
    s = SlicePool::local().acquire();
    // Park the fresh slice as a zero-length segment so commit() finds it.
    ++s->refs;
    segments_.push_back({s->data, 0, s});
  }
  *got = kSliceSize - s->used;
  tail_room_ = 0;  // the caller writes there now
  return s->data + s->used;
}

void Buffer::commit(size_t n) {
  Segment& last = segments_.back();
  assert(last.slice && last.data + last.len == last.slice->data + last.slice->used);
  last.len += uint32_t(n);
  last.slice->used += uint32_t(n);
  size_ += n;
  setTail();
}

void Buffer::appendDecimal(uint64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  append(buf, size_t(r.ptr - buf));
}

void Buffer::appendHex(uint64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v, 16);
  append(buf, size_t(r.ptr - buf));
}

void Buffer::appendExternal(const void* data, size_t n) {
  if (n == 0) return;
  segments_.push_back({const_cast<char*>(static_cast<const char*>(data)), uint32_t(n), nullptr});
  size_ += n;
  ++external_;
  tail_ptr_ = nullptr;
  tail_room_ = 0;
}

void Buffer::internalize() {
  if (external_ == 0) return;
  // Rebuild the queue in order, copying external segments; owned segments move as they
  // are (their slices' reference counts carry over).
  std::vector<Segment> old;
  old.swap(segments_);
  size_t first = head_;
  head_ = 0;
  size_ = 0;
  external_ = 0;
  segments_.reserve(old.size() - first);
  tail_ptr_ = nullptr;
  tail_room_ = 0;
  for (size_t i = first; i < old.size(); ++i) {
    Segment& seg = old[i];
    if (seg.slice) {
      segments_.push_back(seg);
      size_ += seg.len;
      setTail();
    } else {
      append(seg.data, seg.len);
    }
  }
}

size_t Buffer::peek(iovec* iov, size_t max) const {
  size_t n = 0;
  for (size_t i = head_; i < segments_.size() && n < max; ++i) {
    if (segments_[i].len == 0) continue;
    iov[n].iov_base = segments_[i].data;
    iov[n].iov_len = segments_[i].len;
    ++n;
  }
  return n;
}

void Buffer::drain(size_t n) {
  assert(n <= size_);
  size_ -= n;
  while (head_ < segments_.size()) {
    Segment& seg = segments_[head_];
    if (n < seg.len) {
      seg.data += n;
      seg.len -= uint32_t(n);
      break;
    }
    n -= seg.len;
    if (seg.slice) {
      if (--seg.slice->refs == 0) SlicePool::local().release(seg.slice);
    } else {
      --external_;
    }
    ++head_;
  }
  if (head_ == segments_.size()) {
    forgetSegments();
  } else if (head_ > 32 && head_ * 2 > segments_.size()) {
    segments_.erase(segments_.begin(), segments_.begin() + long(head_));
    head_ = 0;
  }
}

void Buffer::clear() {
  for (size_t i = head_; i < segments_.size(); ++i) {
    if (segments_[i].slice && --segments_[i].slice->refs == 0) {
      SlicePool::local().release(segments_[i].slice);
    }
  }
  forgetSegments();
  size_ = 0;
  external_ = 0;
}

void Buffer::forgetSegments() {
  // The array is kept for the next message unless a burst grew it: a pooled request's
  // output buffer is cleared after every response, and would otherwise allocate twice
  // per response (its head's segment, then its body's).
  if (segments_.capacity() > kKeptSegments) {
    std::vector<Segment>().swap(segments_);
  } else {
    segments_.clear();
  }
  head_ = 0;
  tail_ptr_ = nullptr;
  tail_room_ = 0;
}

void Buffer::moveFront(Buffer& other, size_t n) {
  if (n >= other.size_) {
    moveFrom(other);
    return;
  }
  size_t left = n;
  for (size_t i = other.head_; i < other.segments_.size() && left > 0; ++i) {
    const Segment& seg = other.segments_[i];
    if (seg.len == 0) continue;
    uint32_t take = uint32_t(std::min<size_t>(left, seg.len));
    if (seg.slice) {
      ++seg.slice->refs;  // other.drain() below gives back its own reference
    } else {
      ++external_;
    }
    segments_.push_back({seg.data, take, seg.slice});
    size_ += take;
    left -= take;
  }
  other.drain(n);
  // The last segment ends before `other`'s bytes in the same slice, or in a slice `other`
  // may still extend: this buffer never appends behind it.
  tail_ptr_ = nullptr;
  tail_room_ = 0;
}

void Buffer::moveFrom(Buffer& other) {
  for (size_t i = other.head_; i < other.segments_.size(); ++i) {
    segments_.push_back(other.segments_[i]);
  }
  size_ += other.size_;
  external_ += other.external_;
  std::vector<Segment>().swap(other.segments_);
  other.head_ = 0;
  other.size_ = 0;
  other.external_ = 0;
  other.tail_ptr_ = nullptr;
  other.tail_room_ = 0;
  setTail();
}

void Buffer::appendViews(const Buffer& other) {
  for (size_t i = other.head_; i < other.segments_.size(); ++i) {
    appendExternal(other.segments_[i].data, other.segments_[i].len);
  }
}

std::string Buffer::toString() const {
  std::string out;
  out.reserve(size_);
  for (size_t i = head_; i < segments_.size(); ++i) out.append(segments_[i].data, segments_[i].len);
  return out;
}

char* InputBlock::writable(size_t* n, size_t limit) {
  if (!data_) {
    data_ = SlicePool::local().acquire()->data;
    in_slice_ = true;
    cap_ = kSliceSize;
  }
  if (len_ == cap_) {
    if (pinned_) return nullptr;
    if (consumed_ > 0) {
      compact();
      return writable(n, limit);
    }
    if (cap_ >= limit) return nullptr;
    size_t bigger = cap_ * 2 < limit ? cap_ * 2 : limit;
    char* grown = static_cast<char*>(std::malloc(bigger));
    if (!grown) std::abort();  // out of memory is a broken invariant, not an input error
    std::memcpy(grown, data_, len_);
    freeData();
    data_ = grown;
    cap_ = uint32_t(bigger);
  }
  *n = cap_ - len_;
  return data_ + len_;
}

void InputBlock::reserveBulk() {
  if (data_) return;
  data_ = static_cast<char*>(std::malloc(kBulkBlockSize));
  if (!data_) std::abort();
  cap_ = uint32_t(kBulkBlockSize);
}

void InputBlock::compact() {
  if (!data_) return;
  if (consumed_ >= len_) {
    release();
    return;
  }
  if (consumed_ > 0) {
    std::memmove(data_, data_ + consumed_, len_ - consumed_);
    len_ -= consumed_;
    consumed_ = 0;
  }
}

void InputBlock::freeData() {
  if (in_slice_) {
    SlicePool::local().release(reinterpret_cast<Slice*>(data_ - offsetof(Slice, data)));
    in_slice_ = false;
  } else {
    std::free(data_);
  }
}

void InputBlock::release() {
  freeData();
  data_ = nullptr;
  len_ = consumed_ = cap_ = 0;
}

}  // namespace gw
