// HTTP header lists and the per-request string arena behind them.
//
// Contract:
// - A HeaderList holds views. Names and values either point into memory that outlives
//   the request (the connection's input block while the head is processed, the config
//   snapshot) or were copied into the request's StringArena by add()/set().
// - Lookups are ASCII case-insensitive; order of insertion is kept (it is what goes on
//   the wire).
// - Single-threaded: owned by one request on one worker.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

namespace gw {

// Bump allocator for per-request strings. reset() keeps the first block, so a pooled
// request allocates nothing once warm.
class StringArena {
 public:
  StringArena() = default;
  StringArena(const StringArena&) = delete;
  StringArena& operator=(const StringArena&) = delete;

  std::string_view copy(std::string_view s);
  // A copy in ASCII lower case: HTTP/2 field names (RFC 9113 §8.2.1).
  std::string_view copyLowerCase(std::string_view s);
  // Returns writable storage for n bytes (valid until reset()).
  char* allocate(size_t n);
  void reset();
  size_t capacity() const;

 private:
  struct Block {
    std::unique_ptr<char[]> data;
    size_t size = 0;
  };
  std::vector<Block> blocks_;
  size_t used_ = 0;  // in blocks_.back()
};

// ASCII case-insensitive equality; inline because the request path calls it for every
// header against a handful of names, and most calls end at the length check.
inline bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    unsigned char x = static_cast<unsigned char>(a[i]), y = static_cast<unsigned char>(b[i]);
    if (x == y) continue;
    if ((x | 0x20) != (y | 0x20) || (x | 0x20) < 'a' || (x | 0x20) > 'z') return false;
  }
  return true;
}

struct Header {
  std::string_view name;
  std::string_view value;
};

class HeaderList {
 public:
  explicit HeaderList(StringArena* arena = nullptr) : arena_(arena) {}
  void setArena(StringArena* arena) { arena_ = arena; }

  // The first value of `name`, or an empty view with found=false.
  std::string_view get(std::string_view name, bool* found = nullptr) const;
  bool has(std::string_view name) const;
  size_t count(std::string_view name) const;

  // Copies name and value into the arena.
  void add(std::string_view name, std::string_view value);
  // Adds views as they are: the caller guarantees they outlive the request.
  void addRef(std::string_view name, std::string_view value) { fields_.push_back({name, value}); }
  // Removes every `name`, then adds one.
  void set(std::string_view name, std::string_view value);
  void setRef(std::string_view name, std::string_view value);
  // Removes every field called `name`; returns how many.
  size_t remove(std::string_view name);
  // Removes every field called any of `names`, in one pass over the fields (a filter that
  // sets several fields scans once, not once per name); returns how many.
  template <typename Names>
  size_t removeAny(const Names& names) {
    auto named = [&](const Header& h) {
      for (const auto& n : names) {
        if (equalsIgnoreCase(h.name, n)) return true;
      }
      return false;
    };
    auto it = std::remove_if(fields_.begin(), fields_.end(), named);
    size_t n = size_t(fields_.end() - it);
    fields_.erase(it, fields_.end());
    return n;
  }

  void clear() { fields_.clear(); }
  // Exchanges the fields (not the arenas): hands a parsed head's fields on without copying
  // them; both arrays keep their capacity for the next message.
  void swapFields(HeaderList& other) { fields_.swap(other.fields_); }
  size_t size() const { return fields_.size(); }
  bool empty() const { return fields_.empty(); }
  const Header& operator[](size_t i) const { return fields_[i]; }
  Header& operator[](size_t i) { return fields_[i]; }
  std::vector<Header>::const_iterator begin() const { return fields_.begin(); }
  std::vector<Header>::const_iterator end() const { return fields_.end(); }
  std::vector<Header>& fields() { return fields_; }

 private:
  std::vector<Header> fields_;
  StringArena* arena_;
};

}  // namespace gw
