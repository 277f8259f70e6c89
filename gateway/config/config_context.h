// The parsing context handed to every configuration parser: the loader's and each
// filter's (filters/<name>/<name>_config.cc).
//
// Contract:
// - Parsers never throw and never stop at the first problem: they report each one through
//   error() with the position of the offending node, and go on where that makes sense.
//   A value that could not be parsed leaves its target unchanged (the default).
// - Every scalar is read as a string, so `off`/`on`/`yes`/`no` stay strings; booleans are
//   exactly `true`/`false`. `${NAME}` and `${NAME:-default}` are substituted in every
//   scalar value (not in keys); `$${` is a literal `${`.
// - Positions are 1-based (yaml-cpp's marks are 0-based); 0:0 means "the whole file".
// - Not thread-safe: one context per load.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gateway/config/bounded_file.h"
#include "gateway/config/config.h"

namespace gw {

struct ConfigError {
  std::string file;
  int line = 0;    // 1-based; 0 when the error concerns the whole file
  int column = 0;  // 1-based
  std::string message;
  // The same message at the same position again: a node reached more than once through
  // YAML aliases. Reported once, with the count, not once per use.
  size_t repeats = 0;

  // "FILE:LINE:COL: message", always one line: control characters that reached the
  // message unquoted (from yaml-cpp, OpenSSL, RE2) are escaped here as a last resort.
  std::string format() const;
};

// A YAML mapping whose keys were checked once: unique, scalar and (for a schema map) all
// allowed. Entries keep the file's order.
class MapNode {
 public:
  struct Entry {
    std::string key;
    YAML::Node key_node;
    YAML::Node value;
  };

  const YAML::Node& node() const { return node_; }
  const std::string& what() const { return what_; }
  const std::vector<Entry>& entries() const { return entries_; }
  // The value under `key`, or null when the key is absent.
  const YAML::Node* find(std::string_view key) const;
  bool has(std::string_view key) const { return find(key) != nullptr; }

 private:
  friend class ConfigContext;
  YAML::Node node_;
  std::string what_;
  std::vector<Entry> entries_;
};

class ConfigContext {
 public:
  explicit ConfigContext(std::string file) : file_(std::move(file)) {}

  const std::string& file() const { return file_; }
  const std::vector<ConfigError>& errors() const { return errors_; }
  // Every report, repeats included: parsers compare it before and after a step to see
  // whether that step found a problem.
  size_t errorCount() const { return reported_; }
  std::vector<ConfigError> takeErrors();

  // --- reporting ---
  void error(const YAML::Node& at, std::string message);
  void error(const SourceLocation& at, std::string message);
  void errorAt(int line, int column, std::string message);
  SourceLocation location(const YAML::Node& node) const;

  // --- maps ---
  // A mapping with a fixed schema: unknown keys are reported (with the closest allowed
  // key as a suggestion) and skipped. A null node (`key:` with nothing after it) is an
  // empty map. Returns nullopt if the node is not a mapping.
  std::optional<MapNode> expectMap(const YAML::Node& node, std::string_view what,
                                   std::initializer_list<std::string_view> allowed);
  // A mapping whose keys are user data (header names, filter names, claims).
  std::optional<MapNode> expectOpenMap(const YAML::Node& node, std::string_view what);
  // Reports every listed key missing from `map`, at the map's position. True if none is.
  bool require(const MapNode& map, std::initializer_list<std::string_view> keys);

  // --- scalars: each reports a problem at the node and returns nullopt ---
  std::optional<std::string> string(const YAML::Node& node);
  std::optional<std::string> nonEmptyString(const YAML::Node& node);
  std::optional<bool> boolean(const YAML::Node& node);
  std::optional<uint64_t> unsignedInt(const YAML::Node& node, uint64_t min = 0,
                                      uint64_t max = std::numeric_limits<uint64_t>::max());
  std::optional<Millis> duration(const YAML::Node& node, Millis min = Millis(0));
  std::optional<uint64_t> size(const YAML::Node& node);
  std::optional<Cidr> cidr(const YAML::Node& node);
  // An HTTP token (RFC 9110 tchar): header names, methods. Case kept.
  std::optional<std::string> token(const YAML::Node& node, std::string_view what);
  // A path to a regular file this process can read; the error points at the value.
  std::optional<std::string> readableFile(const YAML::Node& node);
  // One of a fixed set of words, e.g. {{"round_robin", LoadBalancing::RoundRobin}, ...}.
  template <class E>
  std::optional<E> oneOf(const YAML::Node& node,
                         std::initializer_list<std::pair<std::string_view, E>> choices);
  // True for the scalar `off` (a filter switched off, a header removed).
  bool isOff(const YAML::Node& node);

  // --- sequences ---
  // Parses each element with `one` (returning std::optional<T>); reports every bad
  // element and returns nullopt if there was one. A null node is an empty list.
  template <class Parse>
  auto list(const YAML::Node& node, std::string_view what, Parse&& one)
      -> std::optional<std::vector<typename decltype(one(node))::value_type>>;
  std::optional<std::vector<std::string>> stringList(const YAML::Node& node);
  std::optional<std::vector<Cidr>> cidrList(const YAML::Node& node);

  // --- fields of a MapNode: leave `out` unchanged when the key is absent ---
  // Returns false when the key is present but its value is bad (already reported).
  template <class T, class Parse>
  bool read(const MapNode& map, std::string_view key, T& out, Parse&& parse);
  bool readString(const MapNode& map, std::string_view key, std::string& out);
  bool readBool(const MapNode& map, std::string_view key, bool& out);
  bool readDuration(const MapNode& map, std::string_view key, Millis& out, Millis min = Millis(0));
  bool readSize(const MapNode& map, std::string_view key, uint64_t& out);
  bool readStringList(const MapNode& map, std::string_view key, std::vector<std::string>& out);
  template <class Int>
  bool readUint(const MapNode& map, std::string_view key, Int& out, uint64_t min = 0,
                uint64_t max = std::numeric_limits<Int>::max()) {
    return read(map, key, out, [&](const YAML::Node& n) -> std::optional<Int> {
      auto v = unsignedInt(n, min, max);
      if (!v) return std::nullopt;
      return static_cast<Int>(*v);
    });
  }

 private:
  // The scalar's text after ${...} substitution; reports non-scalars as "expected `what`"
  // (unless `report` is false: isOff() only peeks).
  std::optional<std::string> scalar(const YAML::Node& node, std::string_view what,
                                    bool report = true);
  // `report` false: a bad reference yields nullopt silently (it is reported by whichever
  // parser reads the value for good).
  std::optional<std::string> substituteEnv(const YAML::Node& node, const std::string& raw,
                                           bool report = true);
  std::optional<MapNode> mapEntries(const YAML::Node& node, std::string_view what);

  std::string file_;
  std::vector<ConfigError> errors_;
  size_t reported_ = 0;
  // "line:column:message" -> index in errors_, to fold repeats.
  std::unordered_map<std::string, size_t> error_index_;
  // Null values (`key:` with nothing after it) carry the position of whatever follows
  // them; errors about them point at their key instead.
  std::vector<std::pair<YAML::Node, YAML::Mark>> null_value_keys_;
};

// A configuration value for a message: in single quotes, with backslash, quote, control
// characters, DEL and invalid UTF-8 escaped (\\, \', \n, \t, \xHH) and so are Unicode
// line breaks and direction overrides (\uXXXX): whatever a value holds (an ${ENV} with a
// newline, a NUL, an ESC sequence), the message stays one line and prints as it reads.
std::string quoteValue(std::string_view value);
// RFC 9110 token characters only, at least one.
bool isHttpToken(std::string_view s);
// No CR, LF or NUL (a header value that cannot split a response).
bool isSafeHeaderValue(std::string_view s);
std::string toLowerAscii(std::string_view s);
std::string toUpperAscii(std::string_view s);
// The candidate a typo most likely meant, or empty when none is close enough to help.
std::string_view closestMatch(std::string_view word, std::span<const std::string_view> candidates);
// "a, b, c" for messages and for header values built from lists.
std::string joinStrings(const std::vector<std::string>& items, std::string_view separator);

// ---- templates ----

template <class E>
std::optional<E> ConfigContext::oneOf(
    const YAML::Node& node, std::initializer_list<std::pair<std::string_view, E>> choices) {
  auto text = scalar(node, "a string");
  if (!text) return std::nullopt;
  std::vector<std::string> names;
  for (const auto& [name, value] : choices) {
    if (*text == name) return value;
    names.emplace_back(name);
  }
  error(node, quoteValue(*text) + " is not one of: " + joinStrings(names, ", "));
  return std::nullopt;
}

template <class Parse>
auto ConfigContext::list(const YAML::Node& node, std::string_view what, Parse&& one)
    -> std::optional<std::vector<typename decltype(one(node))::value_type>> {
  using T = typename decltype(one(node))::value_type;
  std::vector<T> out;
  if (node.IsNull()) return out;
  if (!node.IsSequence()) {
    error(node, "expected a list of " + std::string(what));
    return std::nullopt;
  }
  bool ok = true;
  for (const auto& item : node) {
    auto v = one(item);
    if (v) {
      out.push_back(std::move(*v));
    } else {
      ok = false;
    }
  }
  if (!ok) return std::nullopt;
  return out;
}

template <class T, class Parse>
bool ConfigContext::read(const MapNode& map, std::string_view key, T& out, Parse&& parse) {
  const YAML::Node* value = map.find(key);
  if (!value) return true;
  auto parsed = parse(*value);
  if (!parsed) return false;
  out = std::move(*parsed);
  return true;
}

}  // namespace gw
