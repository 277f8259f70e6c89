// The owning byte buffer of the data path, and the fixed-size slices behind it.
//
// Contract:
// - Slices come from a per-thread pool (SlicePool::local()), so steady-state traffic does
//   no malloc. Everything here is single-threaded: a Buffer, its slices and the pool it
//   draws from belong to one worker thread and MUST NOT cross threads.
// - A Buffer is a queue of segments. A segment either lives in a pooled slice (owned,
//   reference-counted per slice) or is external: a view the caller promises stays valid
//   until the next call to internalize() (used to hand bytes just read from one socket to
//   another's writev without copying them; whatever the kernel did not take is copied
//   before the source memory is reused).
// - An empty Buffer holds no slice: memory is released as soon as data is drained, so idle
//   connections cost nothing here.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/unused_count.h"

namespace gw {

constexpr size_t kSliceSize = 16 * 1024;
// The block a body in flight is read into (InputBlock::reserveBulk).
constexpr size_t kBulkBlockSize = 64 * 1024;

struct Slice {
  uint32_t refs = 0;
  uint32_t used = 0;  // bytes handed out by appends, from the start
  Slice* next_free = nullptr;
  char data[kSliceSize];
};

class SlicePool {
 public:
  static SlicePool& local();  // the calling thread's pool
  Slice* acquire();
  void release(Slice* s);
  size_t freeCount() const { return free_count_; }
  // Frees the slices no acquire() needed since the last call; returns how many.
  size_t releaseUnused();
  ~SlicePool();

 private:
  Slice* free_ = nullptr;  // most recently released first
  size_t free_count_ = 0;
  UnusedCount unused_;
};

class Buffer {
 public:
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { clear(); }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

  void append(const void* data, size_t n) {
    if (n == 0) return;  // an empty view may carry a null pointer, which memcpy must not see
    // Fast path: the bytes fit behind the last owned segment (most header lines).
    if (n <= tail_room_) {
      std::memcpy(tail_ptr_, data, n);
      advanceTail(n);
      return;
    }
    appendSlow(data, n);
  }
  void append(std::string_view s) { append(s.data(), s.size()); }
  void appendDecimal(uint64_t v);
  void appendHex(uint64_t v);  // lowercase, no prefix: a chunk size
  // "name: value\r\n": one bounds check and one bookkeeping update for the whole line when
  // it fits behind the tail (most header lines), instead of four appends.
  void appendFieldLine(std::string_view name, std::string_view value) {
    size_t n = name.size() + value.size() + 4;
    if (n > tail_room_) {
      append(name);
      append(": ", 2);
      append(value);
      append("\r\n", 2);
      return;
    }
    char* p = tail_ptr_;
    if (!name.empty()) std::memcpy(p, name.data(), name.size());
    p += name.size();
    p[0] = ':';
    p[1] = ' ';
    p += 2;
    if (!value.empty()) std::memcpy(p, value.data(), value.size());
    p += value.size();
    p[0] = '\r';
    p[1] = '\n';
    advanceTail(n);
  }
  // Returns space for at most `max` contiguous bytes at the tail (at least 1); commit()
  // what was written. Used to format numbers and headers in place.
  char* reserve(size_t min, size_t* got);
  void commit(size_t n);
  void appendExternal(const void* data, size_t n);
  // Copies every external segment into owned slices.
  void internalize();
  bool hasExternal() const { return external_ > 0; }

  // Fills up to max iovecs from the front; returns how many.
  size_t peek(iovec* iov, size_t max) const;
  void drain(size_t n);
  void clear();
  // Moves all of `other` to the tail of this buffer.
  void moveFrom(Buffer& other);
  // Moves the first n bytes of `other` (n <= other.size()) to the tail of this buffer,
  // sharing slices rather than copying (external segments stay views).
  void moveFront(Buffer& other, size_t n);
  // Appends `other`'s bytes as external segments, without copying them: `other` keeps
  // them and must not change until this buffer's next internalize().
  void appendViews(const Buffer& other);
  std::string toString() const;  // tests and small bodies only

 private:
  struct Segment {
    char* data;
    uint32_t len;
    Slice* slice;  // null: external
  };
  Slice* tailSlice();
  void pushOwned(Slice* s, char* p, size_t n);
  void appendSlow(const void* data, size_t n);
  void setTail();  // recomputes the fast-path window from the last segment
  // Counts n bytes just written at tail_ptr_ (n <= tail_room_) into the last segment.
  void advanceTail(size_t n) {
    tail_ptr_ += n;
    tail_room_ -= n;
    Segment& last = segments_.back();
    last.len += uint32_t(n);
    last.slice->used += uint32_t(n);
    size_ += n;
  }
  void forgetSegments();  // after every segment was released or drained
  static constexpr size_t kKeptSegments = 64;

  std::vector<Segment> segments_;
  size_t head_ = 0;  // first live segment
  size_t size_ = 0;
  size_t external_ = 0;
  char* tail_ptr_ = nullptr;  // end of the last segment when it is owned and extensible
  size_t tail_room_ = 0;      // free bytes after it in its slice (0: take the slow path)
};

// A contiguous input area for one connection: reads are appended, parsing consumes from
// the front. Small by default (one pooled slice); grown to a heap block only when a
// request head larger than a slice must be kept contiguous.
class InputBlock {
 public:
  InputBlock() = default;
  InputBlock(const InputBlock&) = delete;
  InputBlock& operator=(const InputBlock&) = delete;
  ~InputBlock() { release(); }

  char* data() { return data_; }
  const char* data() const { return data_; }
  size_t length() const { return len_; }
  size_t capacity() const { return cap_; }
  size_t consumed() const { return consumed_; }
  size_t unconsumed() const { return len_ - consumed_; }
  bool allocated() const { return data_ != nullptr; }

  // Space for the next read; grows (keeping content) only if the block is full and
  // capacity < limit. Returns nullptr if full at the limit, or full while pinned.
  char* writable(size_t* n, size_t limit);
  // An empty, unallocated block takes kBulkBlockSize bytes from the heap instead of a
  // slice: for bulk transfers, where fewer, larger reads mean fewer syscalls and wakeups.
  void reserveBulk();
  // While pinned the bytes never move (no compaction, no growth): views into them stay
  // valid, e.g. a request head while a filter waits.
  void setPinned(bool pinned) { pinned_ = pinned; }
  void added(size_t n) { len_ += n; }
  void consume(size_t n) { consumed_ += n; }
  // Drops consumed bytes (moving the rest to the front), releasing the block when empty.
  // Offsets into the block are invalid afterwards.
  void compact();
  void release();

 private:
  void freeData();  // data_ back to the pool or the heap; data_ is left dangling

  // One per connection, so kept small: the slice is found from its data, not stored.
  char* data_ = nullptr;
  uint32_t len_ = 0;
  uint32_t consumed_ = 0;
  uint32_t cap_ = 0;
  bool pinned_ = false;
  bool in_slice_ = false;  // data_ is a pooled slice's, else a heap block (or null)
};

}  // namespace gw
