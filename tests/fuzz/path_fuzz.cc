// libFuzzer target for request-target parsing, path normalisation and strip_prefix.
//
// Besides the invariants of a normal path, normalizePath() is checked against a plain
// reference implementation of the SPEC's rules (split, decode, stack of segments): the
// two must agree on every input.

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/path.h"

namespace {

using gw::PathResult;

#define FUZZ_CHECK(cond, input)                                                     \
  do {                                                                              \
    if (!(cond)) fail(#cond, __LINE__, input);                                      \
  } while (0)

[[noreturn]] void fail(const char* what, int line, std::string_view input) {
  std::fprintf(stderr, "path_fuzz.cc:%d: %s\ninput (%zu bytes): ", line, what, input.size());
  for (unsigned char c : input) {
    if (c >= 0x21 && c < 0x7f) {
      std::fputc(c, stderr);
    } else {
      std::fprintf(stderr, "\\x%02x", c);
    }
  }
  std::fputc('\n', stderr);
  std::abort();
}

bool isUnreserved(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '-' || c == '.' || c == '_' || c == '~';
}

bool isPathByte(unsigned char c) {
  return c > 0x20 && c < 0x7f && c != '?' && c != '#' && c != '\\';
}

bool isUpperHex(char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); }

struct Reference {
  PathResult result;
  std::string path;
};

// The SPEC's rules written the obvious way, allocation and all.
Reference referenceNormalize(std::string_view raw) {
  if (raw.empty() || raw[0] != '/') return {PathResult::Invalid, {}};
  std::string decoded;
  for (size_t i = 0; i < raw.size(); ++i) {
    unsigned char c = raw[i];
    if (c == '%') {
      if (i + 2 >= raw.size()) return {PathResult::Invalid, {}};
      std::string hex(raw.substr(i + 1, 2));
      if (!std::isxdigit(uint8_t(hex[0])) || !std::isxdigit(uint8_t(hex[1]))) {
        return {PathResult::Invalid, {}};
      }
      auto value = static_cast<unsigned char>(std::strtoul(hex.c_str(), nullptr, 16));
      if (isUnreserved(value)) {
        decoded += char(value);
      } else {
        char buf[4];
        std::snprintf(buf, sizeof buf, "%%%02X", value);
        decoded += buf;
      }
      i += 2;
    } else if (isPathByte(c)) {
      decoded += char(c);
    } else {
      return {PathResult::Invalid, {}};
    }
  }
  // Decoding never yields '/', so splitting after it is safe.
  std::vector<std::string> stack;
  std::string segment;
  bool trailing = false;
  for (size_t i = 1; i <= decoded.size(); ++i) {
    if (i < decoded.size() && decoded[i] != '/') {
      segment += decoded[i];
      continue;
    }
    trailing = segment.empty() || segment == "." || segment == "..";
    if (segment == "..") {
      if (stack.empty()) return {PathResult::EscapesRoot, {}};
      stack.pop_back();
    } else if (!trailing) {
      stack.push_back(segment);
    }
    segment.clear();
  }
  std::string out = "/";
  for (size_t i = 0; i < stack.size(); ++i) out += (i ? "/" : "") + stack[i];
  if (trailing && !stack.empty()) out += '/';
  return {PathResult::Ok, out};
}

void checkNormalForm(std::string_view input, std::string_view out) {
  FUZZ_CHECK(!out.empty() && out[0] == '/', input);
  FUZZ_CHECK(out.size() <= input.size() + 1, input);
  FUZZ_CHECK(out.find("//") == std::string_view::npos, input);
  FUZZ_CHECK(out.find("/./") == std::string_view::npos, input);
  FUZZ_CHECK(out.find("/../") == std::string_view::npos, input);
  FUZZ_CHECK(!out.ends_with("/.") && !out.ends_with("/.."), input);
  for (size_t i = 0; i < out.size(); ++i) {
    FUZZ_CHECK(isPathByte(uint8_t(out[i])), input);
    if (out[i] != '%') continue;
    FUZZ_CHECK(i + 2 < out.size() && isUpperHex(out[i + 1]) && isUpperHex(out[i + 2]), input);
    unsigned value = std::strtoul(std::string(out.substr(i + 1, 2)).c_str(), nullptr, 16);
    FUZZ_CHECK(!isUnreserved(uint8_t(value)), input);
  }
}

void checkNormalize(std::string_view input, std::string_view raw, std::string& out) {
  PathResult got = gw::normalizePath(raw, out);
  Reference want = referenceNormalize(raw);
  if (want.result == PathResult::Ok) {
    FUZZ_CHECK(got == PathResult::Ok, input);
    FUZZ_CHECK(out == want.path, input);
  } else if (want.result == PathResult::EscapesRoot) {
    FUZZ_CHECK(got == PathResult::EscapesRoot, input);
  } else {
    // Both are a 400; which is reported first depends on where the scan stops.
    FUZZ_CHECK(got != PathResult::Ok, input);
  }
  if (got != PathResult::Ok) return;
  checkNormalForm(input, out);

  static std::string again;
  FUZZ_CHECK(gw::normalizePath(out, again) == PathResult::Ok && again == out, input);
}

bool within(std::string_view part, std::string_view whole) {
  return part.empty() ||
         (part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size());
}

void checkTarget(std::string_view input, std::string_view method, std::string& out) {
  gw::RequestTarget t;
  if (!gw::parseRequestTarget(input, method, t)) return;
  FUZZ_CHECK(input.find('#') == std::string_view::npos, input);
  for (unsigned char c : input) FUZZ_CHECK(c > 0x20 && c < 0x7f, input);
  FUZZ_CHECK(within(t.query, input) && within(t.authority, input), input);
  if (t.asterisk) {
    FUZZ_CHECK(method == "OPTIONS" && t.path == "*" && input == "*", input);
    return;
  }
  FUZZ_CHECK(!t.path.empty() && t.path[0] == '/', input);
  FUZZ_CHECK(t.has_query || t.query.empty(), input);
  if (input[0] == '/') {
    FUZZ_CHECK(t.authority.empty(), input);
    std::string rebuilt(t.path);
    if (t.has_query) rebuilt += "?" + std::string(t.query);
    FUZZ_CHECK(rebuilt == input, input);
  } else {
    FUZZ_CHECK(!t.authority.empty(), input);
    FUZZ_CHECK(t.authority.find('@') == std::string_view::npos, input);
  }
  checkNormalize(input, t.path, out);
}

void checkStripPrefix(std::string_view input, std::string_view path, size_t cut) {
  std::string_view prefix = path.substr(0, cut % (path.size() + 1));
  static std::string stripped;
  bool did = gw::applyStripPrefix(path, prefix, stripped);
  FUZZ_CHECK(!stripped.empty() && stripped[0] == '/', input);
  if (!did) {
    FUZZ_CHECK(stripped == path, input);
    return;
  }
  FUZZ_CHECK(!prefix.empty() && stripped.size() <= path.size(), input);
  // Stripping removes exactly the prefix, up to the '/' that starts what remains.
  std::string_view rest = path.substr(prefix.size());
  FUZZ_CHECK(stripped == rest || (!rest.starts_with('/') && stripped.substr(1) == rest),
             input);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  static std::string out;  // reused, as the proxy reuses its buffer

  checkNormalize(input, input, out);
  if (gw::normalizePath(input, out) == PathResult::Ok && size > 0) {
    checkStripPrefix(input, out, size_t(data[size - 1]) * 31 + size);
  }
  checkTarget(input, "GET", out);
  checkTarget(input, "OPTIONS", out);
  return 0;
}
