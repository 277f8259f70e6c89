#include "filters/api_key/api_key_file.h"

#include <map>

#include "gateway/config/config_context.h"

namespace gw::api_key {
namespace {

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string_view trim(std::string_view s) {
  size_t begin = s.find_first_not_of(" \t\r");
  if (begin == std::string_view::npos) return {};
  size_t end = s.find_last_not_of(" \t\r");
  return s.substr(begin, end - begin + 1);
}

// Parses one non-blank, non-comment line; returns what is wrong with it, or empty.
std::string parseLine(std::string_view line, ApiKeyEntry& entry) {
  size_t gap = line.find_first_of(" \t");
  if (gap == std::string_view::npos) return "expected NAME SHA256HEX";
  std::string_view name = line.substr(0, gap);
  std::string_view hex = trim(line.substr(gap));
  // The name is forwarded as the X-Consumer header and logged: keep it a plain token.
  if (!isHttpToken(name)) return "name " + quoteValue(name) + " has characters not allowed";
  if (hex.size() != 64) {
    return "expected 64 hex digits (a SHA-256) after the name, got " + std::to_string(hex.size()) +
           " characters";
  }
  for (size_t i = 0; i < 32; ++i) {
    int high = hexValue(hex[2 * i]);
    int low = hexValue(hex[2 * i + 1]);
    if (high < 0 || low < 0) return "the SHA-256 is not hexadecimal";
    entry.sha256[i] = static_cast<uint8_t>(high << 4 | low);
  }
  entry.name = std::string(name);
  return {};
}

}  // namespace

ApiKeyFile parseApiKeyFile(std::string_view text) {
  ApiKeyFile file;
  std::map<std::array<uint8_t, 32>, int> line_of_hash;
  int line_number = 0;
  while (!text.empty()) {
    size_t newline = text.find('\n');
    std::string_view line = trim(text.substr(0, newline));
    text = newline == std::string_view::npos ? std::string_view() : text.substr(newline + 1);
    ++line_number;
    if (line.empty() || line[0] == '#') continue;
    ApiKeyEntry entry;
    std::string problem = parseLine(line, entry);
    if (problem.empty()) {
      // One key, two names: which identity would a request get?
      auto [it, inserted] = line_of_hash.emplace(entry.sha256, line_number);
      if (!inserted) problem = "same key as line " + std::to_string(it->second);
    }
    if (!problem.empty()) {
      file.problems.emplace_back(line_number, std::move(problem));
      continue;
    }
    file.entries.push_back(std::move(entry));
  }
  return file;
}

}  // namespace gw::api_key
