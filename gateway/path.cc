#include "gateway/path.h"

#include <array>
#include <cstdint>

#include "gateway/headers.h"

namespace gw {

namespace {

enum CharClass : uint8_t {
  kUnreserved = 1,  // RFC 3986 §2.3: decoded when percent-encoded
  kPathByte = 2,    // may stand literally in a normalised path
  kAuthority = 4,   // may stand in an absolute-form authority
};

constexpr std::array<uint8_t, 256> makeClasses() {
  std::array<uint8_t, 256> t{};
  for (int c = 0x21; c < 0x7f; ++c) t[c] |= kPathByte;
  // '?' and '#' end a path; '\' is a separator to some upstreams.
  for (char c : {'?', '#', '\\'}) t[uint8_t(c)] &= uint8_t(~kPathByte);
  for (int c = 'a'; c <= 'z'; ++c) t[c] |= kUnreserved | kAuthority;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] |= kUnreserved | kAuthority;
  for (int c = '0'; c <= '9'; ++c) t[c] |= kUnreserved | kAuthority;
  for (char c : {'-', '.', '_', '~'}) t[uint8_t(c)] |= kUnreserved | kAuthority;
  // sub-delims, the port separator and IP-literal brackets; no '@' (userinfo), no '%'.
  for (char c : {'!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=', ':', '[', ']'}) {
    t[uint8_t(c)] |= kAuthority;
  }
  return t;
}

constexpr std::array<uint8_t, 256> kClasses = makeClasses();

inline bool has(char c, CharClass k) { return kClasses[uint8_t(c)] & k; }

inline int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Does `p` (starting with '/') have a dot segment starting at index i (just after a '/')?
inline bool dotSegmentAt(std::string_view p, size_t i) {
  if (i >= p.size() || p[i] != '.') return false;
  if (i + 1 == p.size() || p[i + 1] == '/') return true;
  return p[i + 1] == '.' && (i + 2 == p.size() || p[i + 2] == '/');
}

// True when `p` is already in normal form; anything doubtful goes to the full pass, which
// also produces the error.
bool isNormal(std::string_view p) {
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '/') {
      if (i + 1 < p.size() && p[i + 1] == '/') return false;
      if (dotSegmentAt(p, i + 1)) return false;
    } else if (c == '%' || !has(c, kPathByte)) {
      return false;
    }
  }
  return true;
}

// Ends the segment that starts at out[seg_start] (out[seg_start - 1] is '/'). `last` says
// whether the raw path ends here, in which case a kept segment gets no '/' after it.
PathResult closeSegment(std::string& out, size_t seg_start, bool last) {
  std::string_view seg(out.data() + seg_start, out.size() - seg_start);
  if (seg == ".") {
    out.resize(seg_start);
  } else if (seg == "..") {
    if (seg_start == 1) return PathResult::EscapesRoot;
    out.resize(seg_start - 1);  // drop the '/' before "..", then the segment before it
    out.resize(out.rfind('/') + 1);
  } else if (!seg.empty() && !last) {
    out.push_back('/');
  }
  return PathResult::Ok;
}

PathResult normalizeSlow(std::string_view raw, std::string& out) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  out.clear();
  out.reserve(raw.size());  // every byte written stands for at least one byte of raw
  out.push_back('/');
  size_t seg_start = 1;
  for (size_t i = 1; i < raw.size(); ++i) {
    char c = raw[i];
    if (c == '/') {
      if (PathResult r = closeSegment(out, seg_start, false); r != PathResult::Ok) return r;
      seg_start = out.size();
    } else if (c == '%') {
      if (raw.size() - i < 3) return PathResult::Invalid;
      int hi = hexValue(raw[i + 1]);
      int lo = hexValue(raw[i + 2]);
      if (hi < 0 || lo < 0) return PathResult::Invalid;
      char decoded = char(hi * 16 + lo);
      if (has(decoded, kUnreserved)) {
        out.push_back(decoded);
      } else {
        out.push_back('%');
        out.push_back(kHex[hi]);
        out.push_back(kHex[lo]);
      }
      i += 2;
    } else if (has(c, kPathByte)) {
      out.push_back(c);
    } else {
      return PathResult::Invalid;
    }
  }
  return closeSegment(out, seg_start, true);
}

bool allVisibleAscii(std::string_view s) {
  for (char c : s) {
    if (c <= 0x20 || c >= 0x7f) return false;  // char may be signed: >= 0x80 is negative
  }
  return true;
}

// "http" or "https", case-insensitively (RFC 3986 §3.1).
bool isHttpScheme(std::string_view scheme) {
  return equalsIgnoreCase(scheme, "http") || equalsIgnoreCase(scheme, "https");
}

}  // namespace

bool parseRequestTarget(std::string_view target, std::string_view method, RequestTarget& out) {
  out = RequestTarget{};
  if (target.empty() || !allVisibleAscii(target)) return false;
  if (target.find('#') != std::string_view::npos) return false;

  if (target == "*") {
    if (method != "OPTIONS") return false;
    out.path = target;
    out.asterisk = true;
    return true;
  }

  std::string_view rest = target;
  if (target.front() != '/') {
    size_t sep = target.find("://");
    if (sep == std::string_view::npos || !isHttpScheme(target.substr(0, sep))) return false;
    rest = target.substr(sep + 3);
    size_t end = rest.find_first_of("/?");
    std::string_view authority = rest.substr(0, end);
    if (!isValidAuthority(authority)) return false;
    out.authority = authority;
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end);
  }

  size_t q = rest.find('?');
  out.path = rest.substr(0, q);
  if (q != std::string_view::npos) {
    out.has_query = true;
    out.query = rest.substr(q + 1);
  }
  // Only the absolute-form can get here without a path ("http://h" or "http://h?x").
  if (out.path.empty()) out.path = "/";
  return true;
}

bool isValidAuthority(std::string_view authority) {
  if (authority.empty()) return false;
  for (char c : authority) {
    if (!has(c, kAuthority)) return false;
  }
  return true;
}

PathResult normalizePath(std::string_view raw, std::string& out) {
  if (raw.empty() || raw.front() != '/') return PathResult::Invalid;
  if (isNormal(raw)) {
    out.assign(raw);
    return PathResult::Ok;
  }
  return normalizeSlow(raw, out);
}

bool applyStripPrefix(std::string_view path, std::string_view prefix, std::string& out) {
  bool at_boundary = path.size() == prefix.size() || prefix.ends_with('/') ||
                     (path.size() > prefix.size() && path[prefix.size()] == '/');
  if (prefix.empty() || !path.starts_with(prefix) || !at_boundary) {
    out.assign(path);
    return false;
  }
  std::string_view rest = path.substr(prefix.size());
  if (rest.starts_with('/')) {
    out.assign(rest);
  } else {
    out.assign("/");
    out.append(rest);
  }
  return true;
}

}  // namespace gw
