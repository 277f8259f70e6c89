#include "gateway/config/config_context.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace gw {
namespace {

const char* typeName(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "nothing";
    case YAML::NodeType::Scalar:
      return "a scalar";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    default:
      return "an undefined value";
  }
}

size_t editDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = above;
    }
  }
  return row[b.size()];
}

bool isEnvNameChar(char c, bool first) {
  return c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (!first && c >= '0' && c <= '9');
}

// The code point of the well-formed UTF-8 sequence at s[i] and its length; 0 when s[i]
// starts none (a stray continuation byte, a cut sequence, an overlong form, a surrogate,
// a value past U+10FFFF).
size_t decodeUtf8(std::string_view s, size_t i, uint32_t& cp) {
  auto c = static_cast<unsigned char>(s[i]);
  size_t n = 0;
  uint32_t min = 0;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2, cp = c & 0x1fu, min = 0x80;
  } else if ((c & 0xf0) == 0xe0) {
    n = 3, cp = c & 0x0fu, min = 0x800;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4, cp = c & 0x07u, min = 0x10000;
  } else {
    return 0;
  }
  if (s.size() - i < n) return 0;
  for (size_t k = 1; k < n; ++k) {
    auto next = static_cast<unsigned char>(s[i + k]);
    if ((next & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (next & 0x3fu);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

// Characters a terminal acts on or hides rather than shows: C1 controls (NEL ends a line
// for some), the Unicode line and paragraph separators, and the marks that reorder text
// (a value could otherwise make a message read differently from what it says).
bool actsOnTerminal(uint32_t cp) {
  return cp <= 0x9f || cp == 0x2028 || cp == 0x2029 || cp == 0x200e || cp == 0x200f ||
         (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

// Appends `s` escaped for a one-line message. `all` (inside quoteValue()) escapes backslash
// and quote too, so that what is between the quotes reads back unambiguously; without it
// only what could break, cut or hide a line is escaped, and escaping twice changes nothing.
void appendEscaped(std::string& out, std::string_view s, bool all) {
  static constexpr char kHex[] = "0123456789abcdef";
  auto hex = [&](const char* prefix, uint32_t value, int digits) {
    out += prefix;
    for (int shift = (digits - 1) * 4; shift >= 0; shift -= 4) out += kHex[(value >> shift) & 15];
  };
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      uint32_t cp = 0;
      size_t n = decodeUtf8(s, i, cp);
      if (n == 0) {
        hex("\\x", c, 2);
        ++i;
      } else {
        if (actsOnTerminal(cp)) {
          hex("\\u", cp, 4);
        } else {
          out.append(s.substr(i, n));
        }
        i += n;
      }
      continue;
    }
    ++i;
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c == 0x7f) {
      hex("\\x", c, 2);
    } else if (all && (c == '\\' || c == '\'')) {
      out += '\\';
      out += static_cast<char>(c);
    } else {
      out += static_cast<char>(c);
    }
  }
}

}  // namespace

std::string quoteValue(std::string_view value) {
  std::string out = "'";
  appendEscaped(out, value, /*all=*/true);
  out += '\'';
  return out;
}

std::string_view closestMatch(std::string_view word, std::span<const std::string_view> candidates) {
  std::string_view best;
  size_t best_distance = std::max<size_t>(2, word.size() / 3) + 1;
  for (std::string_view candidate : candidates) {
    size_t d = editDistance(word, candidate);
    if (d < best_distance) {
      best_distance = d;
      best = candidate;
    }
  }
  return best;
}

std::string ConfigError::format() const {
  std::string out;
  appendEscaped(out, file, /*all=*/false);
  out += ":" + std::to_string(line) + ":" + std::to_string(column) + ": ";
  appendEscaped(out, message, /*all=*/false);
  if (repeats > 0) out += " (and " + std::to_string(repeats) + " more times through YAML aliases)";
  return out;
}

const YAML::Node* MapNode::find(std::string_view key) const {
  for (const auto& e : entries_) {
    if (e.key == key) return &e.value;
  }
  return nullptr;
}

// ---- reporting ----

SourceLocation ConfigContext::location(const YAML::Node& node) const {
  YAML::Mark mark = node.Mark();
  if (node.IsNull()) {
    for (const auto& [value, key_mark] : null_value_keys_) {
      if (value.is(node)) {
        mark = key_mark;
        break;
      }
    }
  }
  if (mark.is_null()) return {file_, 0, 0};
  return {file_, mark.line + 1, mark.column + 1};
}

void ConfigContext::error(const YAML::Node& at, std::string message) {
  error(location(at), std::move(message));
}

void ConfigContext::error(const SourceLocation& at, std::string message) {
  ++reported_;
  const std::string& file = at.file.empty() ? file_ : at.file;
  std::string key = file + '\0' + std::to_string(at.line) + ':' + std::to_string(at.column) +
                    '\0' + message;
  auto [it, inserted] = error_index_.try_emplace(std::move(key), errors_.size());
  if (!inserted) {
    ++errors_[it->second].repeats;
    return;
  }
  errors_.push_back({file, at.line, at.column, std::move(message)});
}

void ConfigContext::errorAt(int line, int column, std::string message) {
  error(SourceLocation{file_, line, column}, std::move(message));
}

std::vector<ConfigError> ConfigContext::takeErrors() {
  error_index_.clear();
  return std::move(errors_);
}

// ---- maps ----

std::optional<MapNode> ConfigContext::mapEntries(const YAML::Node& node, std::string_view what) {
  MapNode map;
  map.node_ = node;
  map.what_ = std::string(what);
  if (node.IsNull()) return map;
  if (!node.IsMap()) {
    error(node, "expected a map for " + map.what_ + ", got " + typeName(node));
    return std::nullopt;
  }
  for (const auto& pair : node) {
    // Copies: yaml-cpp nodes are handles, and its iterators hand out temporaries.
    YAML::Node key = pair.first;
    YAML::Node value = pair.second;
    if (!key.IsScalar()) {
      error(key, "keys of " + map.what_ + " must be plain strings");
      continue;
    }
    if (map.find(key.Scalar())) {
      error(key, "duplicate key " + quoteValue(key.Scalar()) + " in " + map.what_);
      continue;
    }
    if (value.IsNull()) null_value_keys_.emplace_back(value, key.Mark());
    map.entries_.push_back({key.Scalar(), key, value});
  }
  return map;
}

std::optional<MapNode> ConfigContext::expectMap(const YAML::Node& node, std::string_view what,
                                                std::initializer_list<std::string_view> allowed) {
  auto map = mapEntries(node, what);
  if (!map) return std::nullopt;
  // Known entries are copied into a new list, never shifted by erase(): assigning a
  // YAML::Node writes through to the node it refers to, so shifting entries would rewrite
  // the document (each later key would get its neighbour's value).
  std::vector<MapNode::Entry> known;
  known.reserve(map->entries_.size());
  for (const MapNode::Entry& e : map->entries_) {
    if (std::find(allowed.begin(), allowed.end(), e.key) != allowed.end()) {
      known.push_back(e);
      continue;
    }
    std::string message = "unknown key " + quoteValue(e.key) + " in " + map->what_;
    std::string_view suggestion = closestMatch(e.key, {allowed.begin(), allowed.size()});
    if (!suggestion.empty()) message += " (did you mean '" + std::string(suggestion) + "'?)";
    error(e.key_node, std::move(message));
  }
  map->entries_.swap(known);
  return map;
}

std::optional<MapNode> ConfigContext::expectOpenMap(const YAML::Node& node, std::string_view what) {
  return mapEntries(node, what);
}

bool ConfigContext::require(const MapNode& map, std::initializer_list<std::string_view> keys) {
  bool ok = true;
  for (std::string_view key : keys) {
    if (map.has(key)) continue;
    error(map.node(), "missing required key '" + std::string(key) + "' in " + map.what());
    ok = false;
  }
  return ok;
}

// ---- scalars ----

std::optional<std::string> ConfigContext::substituteEnv(const YAML::Node& node,
                                                        const std::string& raw, bool report) {
  auto fail = [&](std::string message) -> std::optional<std::string> {
    if (report) error(node, std::move(message));
    return std::nullopt;
  };
  std::string out;
  out.reserve(raw.size());
  size_t i = 0;
  while (i < raw.size()) {
    if (raw.compare(i, 3, "$${") == 0) {
      out += "${";
      i += 3;
      continue;
    }
    if (raw.compare(i, 2, "${") != 0) {
      out += raw[i++];
      continue;
    }
    size_t close = raw.find('}', i + 2);
    if (close == std::string::npos) return fail("unterminated '${' in value");
    std::string_view body(raw.data() + i + 2, close - i - 2);
    size_t name_end = 0;
    while (name_end < body.size() && isEnvNameChar(body[name_end], name_end == 0)) ++name_end;
    std::string name(body.substr(0, name_end));
    std::string_view rest = body.substr(name_end);
    bool has_default = rest.substr(0, 2) == ":-";
    if (name.empty() || (!rest.empty() && !has_default)) {
      return fail("bad environment reference " + quoteValue("${" + std::string(body) + "}") +
                  " (expected ${NAME} or ${NAME:-default})");
    }
    const char* value = std::getenv(name.c_str());
    if (value) {
      out += value;
    } else if (has_default) {
      out += rest.substr(2);
    } else {
      // `name` is [A-Za-z_][A-Za-z0-9_]*: nothing to escape.
      return fail("environment variable '" + name + "' is not set (use ${" + name +
                  ":-default} to give a default)");
    }
    i = close + 1;
  }
  return out;
}

std::optional<std::string> ConfigContext::scalar(const YAML::Node& node, std::string_view what,
                                                 bool report) {
  if (!node.IsScalar()) {
    if (report) error(node, "expected " + std::string(what) + ", got " + typeName(node));
    return std::nullopt;
  }
  const std::string& raw = node.Scalar();
  if (raw.find("${") == std::string::npos) return raw;
  return substituteEnv(node, raw, report);
}

std::optional<std::string> ConfigContext::string(const YAML::Node& node) {
  return scalar(node, "a string");
}

std::optional<std::string> ConfigContext::nonEmptyString(const YAML::Node& node) {
  auto s = scalar(node, "a string");
  if (s && s->empty()) {
    error(node, "must not be empty");
    return std::nullopt;
  }
  return s;
}

std::optional<bool> ConfigContext::boolean(const YAML::Node& node) {
  auto s = scalar(node, "true or false");
  if (!s) return std::nullopt;
  if (*s == "true") return true;
  if (*s == "false") return false;
  error(node, "expected true or false, got " + quoteValue(*s));
  return std::nullopt;
}

std::optional<uint64_t> ConfigContext::unsignedInt(const YAML::Node& node, uint64_t min,
                                                   uint64_t max) {
  auto s = scalar(node, "an integer");
  if (!s) return std::nullopt;
  uint64_t value = 0;
  bool digits = !s->empty();
  for (char c : *s) {
    if (c < '0' || c > '9') {
      digits = false;
      break;
    }
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (value > (std::numeric_limits<uint64_t>::max() - d) / 10) {
      error(node, "integer " + quoteValue(*s) + " is too large");
      return std::nullopt;
    }
    value = value * 10 + d;
  }
  if (!digits) {
    error(node, "expected a non-negative integer, got " + quoteValue(*s));
    return std::nullopt;
  }
  if (value < min || value > max) {
    std::string bound =
        value < min ? "at least " + std::to_string(min) : "at most " + std::to_string(max);
    error(node, "must be " + bound + ", got " + *s);
    return std::nullopt;
  }
  return value;
}

std::optional<Millis> ConfigContext::duration(const YAML::Node& node, Millis min) {
  auto s = scalar(node, "a duration");
  if (!s) return std::nullopt;
  auto d = parseDuration(*s);
  if (!d) {
    error(node,
          "bad duration " + quoteValue(*s) +
              " (expected a whole number with a unit: 250ms, 10s, 5m, 1h)");
    return std::nullopt;
  }
  if (*d < min) {
    error(node,
          "duration must be at least " + std::to_string(min.count()) + "ms, got " + quoteValue(*s));
    return std::nullopt;
  }
  return d;
}

std::optional<uint64_t> ConfigContext::size(const YAML::Node& node) {
  auto s = scalar(node, "a size");
  if (!s) return std::nullopt;
  auto v = parseSize(*s);
  if (!v) {
    error(node, "bad size " + quoteValue(*s) +
                    " (expected bytes as an integer, or 16KiB, 10MiB, 1GiB)");
    return std::nullopt;
  }
  return v;
}

std::optional<Cidr> ConfigContext::cidr(const YAML::Node& node) {
  auto s = scalar(node, "a CIDR");
  if (!s) return std::nullopt;
  auto c = parseCidr(*s);
  if (!c) {
    error(node, "bad CIDR " + quoteValue(*s) +
                    " (expected e.g. 10.0.0.0/8, 2001:db8::/32 or an IP)");
  }
  return c;
}

std::optional<std::string> ConfigContext::token(const YAML::Node& node, std::string_view what) {
  auto s = scalar(node, what);
  if (!s) return std::nullopt;
  if (!isHttpToken(*s)) {
    error(node, quoteValue(*s) + " is not a valid " + std::string(what));
    return std::nullopt;
  }
  return s;
}

std::optional<std::string> ConfigContext::readableFile(const YAML::Node& node) {
  auto path = nonEmptyString(node);
  if (!path) return std::nullopt;
  std::string problem;
  int fd = openBoundedFile(*path, problem);
  if (fd < 0) {
    error(node, "cannot read file " + quoteValue(*path) + ": " + problem);
    return std::nullopt;
  }
  close(fd);
  return path;
}

bool ConfigContext::isOff(const YAML::Node& node) {
  // A bad ${...} is reported by whichever parser reads the value next, not twice.
  auto text = scalar(node, "a string", /*report=*/false);
  return text && *text == "off";
}

// ---- sequences ----

std::optional<std::vector<std::string>> ConfigContext::stringList(const YAML::Node& node) {
  return list(node, "strings", [&](const YAML::Node& n) { return string(n); });
}

std::optional<std::vector<Cidr>> ConfigContext::cidrList(const YAML::Node& node) {
  return list(node, "CIDRs", [&](const YAML::Node& n) { return cidr(n); });
}

// ---- fields ----

bool ConfigContext::readString(const MapNode& map, std::string_view key, std::string& out) {
  return read(map, key, out, [&](const YAML::Node& n) { return string(n); });
}

bool ConfigContext::readBool(const MapNode& map, std::string_view key, bool& out) {
  return read(map, key, out, [&](const YAML::Node& n) { return boolean(n); });
}

bool ConfigContext::readDuration(const MapNode& map, std::string_view key, Millis& out,
                                 Millis min) {
  return read(map, key, out, [&](const YAML::Node& n) { return duration(n, min); });
}

bool ConfigContext::readSize(const MapNode& map, std::string_view key, uint64_t& out) {
  return read(map, key, out, [&](const YAML::Node& n) { return size(n); });
}

bool ConfigContext::readStringList(const MapNode& map, std::string_view key,
                                   std::vector<std::string>& out) {
  return read(map, key, out, [&](const YAML::Node& n) { return stringList(n); });
}

// ---- text helpers ----

bool isHttpToken(std::string_view s) {
  static constexpr std::string_view kSpecials = "!#$%&'*+-.^_`|~";
  if (s.empty()) return false;
  for (char c : s) {
    bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (!alnum && kSpecials.find(c) == std::string_view::npos) return false;
  }
  return true;
}

bool isSafeHeaderValue(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

std::string toLowerAscii(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string toUpperAscii(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

std::string joinStrings(const std::vector<std::string>& items, std::string_view separator) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += separator;
    out += items[i];
  }
  return out;
}

}  // namespace gw
