#include "gateway/headers.h"

#include <algorithm>

namespace gw {

namespace {
constexpr size_t kFirstBlock = 1024;
}  // namespace


char* StringArena::allocate(size_t n) {
  if (blocks_.empty() || blocks_.back().size - used_ < n) {
    size_t size = std::max(n, blocks_.empty() ? kFirstBlock : blocks_.back().size * 2);
    blocks_.push_back({std::make_unique<char[]>(size), size});
    used_ = 0;
  }
  char* p = blocks_.back().data.get() + used_;
  used_ += n;
  return p;
}

std::string_view StringArena::copy(std::string_view s) {
  if (s.empty()) return {};
  char* p = allocate(s.size());
  std::memcpy(p, s.data(), s.size());
  return {p, s.size()};
}

std::string_view StringArena::copyLowerCase(std::string_view s) {
  if (s.empty()) return {};
  char* p = allocate(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    p[i] = c >= 'A' && c <= 'Z' ? char(c + 32) : c;
  }
  return {p, s.size()};
}

void StringArena::reset() {
  if (blocks_.size() > 1) {
    // Keep the largest block so a request of the same shape needs no allocation next time.
    auto largest = std::max_element(blocks_.begin(), blocks_.end(),
                                    [](const Block& a, const Block& b) { return a.size < b.size; });
    Block keep = std::move(*largest);
    blocks_.clear();
    blocks_.push_back(std::move(keep));
  }
  used_ = 0;
}

size_t StringArena::capacity() const {
  size_t total = 0;
  for (const auto& b : blocks_) total += b.size;
  return total;
}

std::string_view HeaderList::get(std::string_view name, bool* found) const {
  for (const auto& h : fields_) {
    if (equalsIgnoreCase(h.name, name)) {
      if (found) *found = true;
      return h.value;
    }
  }
  if (found) *found = false;
  return {};
}

bool HeaderList::has(std::string_view name) const {
  bool found;
  get(name, &found);
  return found;
}

size_t HeaderList::count(std::string_view name) const {
  size_t n = 0;
  for (const auto& h : fields_) n += equalsIgnoreCase(h.name, name);
  return n;
}

void HeaderList::add(std::string_view name, std::string_view value) {
  if (arena_) {
    fields_.push_back({arena_->copy(name), arena_->copy(value)});
  } else {
    fields_.push_back({name, value});
  }
}

void HeaderList::set(std::string_view name, std::string_view value) {
  remove(name);
  add(name, value);
}

void HeaderList::setRef(std::string_view name, std::string_view value) {
  remove(name);
  addRef(name, value);
}

size_t HeaderList::remove(std::string_view name) {
  auto it = std::remove_if(fields_.begin(), fields_.end(),
                           [&](const Header& h) { return equalsIgnoreCase(h.name, name); });
  size_t n = size_t(fields_.end() - it);
  fields_.erase(it, fields_.end());
  return n;
}

}  // namespace gw
