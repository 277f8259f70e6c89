#include "gateway/http1/http_head.h"

#include <algorithm>

#include "gateway/http_util.h"

namespace gw {

TrailerCollector::Result TrailerCollector::onFieldComplete(HeaderList& into, size_t max_fields) {
  std::string_view value = value_;
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  // A bare CR or a NUL is not read alike by every parser: the message is refused, as a
  // head with one would be.
  bool clean = std::none_of(value.begin(), value.end(), [](char c) {
    return (static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f;
  });
  // llhttp lets some malformed names through in a trailer section ("Name :"), where the
  // head's checks (headIsUnambiguous) do not run: the name must be a token.
  bool token = !name_.empty() && std::all_of(name_.begin(), name_.end(), [](char c) {
    return isFieldNameChar(static_cast<unsigned char>(c));
  });
  if (!clean || !token) return Result::Malformed;
  if (forwardableTrailer(name_) && into.size() < max_fields) into.add(name_, value);
  name_.clear();
  value_.clear();
  return Result::Ok;
}

}  // namespace gw
