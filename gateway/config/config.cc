#include "gateway/config/config.h"

#include <arpa/inet.h>

#include <cstring>
#include <limits>
#include <string_view>

namespace gw {
namespace {

// Splits "123unit" into a number and a unit; false on no digits or overflow.
bool splitNumber(std::string_view text, uint64_t& number, std::string_view& unit) {
  size_t i = 0;
  number = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    uint64_t d = static_cast<uint64_t>(text[i] - '0');
    if (number > (std::numeric_limits<uint64_t>::max() - d) / 10) return false;
    number = number * 10 + d;
    ++i;
  }
  unit = text.substr(i);
  return i > 0;
}

bool multiply(uint64_t a, uint64_t b, uint64_t& out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
  out = a * b;
  return true;
}

}  // namespace

std::optional<Millis> parseDuration(const std::string& text) {
  struct Unit {
    std::string_view name;
    uint64_t millis;
  };
  static constexpr Unit kUnits[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
  uint64_t number = 0;
  std::string_view unit;
  if (!splitNumber(text, number, unit)) return std::nullopt;
  for (const Unit& u : kUnits) {
    if (unit != u.name) continue;
    uint64_t ms = 0;
    // Millis' rep is signed 64-bit: keep the result representable.
    if (!multiply(number, u.millis, ms) ||
        ms > static_cast<uint64_t>(std::numeric_limits<Millis::rep>::max())) {
      return std::nullopt;
    }
    return Millis(static_cast<Millis::rep>(ms));
  }
  return std::nullopt;  // no unit, or an unknown one: a bare number is ambiguous
}

std::optional<uint64_t> parseSize(const std::string& text) {
  struct Unit {
    std::string_view name;
    uint64_t bytes;
  };
  static constexpr Unit kUnits[] = {
      {"", 1},
      {"B", 1},
      {"KiB", 1ULL << 10},
      {"MiB", 1ULL << 20},
      {"GiB", 1ULL << 30},
      {"TiB", 1ULL << 40},
      {"KB", 1000ULL},
      {"MB", 1000ULL * 1000},
      {"GB", 1000ULL * 1000 * 1000},
      {"TB", 1000ULL * 1000 * 1000 * 1000},
  };
  uint64_t number = 0;
  std::string_view unit;
  if (!splitNumber(text, number, unit)) return std::nullopt;
  for (const Unit& u : kUnits) {
    uint64_t bytes = 0;
    if (unit == u.name)
      return multiply(number, u.bytes, bytes) ? std::optional(bytes) : std::nullopt;
  }
  return std::nullopt;
}

std::optional<Cidr> parseCidr(const std::string& text) {
  Cidr cidr;
  cidr.text = text;
  std::string address = text;
  int max_prefix = 128;
  int prefix = -1;
  size_t slash = text.find('/');
  if (slash != std::string::npos) {
    address = text.substr(0, slash);
    std::string_view digits = std::string_view(text).substr(slash + 1);
    if (digits.empty() || digits.size() > 3) return std::nullopt;
    prefix = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') return std::nullopt;
      prefix = prefix * 10 + (c - '0');
    }
  }
  in_addr v4{};
  in6_addr v6{};
  if (inet_pton(AF_INET, address.c_str(), &v4) == 1) {
    std::memcpy(cidr.address, kIpv4MappedPrefix, 12);
    std::memcpy(cidr.address + 12, &v4, 4);
    max_prefix = 32;
  } else if (inet_pton(AF_INET6, address.c_str(), &v6) == 1) {
    std::memcpy(cidr.address, &v6, 16);
  } else {
    return std::nullopt;
  }
  if (prefix < 0) prefix = max_prefix;
  if (prefix > max_prefix) return std::nullopt;
  cidr.prefix_length = prefix + (128 - max_prefix);
  // Host bits are accepted ("10.1.2.3/8" as some tools write it) but cleared, so
  // contains() can compare whole bytes.
  for (int bit = cidr.prefix_length; bit < 128; ++bit) {
    cidr.address[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
  }
  return cidr;
}

void toIp16(const sockaddr* sa, uint8_t (&out)[16]) {
  std::memset(out, 0, sizeof(out));
  if (sa->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    std::memcpy(out, kIpv4MappedPrefix, 12);
    std::memcpy(out + 12, &in->sin_addr, 4);
  } else if (sa->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    std::memcpy(out, &in6->sin6_addr, 16);
  }
}

size_t formatIp16(const uint8_t (&ip16)[16], char (&out)[kIpTextMax]) {
  if (std::memcmp(ip16, kIpv4MappedPrefix, sizeof kIpv4MappedPrefix) != 0) {
    // Formatted per request (a connection keeps only the 16 bytes): IPv6 is rare enough
    // for libc's formatter, IPv4 below is the common case.
    return inet_ntop(AF_INET6, ip16, out, kIpTextMax) ? std::strlen(out) : 0;
  }
  char* p = out;
  for (int i = 12; i < 16; ++i) {
    unsigned v = ip16[i];
    if (v >= 100) *p++ = char('0' + v / 100);
    if (v >= 10) *p++ = char('0' + v / 10 % 10);
    *p++ = char('0' + v % 10);
    if (i < 15) *p++ = '.';
  }
  return size_t(p - out);
}

bool Cidr::contains(const uint8_t (&ip16)[16]) const {
  int whole_bytes = prefix_length / 8;
  if (std::memcmp(address, ip16, static_cast<size_t>(whole_bytes)) != 0) return false;
  int rest = prefix_length % 8;
  if (rest == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xff00u >> rest);
  return (ip16[whole_bytes] & mask) == address[whole_bytes];
}

const UpstreamConfig* Config::findUpstream(const std::string& name) const {
  for (const auto& upstream : upstreams) {
    if (upstream.name == name) return &upstream;
  }
  return nullptr;
}

}  // namespace gw
